//! `meki-bench`: kernel and end-to-end benchmarks (logic lives in the library).
fn main() {
    eprintln!("meki-bench: no subcommands yet");
    std::process::exit(2);
}
