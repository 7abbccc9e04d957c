//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`)
//! through the same entry points as the cargo-fuzz targets, on stable Rust
//! and without a fuzzing engine, so CI re-checks all of them on every run.
//! Findings are committed to the corpora as `crash-*` / `timeout-*` files.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod entries;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Replays `fuzz/corpus/<target>`; returns the number of inputs run.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let t0 = Instant::now();
        // A panic names the file through the test's output.
        eprintln!("{target}: {}", f.display());
        run(&data);
        // libFuzzer's hang threshold was 10 s; replay is far more lenient
        // only because CI machines are shared.
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{}: took {:?}",
            f.display(),
            t0.elapsed()
        );
    }
    files.len()
}

#[test]
fn replay_gguf() {
    println!("{} inputs", replay("gguf", entries::gguf));
}

#[test]
fn replay_checkpoint() {
    println!("{} inputs", replay("checkpoint", entries::checkpoint));
}

#[test]
fn replay_torch() {
    println!("{} inputs", replay("torch", entries::torch));
}

#[test]
fn replay_tokenizer() {
    let n = entries::tokenizers().len();
    let want = 1 + entries::LLAMA_CPP_VOCABS.len();
    if n < want {
        let msg = format!(
            "llama.cpp vocabs missing under {} ({} of {} tokenizers): corpus inputs fall on other vocabs",
            entries::llama_cpp_dir().display(),
            n,
            want
        );
        if std::env::var("MEKI_REQUIRE_REFERENCE").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("warning: {msg}");
    }
    println!("{} inputs", replay("tokenizer", entries::tokenizer));
}

#[test]
fn replay_chat_template() {
    println!("{} inputs", replay("chat_template", entries::chat_template));
}
