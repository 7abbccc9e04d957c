//! `meki-convert inspect`.
use std::path::Path;

pub fn run(file: &Path) -> Result<(), String> {
    Err(format!("inspect {}: not implemented yet", file.display()))
}
