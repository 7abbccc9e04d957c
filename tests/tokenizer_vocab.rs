//! llama.cpp's tokenizer test vectors (`models/ggml-vocab-*.gguf` with `.inp`/`.out`):
//! every text must encode to exactly llama.cpp's ids. Like llama.cpp's
//! `tests/test-tokenizer-0.cpp`, texts are encoded with add_special = false and
//! parse_special = false.
//!
//! The vocab files come from the llama.cpp source tree: `$MEKI_LLAMA_CPP`, default
//! `target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp` (fetch with `tools/llamacpp.sh fetch`).
//! Missing files skip the test, or fail it when `MEKI_REQUIRE_REFERENCE=1`.

use std::path::PathBuf;

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

fn reference_required() -> bool {
    std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1")
}

/// `(text, expected ids)` pairs of one vocabulary.
type Vectors = Vec<(String, Vec<u32>)>;

/// The test vectors of a vocabulary, read as test-tokenizer-0.cpp reads them.
fn read_vectors(gguf: &std::path::Path) -> Vectors {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).expect("read .inp");
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                texts.push(rest[..i].to_string());
                rest = &rest[i + sep.len()..];
            }
            None => {
                texts.push(rest.to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{}: .inp and .out disagree on the number of tests",
        gguf.display()
    );
    texts.into_iter().zip(ids).collect()
}

/// Load a vocabulary, or `None` (test skipped) when the reference files are absent.
fn load(name: &str) -> Option<(Tokenizer, Vectors)> {
    let path = llama_cpp_dir().join(format!("models/ggml-vocab-{name}.gguf"));
    if !path.exists() {
        assert!(
            !reference_required(),
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
    let tok = Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some((tok, read_vectors(&path)))
}

fn check_encode(name: &str) -> Option<(Tokenizer, Vectors)> {
    let (tok, vectors) = load(name)?;
    assert!(
        vectors.len() > 20,
        "{name}: only {} test vectors",
        vectors.len()
    );
    let mut failures = Vec::new();
    for (text, want) in &vectors {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} texts differ from llama.cpp:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
    eprintln!(
        "{name}: {} texts encode exactly as llama.cpp",
        vectors.len()
    );
    Some((tok, vectors))
}

#[test]
fn qwen2_encodes_like_llama_cpp() {
    let Some((tok, vectors)) = check_encode("qwen2") else {
        return;
    };
    assert_eq!(tok.pre_name(), "qwen2");
    // byte-level BPE without space clean-up is lossless
    for (text, _) in &vectors {
        assert_eq!(&tok.decode(&tok.encode(text, false, false)), text);
    }
}

#[test]
fn llama_bpe_encodes_like_llama_cpp() {
    let Some((tok, _)) = check_encode("llama-bpe") else {
        return;
    };
    assert!(tok.add_bos(), "llama3 vocabularies add BOS");
    let bos = tok.bos().expect("bos");
    let ids = tok.encode("Hello", true, false);
    assert_eq!(ids.first(), Some(&bos));
}

#[test]
fn gpt2_encodes_like_llama_cpp() {
    check_encode("gpt-2");
}

#[test]
fn llama_spm_encodes_like_llama_cpp() {
    let Some((tok, vectors)) = check_encode("llama-spm") else {
        return;
    };
    // the space prefix added by encode is removed by decode; byte fallback is lossless
    for (text, _) in &vectors {
        assert_eq!(&tok.decode(&tok.encode(text, false, false)), text);
    }
    assert_eq!(tok.encode("Hello", true, false)[0], tok.bos().expect("bos"));
}

#[test]
fn qwen35_encodes_like_llama_cpp() {
    check_encode("qwen35");
}

#[test]
fn mpt_encodes_like_llama_cpp() {
    check_encode("mpt");
}

#[test]
fn phi3_encodes_like_llama_cpp() {
    check_encode("phi-3");
}

#[test]
fn starcoder_family_encodes_like_llama_cpp() {
    check_encode("starcoder");
    check_encode("refact");
    check_encode("command-r");
}
