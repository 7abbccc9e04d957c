//! Fuzz target `tokenizer`: see [`meki_fuzz::tokenizer`] for what one input is.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meki_fuzz::tokenizer(data));
