//! Unit tests on small hand-made vocabularies (the llama.cpp vocabularies are exercised in
//! tests/tokenizer_vocab.rs).

use super::*;

fn bpe_metadata(pre: &str) -> Metadata {
    let mut md = Metadata::new();
    md.push(K_MODEL, "gpt2").unwrap();
    md.push(K_PRE, pre).unwrap();
    // byte-encoded: "Ġ" is the space byte
    let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", "Ġ", "Ġab", "<|end|>", "<x>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    md.push(K_TOKENS, tokens).unwrap();
    md.push(K_TYPES, vec![1i32, 1, 1, 1, 1, 1, 1, 3, 4])
        .unwrap();
    let merges: Vec<String> = ["a b", "ab c", "Ġ ab"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    md.push(K_MERGES, merges).unwrap();
    md
}

#[test]
fn unknown_pre_tokenizer_is_an_error() {
    let err = Tokenizer::from_metadata(&bpe_metadata("not-a-pre-tokenizer")).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnsupportedPreTokenizer(ref n) if n == "not-a-pre-tokenizer")
    );
    assert!(err.to_string().contains("not-a-pre-tokenizer"));
}

#[test]
fn unknown_model_and_missing_keys_are_errors() {
    let mut md = bpe_metadata("gpt-2");
    md.set(K_MODEL, "t5");
    assert!(matches!(
        Tokenizer::from_metadata(&md),
        Err(TokenizerError::UnsupportedModel(_))
    ));
    let mut md = bpe_metadata("gpt-2");
    md.remove(K_MERGES);
    let e = Tokenizer::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains(K_MERGES), "{e}");
    let mut md = bpe_metadata("gpt-2");
    md.set(K_TYPES, vec![1i32, 1]);
    let e = Tokenizer::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains(K_TYPES), "{e}");
    let mut md = bpe_metadata("gpt-2");
    md.remove(K_PRE);
    assert!(matches!(
        Tokenizer::from_metadata(&md),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
}

#[test]
fn small_bpe_merges_by_rank_and_falls_back_to_bytes() {
    let tok = Tokenizer::from_metadata(&bpe_metadata("gpt-2")).unwrap();
    assert_eq!(tok.encode("abc", false, false), [4]);
    assert_eq!(tok.encode("ab ab", false, false), [3, 6]);
    // "d" has no token: dropped like llama.cpp's byte fallback without a byte token
    assert_eq!(tok.encode("ad", false, false), [0]);
    // control text only becomes a token with parse_special; user-defined always
    assert_eq!(tok.encode("a<|end|>", false, true), [0, 7]);
    assert_ne!(tok.encode("a<|end|>", false, false), [0, 7]);
    assert_eq!(tok.encode("<x>b", false, false), [8, 1]);
    assert!(tok.is_eog(7));
    assert_eq!(tok.decode(&[3, 6]), "ab ab");
    assert_eq!(tok.token_to_piece(5), b" ");
    assert_eq!(tok.token_to_piece_with(7, false), b"");
    assert_eq!(tok.token_to_piece_with(7, true), b"<|end|>");
}

#[test]
fn clean_spaces_matches_llama_cpp_rules() {
    let clean = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    };
    assert_eq!(clean("Hello , world !"), "Hello, world!");
    assert_eq!(clean("a ' b"), "a'b");
    assert_eq!(
        clean("it 's we 're you 'll I 'd"),
        "it's we're you 'll I 'd"
    );
    assert_eq!(clean(""), "");
    assert_eq!(clean(" ,"), ",");
}
