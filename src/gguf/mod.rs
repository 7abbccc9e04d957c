//! The GGUF container (under construction).

pub mod inspect;
