//! `meki-run`: CPU inference front end (logic lives in the library).
fn main() {
    eprintln!("meki-run: no subcommands yet");
    std::process::exit(2);
}
