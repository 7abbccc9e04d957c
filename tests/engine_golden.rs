//! meki-run against llama.cpp on the same random-weight models.
//!
//! `tools/engine_golden.py` made each model (seeded random F32/F16 weights,
//! quantized by meki-convert, which is byte-identical to llama-quantize), ran
//! llama-perplexity and llama-completion (--temp 0) on it, and committed the
//! answers with the model's sha256 in `tests/fixtures/engine/golden.json`.
//! This test rebuilds the same files, checks the hashes (so a difference is
//! never blamed on the engine when the model changed), and compares:
//! - perplexity within 0.1% (F32/F16) or 0.5% (quantized);
//! - greedy generation byte for byte (F32/F16 models), with an f32 KV cache
//!   and with the default f16 cache.

use meki::model::forward::Logits;
use meki::model::{KvType, Model, Session};
use meki::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_reference() -> bool {
    std::env::var("MEKI_REQUIRE_REFERENCE")
        .map(|v| v == "1")
        .unwrap_or(false)
}

fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp"))
}

/// Python with gguf-py, needed to rebuild the random models.
fn have_python_gguf() -> bool {
    Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read model");
    let mut h = Sha256::new();
    h.update(&bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Rebuild one golden model exactly as tools/engine_golden.py does.
fn build_model(name: &str, entry: &serde_json::Value, work: &Path) -> PathBuf {
    let base = entry["base"].as_str().unwrap();
    let src_type = entry["source_type"].as_str().unwrap();
    let src = work.join(format!("{base}-{src_type}.gguf"));
    if !src.exists() {
        let flags: Vec<&str> = entry["make_flags"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        let status = Command::new("python3")
            .arg(root().join("tools/make_random_model.py"))
            .arg(&src)
            .args(&flags)
            .args(["--type", src_type])
            .env("MEKI_LLAMA_CPP", llama_cpp_dir())
            .status()
            .expect("run make_random_model.py");
        assert!(status.success(), "{name}: make_random_model.py failed");
    }
    let Some(quant) = entry["quantize"].as_str() else {
        return src;
    };
    let out = work.join(format!("{base}-{quant}.gguf"));
    if !out.exists() {
        meki::quant::quantize_file(&meki::quant::QuantizeOptions {
            table_type: None,
            meki_proj_type: None,
            input: src.clone(),
            output: out.clone(),
            target: quant.to_string(),
            pure: false,
            threads: 0,
        })
        .unwrap_or_else(|e| panic!("{name}: quantize: {e}"));
    }
    out
}

fn greedy_bytes(model: &Model, tok: &Tokenizer, prompt: &str, n: usize, kv: KvType) -> Vec<u8> {
    let ids = tok.encode(prompt, true, true);
    let mut s = Session::new(model, 256, kv);
    let mut logits = s.forward(&ids, Logits::Last).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let next = meki::sampler::argmax(&logits);
        out.extend_from_slice(tok.token_to_piece_with(next, false));
        if i + 1 < n {
            logits = s.forward(&[next], Logits::Last).unwrap();
        }
    }
    out
}

#[test]
fn engine_matches_llama_cpp() {
    let golden_path = root().join("tests/fixtures/engine/golden.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).expect("golden.json"))
            .expect("json");
    if !have_python_gguf() || !llama_cpp_dir().join("models").exists() {
        assert!(
            !require_reference(),
            "python3 with gguf+numpy and the llama.cpp source are required"
        );
        eprintln!("skipping: python3 gguf / llama.cpp source not available");
        return;
    }
    let work = root().join("target/golden");
    std::fs::create_dir_all(&work).unwrap();
    let text = std::fs::read_to_string(root().join(golden["text"].as_str().unwrap())).unwrap();
    let prompt = golden["prompt"].as_str().unwrap();
    let n_predict = golden["n_predict"].as_u64().unwrap() as usize;
    let ppl_ctx = golden["ppl_ctx"].as_u64().unwrap() as usize;
    let mut failures = Vec::new();
    // MEKI_GOLDEN_ONLY=name,name limits the run (the aarch64 run under qemu uses one model).
    let only: Option<Vec<String>> = std::env::var("MEKI_GOLDEN_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    for (name, entry) in golden["models"].as_object().unwrap() {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let path = build_model(name, entry, &work);
        let sha = sha256_file(&path);
        assert_eq!(
            sha,
            entry["sha256"].as_str().unwrap(),
            "{name}: rebuilt model differs from the golden one"
        );
        let model = Model::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(&model.file).unwrap();
        let quantized = entry["quantize"].is_string();

        let r = meki::run::perplexity(
            &model,
            &tok,
            &text,
            ppl_ctx,
            ppl_ctx,
            KvType::F16,
            &mut |_, _, _| {},
        )
        .unwrap();
        let want = entry["ppl"].as_f64().unwrap();
        let rel = (r.ppl - want).abs() / want;
        let tol = if quantized { 5e-3 } else { 1e-3 };
        eprintln!(
            "{name}: PPL meki {:.4} llama.cpp {want:.4} rel {rel:.2e}",
            r.ppl
        );
        if rel > tol {
            failures.push(format!(
                "{name}: PPL {} vs llama.cpp {want} (rel {rel:.2e} > {tol})",
                r.ppl
            ));
        }
        if quantized {
            continue;
        }
        for (kv, key) in [
            (KvType::F32, "completion_f32_kv_hex"),
            (KvType::F16, "completion_f16_kv_hex"),
        ] {
            let want = unhex(entry[key].as_str().unwrap());
            let got = greedy_bytes(&model, &tok, prompt, n_predict, kv);
            if got != want {
                failures.push(format!(
                    "{name} ({kv:?} cache): greedy output differs\n  meki:      {:?}\n  llama.cpp: {:?}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
