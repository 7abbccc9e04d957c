//! Fuzzing entry points of meki's parsers, one function per cargo-fuzz target.
//!
//! Each takes arbitrary bytes and must return without panicking, aborting or
//! allocating more than the input justifies; errors are the expected outcome.
//! The same functions replay the committed corpora on stable Rust in
//! `tests/fuzz_replay.rs` (which includes this file by path), so CI runs every
//! corpus file on every run without a fuzzing engine.

use meki::chat::{ChatTemplate, Message};
use meki::convert::checkpoint::{Checkpoint, Part};
use meki::convert::{pickle, safetensors, torch};
use meki::gguf::{inspect, GgufFile, GgufHeader};
use meki::tokenizer::{StreamDecoder, Tokenizer};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Layers whose parts are loaded per checkpoint input (a hostile config may
/// claim millions; the parser must not be driven by that count here).
const MAX_LAYERS_LOADED: usize = 2;
/// Tensors read per torch input.
const MAX_TENSORS_READ: usize = 64;

/// The repository root: the directory holding `tests/fixtures`, found from
/// the including crate's manifest directory (the root crate or `fuzz/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("tests/fixtures").is_dir())
        .unwrap_or(manifest)
        .to_path_buf()
}

/// llama.cpp's source tree (vocab GGUFs under `models/`): `MEKI_LLAMA_CPP`,
/// else the default local checkout.
pub fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp"))
}

/// The llama.cpp vocabularies the tokenizer target draws from (one per
/// tokenizer family meki implements: SPM, and BPE with several pre-tokenizers).
pub const LLAMA_CPP_VOCABS: [&str; 7] = [
    "llama-spm",
    "llama-bpe",
    "gpt-2",
    "qwen2",
    "phi-3",
    "mpt",
    "starcoder",
];

/// A small byte-level BPE tokenizer built from the MeKi fixture's
/// `tokenizer.json` (always available, no reference needed).
pub fn fixture_tokenizer() -> Tokenizer {
    let dir = repo_root().join("tests/fixtures/meki/tokenizer");
    let meta = meki::convert::tokenizer::read_tokenizer(&dir, None)
        .unwrap_or_else(|e| panic!("fixture tokenizer {}: {e}", dir.display()));
    let mut md = meki::gguf::Metadata::new();
    for (k, v) in meta.kv {
        md.set(k, v);
    }
    Tokenizer::from_metadata(&md).expect("fixture tokenizer metadata")
}

/// The tokenizers of the tokenizer target: the fixture one, then every
/// llama.cpp vocab found (missing ones are left out; the replay test
/// decides whether that is an error).
pub fn tokenizers() -> &'static [Tokenizer] {
    static TOKS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKS.get_or_init(|| {
        let mut v = vec![fixture_tokenizer()];
        let models = llama_cpp_dir().join("models");
        for name in LLAMA_CPP_VOCABS {
            let path = models.join(format!("ggml-vocab-{name}.gguf"));
            if let Ok(f) = GgufFile::open(&path) {
                v.push(Tokenizer::from_gguf(&f).expect("llama.cpp vocab loads"));
            }
        }
        v
    })
}

/// A per-process scratch directory for targets whose parsers read files.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("meki-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}

/// GGUF reader: header, metadata, tensor table, data ranges; then what meki
/// builds from metadata alone (tokenizer, `inspect` rendering of values).
pub fn gguf(data: &[u8]) {
    let Ok(h) = GgufHeader::parse(data) else {
        return;
    };
    for t in &h.tensors {
        let r = h.tensor_range(t).expect("validated range");
        assert!(r.end <= data.len(), "tensor {:?} past the end", t.name);
        let _ = t.n_elements();
    }
    for (_, v) in h.metadata.iter() {
        let _ = inspect::format_value(v);
    }
    if let Ok(tok) = Tokenizer::from_metadata(&h.metadata) {
        let ids = tok.encode("Hello world, <s> 123 ünï 日本", true, true);
        let _ = tok.detokenize(&ids, false, true);
    }
}

/// A checkpoint directory: `config.json` and `model.safetensors`. Input: u16
/// LE length N, N bytes of config.json, the rest is the safetensors file.
pub fn checkpoint(data: &[u8]) {
    let _ = safetensors::parse_header(data);
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (config, st) = data[2..].split_at(n);
    let dir = scratch().join("hf");
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("config.json"), config).expect("scratch write");
    std::fs::write(dir.join("model.safetensors"), st).expect("scratch write");
    load_checkpoint(&dir);
}

/// Opens a checkpoint and loads every part of its first layers.
fn load_checkpoint(path: &Path) {
    let Ok(ck) = Checkpoint::open(path, None) else {
        return;
    };
    let mut parts = vec![Part::Embd, Part::OutNorm, Part::Output];
    for l in 0..ck.hp.n_layer.min(MAX_LAYERS_LOADED) {
        parts.extend(Part::of_layer(l));
    }
    for p in parts {
        if ck.has(p).unwrap_or(false) {
            let _ = ck.load(p);
            let _ = ck.load_rows(p, Some(1));
            let _ = ck.rows(p, 0, 1);
            if matches!(p, Part::MekiAlpha(_) | Part::MekiBeta(_)) {
                let _ = ck.scalar(p);
            }
        }
    }
}

/// Megatron torch checkpoints: a zip archive (`PK...`) is written to a file
/// and opened as `model_optim_rng.pt` (zip index, pickle, storages); any
/// other input runs straight through the pickle machine.
pub fn torch(data: &[u8]) {
    if !data.starts_with(b"PK") {
        let _ = pickle::load(data);
        return;
    }
    let path = scratch().join("model_optim_rng.pt");
    std::fs::write(&path, data).expect("scratch write");
    if let Ok(t) = torch::TorchCheckpoint::open(&path) {
        let names: Vec<String> = t
            .tensors
            .iter()
            .take(MAX_TENSORS_READ)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            if let Ok(Some(raw)) = t.get(&n) {
                let (rows, _) = raw.rows_cols();
                let _ = raw.rows_f32(0, rows.min(2));
            }
        }
        for k in ["num_layers", "hidden_size", "norm_epsilon", "swiglu"] {
            let _ = (t.arg_int(k), t.arg_float(k), t.arg_bool(k));
        }
    }
    load_checkpoint(&path);
}

/// Tokenizer: byte 0 picks the vocabulary and the flags, the rest is text
/// (invalid UTF-8 replaced); encode, then decode three ways.
pub fn tokenizer(data: &[u8]) {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let toks = tokenizers();
    let tok = &toks[(sel as usize >> 4) % toks.len()];
    let text = String::from_utf8_lossy(text);
    let ids = tok.encode(&text, sel & 1 != 0, sel & 2 != 0);
    let n_vocab = tok.n_vocab();
    assert!(
        ids.iter().all(|&i| (i as usize) < n_vocab),
        "token id out of the vocabulary"
    );
    let _ = tok.detokenize(&ids, sel & 4 != 0, sel & 8 != 0);
    let _ = tok.decode(&ids);
    let mut dec = StreamDecoder::new();
    for &id in &ids {
        let _ = dec.push(tok, id);
    }
    let _ = dec.finish();
}

/// The tokenizer chat templates are built with (BOS/EOS text).
pub fn chat_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(fixture_tokenizer)
}

/// Chat template: the input is the template source (invalid UTF-8
/// replaced), rendered over a short conversation.
pub fn chat_template(data: &[u8]) {
    let tok = chat_tokenizer();
    let src = String::from_utf8_lossy(data);
    let Ok(t) = ChatTemplate::new(&src, tok) else {
        return;
    };
    let msg = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
    };
    let _ = t.render(&[
        msg("system", "You are terse."),
        msg("user", "Hi {{ there }} <|im_end|>"),
        msg("assistant", "Hello."),
        msg("user", "Bye"),
    ]);
}
