//! Fuzz target `checkpoint`: see [`meki_fuzz::checkpoint`] for what one input is.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meki_fuzz::checkpoint(data));
