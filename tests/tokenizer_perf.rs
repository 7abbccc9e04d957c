//! Encoding speed on 1 MB of English text (llama.cpp's markdown docs, repeated).
//! Ignored by default (timing needs a release build and a quiet machine):
//! `cargo test --release --test tokenizer_perf -- --ignored --nocapture`

use std::path::PathBuf;
use std::time::Instant;

use meki::gguf::GgufFile;
use meki::tokenizer::Tokenizer;

fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
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

#[test]
#[ignore]
fn encode_one_megabyte() {
    let root = llama_cpp_dir();
    let text = english_megabyte(&root);
    for name in ["qwen2", "llama-bpe", "gpt-2", "llama-spm"] {
        let t0 = Instant::now();
        let gguf = GgufFile::open(root.join(format!("models/ggml-vocab-{name}.gguf"))).expect("vocab");
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
        assert!((t3 - t2).as_secs_f64() < 1.0, "{name}: encoding 1 MB took {:?}", t3 - t2);
    }
}
