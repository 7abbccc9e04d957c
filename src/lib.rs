//! meki: MeKi (memory-based expert knowledge injection) models on laptops and phones.
//!
//! Layers, bottom up:
//! - [`gguf`]: the GGUF v2/v3 container (mmap reader, streaming atomic writer);
//! - [`quant`]: tensor-level quantization over the ggml block formats of
//!   [`kernels::formats`], and llama.cpp's per-tensor type mixes;
//! - [`tokenizer`]: BPE and SentencePiece tokenizers built from GGUF metadata.

pub use meki_kernels as kernels;

pub mod bench;
pub mod chat;
pub mod convert;
pub mod gguf;
pub mod meki;
pub mod model;
pub mod quant;
pub mod run;
pub mod sampler;
pub mod tokenizer;

/// An on/off switch read from the environment variable `name`: on unless it
/// is set to `0` (the engine's A/B knobs: `MEKI_HUGEPAGES`, `MEKI_COPY_*`,
/// `MEKI_PREFAULT`, `MEKI_GEMM_PREFETCH`).
pub(crate) fn env_switch(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.trim() != "0")
}
