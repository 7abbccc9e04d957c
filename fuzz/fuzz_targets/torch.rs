//! Fuzz target `torch`: see [`meki_fuzz::torch`] for what one input is.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meki_fuzz::torch(data));
