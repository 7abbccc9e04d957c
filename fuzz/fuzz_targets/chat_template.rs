//! Fuzz target `chat_template`: see [`meki_fuzz::chat_template`] for what one input is.
#![no_main]

libfuzzer_sys::fuzz_target!(
    // The tokenizer loads once, before fuzzing.
    init: {
        meki_fuzz::chat_tokenizer();
    },
    |data: &[u8]| meki_fuzz::chat_template(data)
);
