//! 1 MB of English text (llama.cpp's markdown docs, repeated; same bytes as
//! tools/tokenizer_english_1mb.py): the ids must equal llama.cpp's (digest in
//! tests/fixtures/tokenizer/english-1mb.digest), and encoding must be fast. The timing test
//! is ignored by default (it needs a release build and a quiet machine):
//! `cargo test --release --test tokenizer_perf -- --ignored --nocapture`
//! Missing llama.cpp files skip, or fail with `MEKI_REQUIRE_REFERENCE=1`.

use std::path::PathBuf;
use std::time::Instant;

use meki::gguf::GgufFile;
use meki::tokenizer::Tokenizer;

fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
        })
}

/// About 1 MB of English prose and code from llama.cpp's docs.
fn english_megabyte(root: &std::path::Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    let mut text = String::new();
    while text.len() < 1 << 20 {
        for f in &files {
            text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
    }
    let mut end = 1 << 20;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn present(root: &std::path::Path) -> bool {
    if root.join("docs").is_dir() && root.join("models/ggml-vocab-qwen2.gguf").exists() {
        return true;
    }
    let required = std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "MEKI_REQUIRE_REFERENCE=1 but {} lacks docs/ or models/",
        root.display()
    );
    eprintln!("skipping: llama.cpp tree not found at {}", root.display());
    false
}

#[test]
fn one_megabyte_matches_llama_cpp() {
    let root = llama_cpp_dir();
    if !present(&root) {
        return;
    }
    let text = english_megabyte(&root);
    let digests = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tokenizer/english-1mb.digest"),
    )
    .expect("digest fixture");
    for line in digests.lines() {
        // "<vocab> digest <count> <fnv64>"
        let f: Vec<&str> = line.split(' ').collect();
        let gguf =
            GgufFile::open(root.join(format!("models/ggml-vocab-{}.gguf", f[0]))).expect("vocab");
        let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
        let ids = tok.encode(&text, true, true);
        let mut h: u64 = 1469598103934665603;
        for id in &ids {
            for b in id.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
            }
        }
        assert_eq!(
            ids.len(),
            f[2].parse::<usize>().unwrap(),
            "{}: token count",
            f[0]
        );
        assert_eq!(h, f[3].parse::<u64>().unwrap(), "{}: ids digest", f[0]);
    }
}

#[test]
#[ignore]
fn encode_one_megabyte() {
    let root = llama_cpp_dir();
    if !present(&root) {
        return;
    }
    let text = english_megabyte(&root);
    for name in ["qwen2", "llama-bpe", "gpt-2", "llama-spm"] {
        let t0 = Instant::now();
        let gguf =
            GgufFile::open(root.join(format!("models/ggml-vocab-{name}.gguf"))).expect("vocab");
        let t1 = Instant::now();
        let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
        let t2 = Instant::now();
        let ids = tok.encode(&text, false, false);
        let t3 = Instant::now();
        let back = tok.decode(&ids);
        let t4 = Instant::now();
        eprintln!(
            "{name:>10}: gguf open {:6.1} ms, build {:6.1} ms, encode {} bytes -> {} tokens in {:6.1} ms ({:.1} MB/s), decode {:5.1} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            text.len(),
            ids.len(),
            (t3 - t2).as_secs_f64() * 1e3,
            text.len() as f64 / (t3 - t2).as_secs_f64() / 1e6,
            (t4 - t3).as_secs_f64() * 1e3,
        );
        assert!(!back.is_empty());
        assert!(
            (t3 - t2).as_secs_f64() < 1.0,
            "{name}: encoding 1 MB took {:?}",
            t3 - t2
        );
    }
}
