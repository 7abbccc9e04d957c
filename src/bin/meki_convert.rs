//! `meki-convert`: GGUF conversion front end (logic lives in the library).
fn main() {
    eprintln!("meki-convert: no subcommands yet");
    std::process::exit(2);
}
