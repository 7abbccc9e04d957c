//! Fuzz target `gguf`: see [`meki_fuzz::gguf`] for what one input is.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meki_fuzz::gguf(data));
