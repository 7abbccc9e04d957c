//! Tokenizer outputs compared with llama.cpp's on tests/fixtures/tokenizer/prompts.txt:
//! encode with every (add_special, parse_special) combination, detokenize both ways, the
//! piece of every token (digest) and of a sample (explicitly), special ids and the
//! end-of-generation set. Goldens come from llama.cpp's public API via
//! tools/tokenizer_golden.sh; the vocab GGUFs from llama.cpp's source tree
//! (`$MEKI_LLAMA_CPP`). Missing vocab files skip, or fail with `MEKI_REQUIRE_REFERENCE=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meki::gguf::GgufFile;
use meki::tokenizer::{StreamDecoder, Tokenizer};

fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
        })
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn load(name: &str) -> Option<Tokenizer> {
    let path = llama_cpp_dir().join(format!("models/ggml-vocab-{name}.gguf"));
    if !path.exists() {
        let required = std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "MEKI_REQUIRE_REFERENCE=1 but {} is missing",
            path.display()
        );
        eprintln!(
            "skipping: {} not found (set MEKI_LLAMA_CPP or run tools/llamacpp.sh fetch)",
            path.display()
        );
        return None;
    }
    let gguf = GgufFile::open(&path).expect("open vocab gguf");
    Some(Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn prompts() -> Vec<String> {
    let raw = std::fs::read_to_string(fixtures().join("prompts.txt")).expect("prompts.txt");
    raw.split("\n__ggml_vocab_test__\n")
        .map(str::to_string)
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn ids(fields: &[&str]) -> Vec<u32> {
    fields.iter().map(|t| t.parse().expect("id")).collect()
}

/// FNV-1a over (u32 little-endian length, bytes) of every piece, as the golden tool computes.
fn pieces_digest(tok: &Tokenizer, special: bool) -> u64 {
    let mut h: u64 = 1469598103934665603;
    let mut eat = |b: u8| h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
    for id in 0..tok.n_vocab() as u32 {
        let p = tok.token_to_piece_with(id, special);
        for b in (p.len() as u32).to_le_bytes() {
            eat(b);
        }
        for &b in p {
            eat(b);
        }
    }
    h
}

fn opt_id(s: &str) -> Option<u32> {
    let v: i64 = s.parse().expect("id");
    u32::try_from(v).ok()
}

fn check(name: &str) {
    let Some(tok) = load(name) else { return };
    let golden =
        std::fs::read_to_string(fixtures().join(format!("{name}.golden"))).expect("golden file");
    let texts = prompts();
    let mut failures = Vec::new();
    let mut per_text: BTreeMap<usize, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for line in golden.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "meta" => {
                assert_eq!(
                    tok.n_vocab(),
                    f[1].parse::<usize>().unwrap(),
                    "{name}: n_vocab"
                );
                assert_eq!(tok.bos(), opt_id(f[2]), "{name}: bos");
                assert_eq!(tok.eos(), opt_id(f[3]), "{name}: eos");
                assert_eq!(tok.special_ids().eot, opt_id(f[4]), "{name}: eot");
                assert_eq!(tok.add_bos(), f[5] == "1", "{name}: add_bos");
                assert_eq!(tok.add_eos(), f[6] == "1", "{name}: add_eos");
            }
            "eog" => {
                let want: BTreeSet<u32> = ids(&f[1..]).into_iter().collect();
                let got: BTreeSet<u32> = tok.eog_ids().collect();
                assert_eq!(got, want, "{name}: end-of-generation tokens");
                for id in want {
                    assert!(tok.is_eog(id));
                }
            }
            "pieces" => {
                let special = f[1] == "1";
                let want: u64 = f[2].parse().unwrap();
                assert_eq!(
                    pieces_digest(&tok, special),
                    want,
                    "{name}: pieces digest (special={special})"
                );
            }
            "piece" => {
                let id: u32 = f[1].parse().unwrap();
                assert_eq!(
                    tok.token_to_piece_with(id, true),
                    &unhex(f[2])[..],
                    "{name}: piece {id}"
                );
                assert_eq!(
                    tok.token_to_piece_with(id, false),
                    &unhex(f[3])[..],
                    "{name}: plain piece {id}"
                );
                assert_eq!(tok.token_to_piece(id), &unhex(f[2])[..]);
            }
            _ => {
                let i: usize = f[0].parse().expect("text index");
                per_text.entry(i).or_default().insert(
                    f[1].to_string(),
                    f[2..].iter().map(|s| s.to_string()).collect(),
                );
            }
        }
    }
    assert_eq!(
        per_text.len(),
        texts.len(),
        "{name}: golden and prompts.txt disagree"
    );
    for (i, rec) in &per_text {
        let text = &texts[*i];
        for (mode, add, parse) in [
            ("e00", false, false),
            ("e01", false, true),
            ("e10", true, false),
            ("e11", true, true),
        ] {
            let want: Vec<u32> = rec[mode].iter().map(|t| t.parse().unwrap()).collect();
            let got = tok.encode(text, add, parse);
            if got != want {
                failures.push(format!(
                    "text {i} {mode} {text:?}\n    want {want:?}\n    got  {got:?}"
                ));
            }
        }
        let e11: Vec<u32> = rec["e11"].iter().map(|t| t.parse().unwrap()).collect();
        let dec = unhex(&rec["dec"][0]);
        if tok.detokenize(&e11, false, true) != dec {
            failures.push(format!(
                "text {i} detokenize(special) {:?} != {:?}",
                String::from_utf8_lossy(&tok.detokenize(&e11, false, true)),
                String::from_utf8_lossy(&dec)
            ));
        }
        assert_eq!(tok.decode(&e11), String::from_utf8_lossy(&dec));
        let plain = unhex(&rec["plain"][0]);
        if tok.detokenize(&e11, true, false) != plain {
            failures.push(format!(
                "text {i} detokenize(plain) {:?} != {:?}",
                String::from_utf8_lossy(&tok.detokenize(&e11, true, false)),
                String::from_utf8_lossy(&plain)
            ));
        }
        // streaming the same ids yields the same text, never a broken sequence on the way
        let mut stream = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &e11 {
            let chunk = stream.push(&tok, id);
            assert!(
                !chunk.contains('\u{FFFD}'),
                "{name}: text {i}: stream emitted U+FFFD"
            );
            streamed.push_str(&chunk);
        }
        streamed.push_str(&stream.finish());
        let joined: Vec<u8> = e11
            .iter()
            .flat_map(|&id| tok.token_to_piece(id).to_vec())
            .collect();
        assert_eq!(
            streamed.as_bytes(),
            &joined[..],
            "{name}: text {i}: streamed text"
        );
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches with llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn llama_bpe_matches_llama_cpp() {
    check("llama-bpe");
}

#[test]
fn gpt2_matches_llama_cpp() {
    check("gpt-2");
}

#[test]
fn llama_spm_matches_llama_cpp() {
    check("llama-spm");
}

#[test]
fn golden_fixtures_are_present() {
    for name in [
        "qwen2",
        "llama-bpe",
        "gpt-2",
        "llama-spm",
        "qwen35",
        "mpt",
        "phi-3",
    ] {
        assert!(
            Path::new(&fixtures().join(format!("{name}.golden"))).exists(),
            "{name}.golden missing"
        );
    }
}

/// 300 seeded random texts (tools/tokenizer_random_prompts.py) and one long text: encode
/// with (add_special, parse_special) = (false, false) and (true, true).
fn check_random(name: &str) {
    check_encode_only(name, &fixtures().join("random.txt"), "random");
    // one long text (12 KB of English prose): cross-word effects, the per-call word cache
    let long =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/gpl3-excerpt.txt");
    check_encode_only(name, &long, "long");
}

fn check_encode_only(name: &str, texts_file: &Path, kind: &str) {
    let Some(tok) = load(name) else { return };
    let raw = std::fs::read_to_string(texts_file).expect("texts file");
    let texts: Vec<&str> = raw.split("\n__ggml_vocab_test__\n").collect();
    let golden = std::fs::read_to_string(fixtures().join(format!("{name}.{kind}.golden")))
        .expect("golden file");
    let mut failures = Vec::new();
    let mut n = 0;
    for line in golden.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let i: usize = f[0].parse().expect("text index");
        let (add, parse) = match f[1] {
            "e00" => (false, false),
            "e11" => (true, true),
            other => panic!("unexpected record {other}"),
        };
        let want = ids(&f[2..]);
        let got = tok.encode(texts[i], add, parse);
        n += 1;
        if got != want {
            failures.push(format!(
                "text {i} {} {:?}\n    want {want:?}\n    got  {got:?}",
                f[1], texts[i]
            ));
        }
    }
    assert_eq!(
        n,
        2 * texts.len(),
        "{name}: golden and {} disagree",
        texts_file.display()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {n} {kind} encodings differ from llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn qwen2_random_texts_match_llama_cpp() {
    check_random("qwen2");
}

#[test]
fn llama_bpe_random_texts_match_llama_cpp() {
    check_random("llama-bpe");
}

#[test]
fn gpt2_random_texts_match_llama_cpp() {
    check_random("gpt-2");
}

#[test]
fn llama_spm_random_texts_match_llama_cpp() {
    check_random("llama-spm");
}

#[test]
fn qwen35_matches_llama_cpp() {
    check("qwen35");
    check_random("qwen35");
}

#[test]
fn mpt_matches_llama_cpp() {
    check("mpt");
    check_random("mpt");
}

#[test]
fn phi3_matches_llama_cpp() {
    check("phi-3");
    check_random("phi-3");
}

#[test]
fn starcoder_family_matches_llama_cpp() {
    for name in ["starcoder", "refact", "command-r"] {
        check(name);
        check_random(name);
    }
}
