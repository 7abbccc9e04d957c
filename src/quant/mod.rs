//! Tensor-level quantization: ggml block formats applied to whole GGUF tensors,
//! and llama.cpp's per-tensor type choice for the q4_k_m / q5_k_m mixes.

use std::path::PathBuf;

/// Options of `meki-convert quantize`.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Target type as the user spelled it (`q4_0`, `q4_k_m`, ...).
    pub target: String,
    /// One type for every 2-D tensor, no mix.
    pub pure: bool,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

/// Quantize a GGUF file (see `meki-convert quantize --help`).
pub fn quantize_file(opts: &QuantizeOptions) -> Result<(), String> {
    Err(format!(
        "quantize {}: not implemented yet",
        opts.input.display()
    ))
}
