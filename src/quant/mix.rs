//! Which ggml type each tensor gets: llama.cpp's `llama_ftype` targets and the
//! per-tensor rules of `llama_tensor_get_type` (`src/llama-quant.cpp`).
//!
//! The rules followed, for the targets meki supports and no importance matrix:
//!
//! 1. A tensor is quantized only if it has at least 2 dimensions (trailing 1s
//!    not counted, as `ggml_n_dims`), its name ends in `weight`, and it is not
//!    a norm (`_norm.weight`), an MoE router (`ffn_gate_inp.weight`), a conv1d
//!    / RWKV / position / token-type / multimodal-patch tensor (llama.cpp's
//!    exclusion list). Every other tensor keeps its type and bytes.
//! 2. F32/F16/BF16 targets: every quantizable tensor gets that type; no mix.
//! 3. Quantized targets start from the target's base type, then unless `pure`:
//!    - `output.weight`, and `token_embd.weight` when there is no
//!      `output.weight` (tied embeddings): Q8_0 for falcon or when ne0 is not
//!      a multiple of the base type's block size, else Q6_K (unless the base
//!      type is Q8_0, which stays).
//!    - attention V (`attn_v.weight`, `attn_qkv.weight`, `attn_kv_b.weight`),
//!      counted `i` of `n` in llama.cpp's tensor order: Q4_K_M/Q5_K_M take Q6_K
//!      when `use_more_bits(i, n)`, i.e. `i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2`;
//!      Q4_K_S takes Q5_K for `i < 4`. With 8 experts: Q8_0.
//!    - `attn_k.weight` with 8 experts: Q8_0.
//!    - `ffn_down` of layer `i` of `n_layer` (`{arch}.block_count`; for MoE the
//!      layer is parsed from `blk.N.`): Q4_K_M takes Q6_K when
//!      `use_more_bits(i, n_layer)` (falcon: Q6_K for `i < n/16`, Q5_K when
//!      use_more_bits, else Q4_K); Q5_K_M takes Q6_K when use_more_bits;
//!      Q4_K_S takes Q5_K for `i < n/8` (not falcon).
//!    - `attn_output.weight` with 8 experts: Q5_K for Q4_K_S/Q4_K_M.
//! 4. Fallback (also with `pure`): when ne0 is not a multiple of the chosen
//!    type's block size, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; a 32-block
//!    type that still does not fit, or a fallback that does not fit, -> F16.
//!
//! Not followed: llama.cpp's 70B rule (attn_v Q3_K/Q4_K -> Q5_K when the model
//! type is 70B), the imatrix-only rules, and user overrides.
//!
//! llama.cpp counts attention-V tensors in its own order (layer number, then
//! name), which [`plan_types`] reproduces, so the result does not depend on
//! the tensor order of the input file.

use crate::kernels::formats::GgmlType;

/// llama.cpp's `enum llama_ftype` (the `general.file_type` value), the subset
/// meki can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum LlamaFtype {
    AllF32 = 0,
    MostlyF16 = 1,
    MostlyQ4_0 = 2,
    MostlyQ4_1 = 3,
    MostlyQ8_0 = 7,
    MostlyQ5_0 = 8,
    MostlyQ5_1 = 9,
    MostlyQ4KS = 14,
    MostlyQ4KM = 15,
    MostlyQ5KS = 16,
    MostlyQ5KM = 17,
    MostlyQ6K = 18,
    MostlyBF16 = 32,
}

impl LlamaFtype {
    /// Parses a target the way llama-quantize names them (case-insensitive):
    /// `f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_s q4_k_m q5_k_s q5_k_m q6_k`,
    /// and llama-quantize's aliases `q4_k` = `q4_k_m`, `q5_k` = `q5_k_m`.
    pub fn parse(s: &str) -> Option<LlamaFtype> {
        use LlamaFtype::*;
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => AllF32,
            "f16" => MostlyF16,
            "bf16" => MostlyBF16,
            "q8_0" => MostlyQ8_0,
            "q4_0" => MostlyQ4_0,
            "q4_1" => MostlyQ4_1,
            "q5_0" => MostlyQ5_0,
            "q5_1" => MostlyQ5_1,
            "q4_k" | "q4_k_m" => MostlyQ4KM,
            "q4_k_s" => MostlyQ4KS,
            "q5_k" | "q5_k_m" => MostlyQ5KM,
            "q5_k_s" => MostlyQ5KS,
            "q6_k" => MostlyQ6K,
            _ => return None,
        })
    }

    /// The accepted spellings, for error messages.
    pub const NAMES: &'static str =
        "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q4_k_s q4_k_m q5_k q5_k_s q5_k_m q6_k";

    /// `llama_ftype_get_default_type`.
    pub fn base_type(self) -> GgmlType {
        use LlamaFtype::*;
        match self {
            AllF32 => GgmlType::F32,
            MostlyF16 => GgmlType::F16,
            MostlyBF16 => GgmlType::BF16,
            MostlyQ4_0 => GgmlType::Q4_0,
            MostlyQ4_1 => GgmlType::Q4_1,
            MostlyQ5_0 => GgmlType::Q5_0,
            MostlyQ5_1 => GgmlType::Q5_1,
            MostlyQ8_0 => GgmlType::Q8_0,
            MostlyQ4KS | MostlyQ4KM => GgmlType::Q4K,
            MostlyQ5KS | MostlyQ5KM => GgmlType::Q5K,
            MostlyQ6K => GgmlType::Q6K,
        }
    }

    /// The `general.file_type` value.
    pub fn id(self) -> u32 {
        self as u32
    }
}

/// Model facts the mix rules read.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: usize,
    /// `{arch}.expert_count` (0 when absent).
    pub n_expert: usize,
}

/// A tensor as the planner sees it.
#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    /// ne0 first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    Output,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

/// `tensor_get_category`.
fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight")
        || name.contains("attn_kv_b.weight")
        || name.contains("attn_v.weight")
    {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_q.weight") {
        Category::AttnQ
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// `ggml_n_dims`: dimensions not counting trailing 1s (at least 1).
fn n_dims(dims: &[u64]) -> usize {
    let mut n = dims.len();
    while n > 1 && dims[n - 1] == 1 {
        n -= 1;
    }
    n.max(1)
}

/// `tensor_allows_quantization` (for the default parameters of llama-quantize).
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    if n_dims(dims) < 2 || !name.ends_with("weight") {
        return false;
    }
    const EXCLUDED: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if EXCLUDED.iter().any(|p| name.contains(p)) {
        return false;
    }
    // LLM_TN(arch)(POS_EMBD / TOKEN_TYPES, "weight") for text models.
    name != "position_embd.weight" && name != "token_types.weight"
}

fn is_quantized(t: GgmlType) -> bool {
    t.block_size() > 1
}

fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    i_layer < n_layers / 8
        || i_layer >= 7 * n_layers / 8
        || (i_layer as i64 - (n_layers / 8) as i64) % 3 == 2 // C `%`: truncating
}

/// `blk.N.` -> N.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let end = rest.find('.')?;
    rest[..end].parse().ok()
}

/// `tensor_type_fallback`: a type whose blocks fit rows of `ne0` values.
pub fn fallback_type(ty: GgmlType, ne0: u64) -> GgmlType {
    let fits = |t: GgmlType| ne0 % t.block_size() as u64 == 0;
    if fits(ty) {
        return ty;
    }
    let fb = match ty {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if fits(fb) {
        fb
    } else {
        GgmlType::F16
    }
}

/// The output type of every tensor, in the order given (llama.cpp's
/// `llama_tensor_get_type` applied in llama.cpp's tensor order).
pub fn plan_types(
    tensors: &[TensorDesc],
    model: &ModelInfo,
    ftype: LlamaFtype,
    pure: bool,
) -> Vec<GgmlType> {
    use LlamaFtype::*;
    let base = ftype.base_type();
    let falcon = model.arch == "falcon";
    let n_expert = model.n_expert.max(1);
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let n_attention_wv = tensors
        .iter()
        .filter(|t| category(&t.name) == Category::AttnV)
        .count();

    // llama_model_loader's weights_map order: layer number (-1 if none), then name.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let la = layer_of(&tensors[a].name).map_or(-1, |l| l as i64);
        let lb = layer_of(&tensors[b].name).map_or(-1, |l| l as i64);
        la.cmp(&lb)
            .then_with(|| tensors[a].name.as_bytes().cmp(tensors[b].name.as_bytes()))
    });

    let mut out = vec![GgmlType::F32; tensors.len()];
    let mut i_attention_wv = 0usize;
    let mut i_ffn_down = 0usize;
    for &ix in &order {
        let t = &tensors[ix];
        if !allows_quantization(&t.name, &t.dims) {
            out[ix] = t.ggml_type;
            continue;
        }
        let mut ty = base;
        if is_quantized(base) {
            if !pure {
                let cat = category(&t.name);
                let ne0 = t.dims[0];
                if cat == Category::Output || (tied && cat == Category::TokenEmbd) {
                    if falcon || ne0 % base.block_size() as u64 != 0 {
                        ty = GgmlType::Q8_0;
                    } else if ty != GgmlType::Q8_0 {
                        ty = GgmlType::Q6K;
                    }
                } else if cat == Category::AttnV {
                    if matches!(ftype, MostlyQ4KM | MostlyQ5KM)
                        && use_more_bits(i_attention_wv, n_attention_wv)
                    {
                        ty = GgmlType::Q6K;
                    } else if ftype == MostlyQ4KS && i_attention_wv < 4 {
                        ty = GgmlType::Q5K;
                    }
                    if model.n_expert == 8 {
                        ty = GgmlType::Q8_0;
                    }
                    i_attention_wv += 1;
                } else if cat == Category::AttnK {
                    if model.n_expert == 8 {
                        ty = GgmlType::Q8_0;
                    }
                } else if cat == Category::FfnDown {
                    let (i_layer, n_layer) = if n_expert > 1 {
                        (layer_of(&t.name).unwrap_or(i_ffn_down), model.n_layer)
                    } else {
                        (i_ffn_down, model.n_layer)
                    };
                    match ftype {
                        MostlyQ4KM if falcon => {
                            ty = if i_layer < n_layer / 16 {
                                GgmlType::Q6K
                            } else if use_more_bits(i_layer, n_layer) {
                                GgmlType::Q5K
                            } else {
                                GgmlType::Q4K
                            };
                        }
                        MostlyQ4KM | MostlyQ5KM if use_more_bits(i_layer, n_layer) => {
                            ty = GgmlType::Q6K;
                        }
                        MostlyQ4KS if !falcon && i_layer < n_layer / 8 => ty = GgmlType::Q5K,
                        _ => {}
                    }
                    i_ffn_down += 1;
                } else if cat == Category::AttnOutput
                    && !falcon
                    && model.n_expert == 8
                    && matches!(ftype, MostlyQ4KS | MostlyQ4KM)
                {
                    ty = GgmlType::Q5K;
                }
            }
            ty = fallback_type(ty, t.dims[0]);
        }
        out[ix] = ty;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp_pattern() {
        // n = 28 (Qwen3-0.6B): n/8 = 3, 7n/8 = 24.
        let picked: Vec<usize> = (0..28).filter(|&i| use_more_bits(i, 28)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]
        );
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fallback_type(GgmlType::Q4K, 800), GgmlType::Q5_0);
        assert_eq!(fallback_type(GgmlType::Q6K, 800), GgmlType::Q8_0);
        assert_eq!(fallback_type(GgmlType::Q5K, 800), GgmlType::Q5_1);
        assert_eq!(fallback_type(GgmlType::Q4_0, 100), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::Q4K, 1024), GgmlType::Q4K);
    }
}
