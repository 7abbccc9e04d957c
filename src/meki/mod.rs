//! MeKi in GGUF: the metadata keys and tensor names shared by the converter
//! (which writes them) and the engine (which reads them), and the backbone
//! identity that ties a sidecar file to its model.
//!
//! Layout (see the README's "GGUF layout of MeKi tensors"):
//! - `meki_table.weight`: the folded tables of all layers, token-major, ggml
//!   shape `[n_layer * d_mem, n_vocab]`: row `v` holds layer 0's `d_mem` values
//!   for token `v`, then layer 1's, ... so one token's rows are one contiguous
//!   read. Type f32, f16 or q8_0 (`d_mem` a multiple of 32 for q8_0).
//! - `blk.N.meki_gate.weight` `[d, d_mem]` (W_gate: `d -> d_mem`),
//!   `blk.N.meki_out.weight` `[d_mem, d]` (W_out: `d_mem -> d`),
//!   `blk.N.meki_post_norm.weight` `[d]` (F32).

pub mod identity;
pub mod memory;

pub use memory::{GateInput, MekiMemory};

/// Format version of the MeKi tensors and keys.
pub const VERSION: u32 = 1;

pub const KEY_VERSION: &str = "meki.version";
/// `demo` (HF-style demo code) or `megatron` (the official recipe).
pub const KEY_FORM: &str = "meki.form";
/// What the gate sees: `ffn_norm` (the pre-FFN normalized hidden state, demo
/// form) or `residual` (the un-normalized residual after attention, Megatron form).
pub const KEY_GATE_INPUT: &str = "meki.gate_input";
/// Table width `d_mem`.
pub const KEY_DIM: &str = "meki.dim";
pub const KEY_N_LAYER: &str = "meki.n_layer";
pub const KEY_N_VOCAB: &str = "meki.n_vocab";
/// `token_major` (the only layout written; see the module doc).
pub const KEY_TABLE_LAYOUT: &str = "meki.table_layout";
/// `both`, `static` or `dynamic`: which memories the checkpoint trained.
pub const KEY_VARIANT: &str = "meki.variant";
/// In a sidecar: [`identity::backbone_id`] of the model file it belongs to.
pub const KEY_BACKBONE_ID: &str = "meki.backbone_id";

pub const TENSOR_TABLE: &str = "meki_table.weight";

pub fn gate_name(layer: usize) -> String {
    format!("blk.{layer}.meki_gate.weight")
}

pub fn out_name(layer: usize) -> String {
    format!("blk.{layer}.meki_out.weight")
}

pub fn post_norm_name(layer: usize) -> String {
    format!("blk.{layer}.meki_post_norm.weight")
}

/// The sidecar path of a model file: `NAME.gguf` -> `NAME.meki.gguf`.
pub fn sidecar_path(model: &std::path::Path) -> std::path::PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}.meki.gguf"))
}
