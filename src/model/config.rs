//! Hyper-parameters of a decoder-only model, read from GGUF metadata with
//! llama.cpp's key names (`{arch}.block_count`, `{arch}.attention.head_count`...).

use crate::gguf::Metadata;

/// Architectures meki-run executes (dense; MeKi tensors ride on top of any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// Pair order of rotary embeddings: llama rotates adjacent pairs (x0,x1),
/// NeoX-style models (Qwen) rotate halves (x_i, x_{i+n/2}).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeOrder {
    Normal,
    Neox,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    /// Context length the model was trained with (metadata); the run's context may differ.
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Linear position scaling (1.0: none), `{arch}.rope.scaling.factor` as 1/factor.
    pub rope_freq_scale: f32,
    /// Rotated dimensions per head (`{arch}.rope.dimension_count`, default head_dim).
    pub n_rot: usize,
    pub rope_order: RopeOrder,
}

impl Config {
    pub fn from_metadata(md: &Metadata) -> Result<Config, String> {
        let arch_name = md
            .get_str("general.architecture")
            .map_err(|e| e.to_string())?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            format!("unsupported architecture '{arch_name}' (meki-run runs llama, qwen2, qwen3)")
        })?;
        let a = arch.name();
        let uint = |key: &str| -> Result<usize, String> {
            let v = md
                .get_uint(&format!("{a}.{key}"))
                .map_err(|e| e.to_string())?;
            usize::try_from(v).map_err(|_| format!("{a}.{key} = {v} is too large"))
        };
        let uint_or = |key: &str, default: usize| -> Result<usize, String> {
            if md.contains_key(&format!("{a}.{key}")) {
                uint(key)
            } else {
                Ok(default)
            }
        };
        let f32_or = |key: &str, default: f32| -> Result<f32, String> {
            let k = format!("{a}.{key}");
            if md.contains_key(&k) {
                md.get_f32(&k).map_err(|e| e.to_string())
            } else {
                Ok(default)
            }
        };
        let n_embd = uint("embedding_length")?;
        let n_head = uint("attention.head_count")?;
        let n_head_kv = uint_or("attention.head_count_kv", n_head)?;
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(format!(
                "{a}.attention.head_count = {n_head} is not a positive multiple of head_count_kv = {n_head_kv}"
            ));
        }
        let head_dim = uint_or("attention.key_length", n_embd / n_head)?;
        let v_dim = uint_or("attention.value_length", head_dim)?;
        if v_dim != head_dim {
            return Err(format!(
                "{a}.attention.value_length {v_dim} != key_length {head_dim}: not supported"
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(format!(
                "head dimension {head_dim} must be positive and even"
            ));
        }
        let n_vocab = match md.get_uint(&format!("{a}.vocab_size")) {
            Ok(v) => v as usize,
            Err(_) => md
                .get_array("tokenizer.ggml.tokens")
                .map_err(|e| format!("cannot tell the vocabulary size: {e}"))?
                .len(),
        };
        let scaling_type = md
            .get_str(&format!("{a}.rope.scaling.type"))
            .unwrap_or("none");
        let rope_freq_scale = match scaling_type {
            "none" => 1.0,
            "linear" => {
                let f = f32_or("rope.scaling.factor", 1.0)?;
                if f > 0.0 {
                    1.0 / f
                } else {
                    1.0
                }
            }
            other => return Err(format!("{a}.rope.scaling.type '{other}' is not supported")),
        };
        let n_rot = uint_or("rope.dimension_count", head_dim)?;
        if n_rot != head_dim {
            return Err(format!(
                "partial rotary embeddings ({n_rot} of {head_dim}) are not supported"
            ));
        }
        let config = Config {
            arch,
            n_layer: uint("block_count")?,
            n_embd,
            n_ff: uint("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            n_ctx_train: uint_or("context_length", 4096)?,
            rms_eps: f32_or("attention.layer_norm_rms_epsilon", 1e-6)?,
            rope_base: f32_or("rope.freq_base", 10000.0)?,
            rope_freq_scale,
            n_rot,
            rope_order: match arch {
                Arch::Llama => RopeOrder::Normal,
                Arch::Qwen2 | Arch::Qwen3 => RopeOrder::Neox,
            },
        };
        if config.n_layer == 0 || config.n_embd == 0 || config.n_ff == 0 || config.n_vocab == 0 {
            return Err(format!("degenerate hyper-parameters: {config:?}"));
        }
        Ok(config)
    }

    /// Width of the K (and V) projection: all KV heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of the Q projection.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}
