//! Streaming detokenization with a real vocabulary: characters that byte-level BPE splits
//! across several tokens (emoji, rare CJK) must come out whole, never as U+FFFD halves.
//! Uses llama.cpp's qwen2 vocab (`$MEKI_LLAMA_CPP`); missing files skip, or fail with
//! `MEKI_REQUIRE_REFERENCE=1`.

use std::path::PathBuf;

use meki::gguf::GgufFile;
use meki::tokenizer::{StreamDecoder, Tokenizer};

fn qwen2() -> Option<Tokenizer> {
    let root = std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
        });
    let path = root.join("models/ggml-vocab-qwen2.gguf");
    if !path.exists() {
        let required = std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "MEKI_REQUIRE_REFERENCE=1 but {} is missing",
            path.display()
        );
        eprintln!("skipping: {} not found", path.display());
        return None;
    }
    Some(Tokenizer::from_gguf(&GgufFile::open(&path).expect("open")).expect("tokenizer"))
}

#[test]
fn emoji_split_across_tokens_is_emitted_whole() {
    let Some(tok) = qwen2() else { return };
    let text = "🦙 llama 😶‍🌫️ fog 𝔸 and 𠀀";
    let ids = tok.encode(text, false, false);
    // at least one character really is split over several tokens
    let split = ids
        .iter()
        .any(|&id| std::str::from_utf8(tok.token_to_piece(id)).is_err());
    assert!(
        split,
        "no token of {text:?} ends inside a character; the test would prove nothing"
    );

    let mut d = StreamDecoder::new();
    let mut out = String::new();
    let mut held_back = 0;
    for &id in &ids {
        let chunk = d.push(&tok, id);
        assert!(
            !chunk.contains('\u{FFFD}'),
            "broken sequence emitted after token {id}"
        );
        if !d.pending().is_empty() {
            held_back += 1;
        }
        out.push_str(&chunk);
    }
    assert!(
        held_back > 0,
        "the decoder never had to wait for a continuation"
    );
    assert!(d.pending().is_empty());
    assert_eq!(d.finish(), "");
    assert_eq!(out, text);
}

#[test]
fn stream_cut_mid_character_flushes_replacement() {
    let Some(tok) = qwen2() else { return };
    // a character the vocabulary has no single token for
    let ids = ["𠀀", "𝔸", "ꙮ", "🫠"]
        .iter()
        .map(|c| tok.encode(c, false, false))
        .find(|ids| ids.len() > 1)
        .expect("a character split over several tokens");
    let mut d = StreamDecoder::new();
    for &id in &ids[..ids.len() - 1] {
        assert_eq!(d.push(&tok, id), "");
    }
    assert_eq!(d.finish(), "\u{FFFD}");
}

#[test]
fn control_tokens_render_or_hide() {
    let Some(tok) = qwen2() else { return };
    let ids = tok.encode("<|im_start|>hi<|im_end|>", false, true);
    let mut shown = StreamDecoder::new();
    let mut hidden = StreamDecoder::without_special();
    let (mut a, mut b) = (String::new(), String::new());
    for &id in &ids {
        a.push_str(&shown.push(&tok, id));
        b.push_str(&hidden.push(&tok, id));
    }
    assert_eq!(a, "<|im_start|>hi<|im_end|>");
    assert_eq!(b, "hi");
    assert!(tok.is_eog(*ids.last().unwrap()));
}
