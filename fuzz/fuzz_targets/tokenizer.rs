//! Fuzz target `tokenizer`: see [`meki_fuzz::tokenizer`] for what one input is.
#![no_main]

libfuzzer_sys::fuzz_target!(
    // The vocabularies load once, before fuzzing (seconds: not a hang).
    init: {
        meki_fuzz::tokenizers();
    },
    |data: &[u8]| meki_fuzz::tokenizer(data)
);
