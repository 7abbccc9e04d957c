//! A training checkpoint in either official form, seen through one interface:
//! hyper-parameters, the MeKi form and variant, and every tensor by its role
//! ([`Part`]), located in the source files without copying.

use super::safetensors::Safetensors;
use super::tensor::{shape_str, RawTensor};
use super::torch::TorchCheckpoint;
use std::path::Path;

/// The two official implementations (see MEKI.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// HF-style demo: gate sees the pre-FFN normalized state, G reads `E[x]` raw.
    Demo,
    /// Megatron recipe: gate sees the residual, G normalizes `E[x]` first.
    Megatron,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Demo => "demo",
            Form::Megatron => "megatron",
        }
    }
    pub fn gate_input(self) -> &'static str {
        match self {
            Form::Demo => "ffn_norm",
            Form::Megatron => "residual",
        }
    }
}

/// Which memories the checkpoint trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Both,
    Static,
    Dynamic,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Both => "both",
            Variant::Static => "static",
            Variant::Dynamic => "dynamic",
        }
    }
    pub fn has_static(self) -> bool {
        self != Variant::Dynamic
    }
    pub fn has_dynamic(self) -> bool {
        self != Variant::Static
    }
}

#[derive(Clone, Debug)]
pub struct Hparams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub n_ctx: usize,
    /// Rows of the embedding (possibly padded past the tokenizer).
    pub n_rows: usize,
    pub tied: bool,
    pub qk_norm: bool,
    /// The checkpoint rotates halves (NeoX); false: adjacent pairs.
    pub rope_neox: bool,
    /// Norm weights are stored as `w - 1` (Megatron `--apply-layernorm-1p`).
    pub norm_plus_one: bool,
}

/// Largest width, head count or layer count accepted: far past any real
/// model, small enough that products of a few of them cannot overflow.
const MAX_HPARAM: usize = 1 << 24;

impl Hparams {
    /// Rejects sizes no model has (zero, or so large that the shapes derived
    /// from them overflow), naming the field, before anything is sized by them.
    pub fn validate(&self, d_mem: Option<usize>) -> Result<(), String> {
        let fields = [
            ("num_hidden_layers", self.n_layer),
            ("hidden_size", self.n_embd),
            ("intermediate_size", self.n_ff),
            ("num_attention_heads", self.n_head),
            ("num_key_value_heads", self.n_head_kv),
            ("head_dim", self.head_dim),
            ("embedding rows", self.n_rows),
            ("meki_dim", d_mem.unwrap_or(1)),
        ];
        for (name, v) in fields {
            if v == 0 || v > MAX_HPARAM {
                return Err(format!(
                    "hyperparameter {name} = {v}: must be between 1 and {MAX_HPARAM}"
                ));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(format!(
                "hyperparameter num_key_value_heads = {} does not divide num_attention_heads = {}",
                self.n_head_kv, self.n_head
            ));
        }
        let per_layer = (self.n_head + 2 * self.n_head_kv) * self.head_dim;
        if per_layer > MAX_HPARAM || self.n_layer * d_mem.unwrap_or(1) > MAX_HPARAM {
            return Err(format!(
                "hyperparameters: {} heads x {} head_dim or {} layers x meki_dim {} are past {MAX_HPARAM}",
                self.n_head + 2 * self.n_head_kv,
                self.head_dim,
                self.n_layer,
                d_mem.unwrap_or(1)
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct MekiSpec {
    pub form: Form,
    pub variant: Variant,
    pub d_mem: usize,
}

/// A tensor by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Embd,
    OutNorm,
    Output,
    AttnNorm(usize),
    Q(usize),
    K(usize),
    V(usize),
    QNorm(usize),
    KNorm(usize),
    O(usize),
    FfnNorm(usize),
    Gate(usize),
    Up(usize),
    Down(usize),
    /// Static memory M_l [V, d_mem].
    MekiStatic(usize),
    /// G's input RMSNorm (Megatron form).
    MekiGNorm(usize),
    MekiGGate(usize),
    MekiGUp(usize),
    MekiGDown(usize),
    MekiMix(usize),
    MekiAlpha(usize),
    MekiBeta(usize),
    MekiGateProj(usize),
    MekiOut(usize),
    MekiPostNorm(usize),
}

impl Part {
    /// Every per-layer part of layer `l` (backbone and MeKi), in checkpoint order.
    pub fn of_layer(l: usize) -> [Part; 22] {
        [
            Part::AttnNorm(l),
            Part::Q(l),
            Part::K(l),
            Part::V(l),
            Part::QNorm(l),
            Part::KNorm(l),
            Part::O(l),
            Part::FfnNorm(l),
            Part::Gate(l),
            Part::Up(l),
            Part::Down(l),
            Part::MekiStatic(l),
            Part::MekiGNorm(l),
            Part::MekiGGate(l),
            Part::MekiGUp(l),
            Part::MekiGDown(l),
            Part::MekiMix(l),
            Part::MekiAlpha(l),
            Part::MekiBeta(l),
            Part::MekiGateProj(l),
            Part::MekiOut(l),
            Part::MekiPostNorm(l),
        ]
    }

    pub fn is_norm(self) -> bool {
        matches!(
            self,
            Part::OutNorm
                | Part::AttnNorm(_)
                | Part::QNorm(_)
                | Part::KNorm(_)
                | Part::FfnNorm(_)
                | Part::MekiGNorm(_)
                | Part::MekiMix(_)
                | Part::MekiPostNorm(_)
        )
    }
}

/// Where a part's values are: a whole tensor, or a range of its rows.
#[derive(Clone, Debug)]
pub struct Loc {
    pub key: String,
    /// Row range of the first dimension (None: all).
    pub rows: Option<(usize, usize)>,
    /// For fused QKV: take `n` rows every `period` rows starting at `start`
    /// (one group after another).
    pub strided: Option<(usize, usize, usize)>,
}

impl Loc {
    fn whole(key: String) -> Loc {
        Loc {
            key,
            rows: None,
            strided: None,
        }
    }
}

enum Store {
    Hf(Safetensors),
    Torch(TorchCheckpoint),
}

pub struct Checkpoint {
    store: Store,
    pub hp: Hparams,
    pub meki: Option<MekiSpec>,
    /// Origin description for messages.
    pub origin: String,
    pub megatron_layout: bool,
    /// `config.json` (HF) for the tokenizer's special ids.
    pub hf_config: Option<serde_json::Value>,
}

/// An f32 tensor materialized from a [`Part`].
pub struct Loaded {
    /// Torch order (outermost first).
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn cfg_usize(cfg: &serde_json::Value, key: &str) -> Result<usize, String> {
    cfg.get(key)
        .and_then(|v| v.as_u64())
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("config.json: \"{key}\" missing or not a non-negative integer"))
}

impl Checkpoint {
    /// Opens an HF-style directory or a Megatron checkpoint (file or directory).
    pub fn open(path: &Path, meki_dim_override: Option<usize>) -> Result<Checkpoint, String> {
        let ck = if path.is_dir() && path.join("config.json").is_file() {
            Self::open_hf(path)?
        } else {
            Self::open_megatron(path)?
        };
        ck.hp.validate(ck.meki.map(|m| m.d_mem))?;
        if let (Some(want), Some(m)) = (meki_dim_override, ck.meki) {
            if want != m.d_mem {
                return Err(format!(
                    "--meki-dim {want} disagrees with the checkpoint's MeKi tensors (d_mem = {})",
                    m.d_mem
                ));
            }
        }
        Ok(ck)
    }

    fn open_hf(dir: &Path) -> Result<Checkpoint, String> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let st = Safetensors::open_dir(dir)?;
        let n_embd = cfg_usize(&cfg, "hidden_size")?;
        let n_head = cfg_usize(&cfg, "num_attention_heads")?;
        let model_type = cfg
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("qwen3");
        if model_type != "qwen3" {
            return Err(format!(
                "config.json: model_type {model_type:?}: only qwen3 backbones are converted"
            ));
        }
        let emb = st
            .get("model.embed_tokens.weight")
            .ok_or("model.embed_tokens.weight missing from the safetensors")?;
        let hp = Hparams {
            n_layer: cfg_usize(&cfg, "num_hidden_layers")?,
            n_embd,
            n_ff: cfg_usize(&cfg, "intermediate_size")?,
            n_head,
            n_head_kv: cfg_usize(&cfg, "num_key_value_heads").unwrap_or(n_head),
            head_dim: cfg_usize(&cfg, "head_dim").unwrap_or(n_embd / n_head.max(1)),
            eps: cfg
                .get("rms_norm_eps")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-6) as f32,
            rope_base: cfg
                .get("rope_theta")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e6) as f32,
            n_ctx: cfg_usize(&cfg, "max_position_embeddings").unwrap_or(4096),
            n_rows: emb.shape.first().copied().unwrap_or(0),
            tied: cfg
                .get("tie_word_embeddings")
                .and_then(|v| v.as_bool())
                .unwrap_or(true)
                || st.get("lm_head.weight").is_none(),
            qk_norm: true,
            rope_neox: true,
            norm_plus_one: false,
        };
        if let Some(rs) = cfg.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(format!("config.json: rope_scaling {rs} is not supported"));
        }
        let d_mem_cfg = cfg.get("meki_dim").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let form_cfg = cfg
            .get("meki_form")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        hp.validate(None)?;
        let mut ck = Checkpoint {
            store: Store::Hf(st),
            hp,
            meki: None,
            origin: dir.display().to_string(),
            megatron_layout: false,
            hf_config: Some(cfg),
        };
        ck.meki = ck.detect_meki(form_cfg.as_deref(), d_mem_cfg)?;
        Ok(ck)
    }

    fn open_megatron(path: &Path) -> Result<Checkpoint, String> {
        let t = TorchCheckpoint::open(path)?;
        let origin = t.path.display().to_string();
        let arg = |k: &str| t.arg_int(k).and_then(|v| usize::try_from(v).ok());
        let need = |k: &str| {
            arg(k).ok_or_else(|| {
                format!("{origin}: training argument args.{k} missing or not an integer")
            })
        };
        if t.args.is_empty() {
            return Err(format!(
                "{origin}: no \"args\" (argparse.Namespace) in the checkpoint"
            ));
        }
        let emb = t
            .get("embedding.word_embeddings.weight")?
            .ok_or_else(|| format!("{origin}: embedding.word_embeddings.weight missing (not a Megatron GPT checkpoint?)"))?;
        let n_rows = emb.shape.first().copied().unwrap_or(0);
        let n_embd = need("hidden_size")?;
        let n_head = need("num_attention_heads")?;
        let gqa = t.arg_bool("group_query_attention").unwrap_or(false);
        let n_head_kv = if gqa {
            need("num_query_groups")?
        } else {
            n_head
        };
        let head_dim = arg("kv_channels").unwrap_or(n_embd / n_head.max(1));
        if let Some(n) = t.args.get("normalization").and_then(|v| v.as_str()) {
            if n != "RMSNorm" {
                return Err(format!(
                    "{origin}: args.normalization = {n:?}; MeKi checkpoints use RMSNorm"
                ));
            }
        }
        if t.arg_bool("add_bias_linear").unwrap_or(false)
            || t.arg_bool("add_qkv_bias").unwrap_or(false)
        {
            return Err(format!(
                "{origin}: linear biases (args.add_bias_linear/add_qkv_bias) are not supported"
            ));
        }
        if let Some(p) = t.arg_float("rotary_percent") {
            if p != 1.0 {
                return Err(format!(
                    "{origin}: args.rotary_percent = {p}: partial rotary is not supported"
                ));
            }
        }
        if let Some(s) = t.arg_bool("swiglu") {
            if !s {
                return Err(format!(
                    "{origin}: args.swiglu is false; MeKi checkpoints use SwiGLU"
                ));
            }
        }
        let untied = t
            .arg_bool("untie_embeddings_and_output_weights")
            .unwrap_or(false);
        let has_output = t.get("output_layer.weight")?.is_some();
        if untied && !has_output {
            return Err(format!(
                "{origin}: untied embeddings but no output_layer.weight"
            ));
        }
        let hp = Hparams {
            n_layer: need("num_layers")?,
            n_embd,
            n_ff: need("ffn_hidden_size")?,
            n_head,
            n_head_kv,
            head_dim,
            eps: t.arg_float("norm_epsilon").unwrap_or(1e-5) as f32,
            rope_base: t.arg_float("rotary_base").unwrap_or(10000.0) as f32,
            n_ctx: arg("max_position_embeddings")
                .or(arg("seq_length"))
                .unwrap_or(4096),
            n_rows,
            tied: !has_output,
            qk_norm: t.arg_bool("qk_layernorm").unwrap_or(false)
                || t.get("decoder.layers.0.self_attention.q_layernorm.weight")?
                    .is_some(),
            rope_neox: !t.arg_bool("rotary_interleaved").unwrap_or(false),
            norm_plus_one: t.arg_bool("apply_layernorm_1p").unwrap_or(false),
        };
        if let Some(p) = arg("padded_vocab_size") {
            if p != n_rows {
                return Err(format!(
                    "{origin}: args.padded_vocab_size = {p} but the embedding has {n_rows} rows"
                ));
            }
        }
        let d_mem_arg = [
            "meki_dim",
            "meki_embedding_dim",
            "meki_hidden_size",
            "meki_size",
        ]
        .iter()
        .find_map(|k| arg(k))
        .unwrap_or(0);
        hp.validate(None)?;
        let mut ck = Checkpoint {
            store: Store::Torch(t),
            hp,
            meki: None,
            origin,
            megatron_layout: true,
            hf_config: None,
        };
        ck.meki = ck.detect_meki(Some("megatron"), d_mem_arg)?;
        Ok(ck)
    }

    /// The source location of a part (None: the layout has no such tensor).
    pub fn loc(&self, part: Part) -> Option<Loc> {
        let hp = &self.hp;
        if self.megatron_layout {
            let l = |i: usize, s: &str| format!("decoder.layers.{i}.{s}");
            let (hd, nq, nkv) = (hp.head_dim, hp.n_head, hp.n_head_kv);
            let group = (nq / nkv.max(1) + 2) * hd;
            let qkv = |i: usize, start: usize, n: usize| Loc {
                key: l(i, "self_attention.linear_qkv.weight"),
                rows: None,
                strided: Some((start, n, group)),
            };
            let half = |i: usize, s: &str, which: usize, n: usize| Loc {
                key: l(i, s),
                rows: Some((which * n, n)),
                strided: None,
            };
            Some(match part {
                Part::Embd => Loc::whole("embedding.word_embeddings.weight".into()),
                Part::OutNorm => Loc::whole("decoder.final_layernorm.weight".into()),
                Part::Output => Loc::whole("output_layer.weight".into()),
                Part::AttnNorm(i) => {
                    Loc::whole(l(i, "self_attention.linear_qkv.layer_norm_weight"))
                }
                Part::Q(i) => qkv(i, 0, nq / nkv.max(1) * hd),
                Part::K(i) => qkv(i, nq / nkv.max(1) * hd, hd),
                Part::V(i) => qkv(i, (nq / nkv.max(1) + 1) * hd, hd),
                Part::QNorm(i) => Loc::whole(l(i, "self_attention.q_layernorm.weight")),
                Part::KNorm(i) => Loc::whole(l(i, "self_attention.k_layernorm.weight")),
                Part::O(i) => Loc::whole(l(i, "self_attention.linear_proj.weight")),
                Part::FfnNorm(i) => Loc::whole(l(i, "mlp.linear_fc1.layer_norm_weight")),
                Part::Gate(i) => half(i, "mlp.linear_fc1.weight", 0, hp.n_ff),
                Part::Up(i) => half(i, "mlp.linear_fc1.weight", 1, hp.n_ff),
                Part::Down(i) => Loc::whole(l(i, "mlp.linear_fc2.weight")),
                Part::MekiStatic(i) => Loc::whole(l(i, "meki_module.embeddings.weight")),
                Part::MekiGNorm(i) => Loc::whole(l(
                    i,
                    "meki_module.word_emb_projection.linear_fc1.layer_norm_weight",
                )),
                Part::MekiGGate(i) => half(
                    i,
                    "meki_module.word_emb_projection.linear_fc1.weight",
                    0,
                    hp.n_embd / 2,
                ),
                Part::MekiGUp(i) => half(
                    i,
                    "meki_module.word_emb_projection.linear_fc1.weight",
                    1,
                    hp.n_embd / 2,
                ),
                Part::MekiGDown(i) => {
                    Loc::whole(l(i, "meki_module.word_emb_projection.linear_fc2.weight"))
                }
                Part::MekiMix(i) => Loc::whole(l(i, "meki_module.mix_norm.weight")),
                Part::MekiAlpha(i) => Loc::whole(l(i, "meki_module.alpha_scale")),
                Part::MekiBeta(i) => Loc::whole(l(i, "meki_module.beta_scale")),
                Part::MekiGateProj(i) => Loc::whole(l(i, "meki_module.gate_proj.weight")),
                Part::MekiOut(i) => Loc::whole(l(i, "meki_module.out_proj.weight")),
                Part::MekiPostNorm(i) => Loc::whole(l(i, "meki_module.post_norm.weight")),
            })
        } else {
            let l = |i: usize, s: &str| Loc::whole(format!("model.layers.{i}.{s}"));
            Some(match part {
                Part::Embd => Loc::whole("model.embed_tokens.weight".into()),
                Part::OutNorm => Loc::whole("model.norm.weight".into()),
                Part::Output => Loc::whole("lm_head.weight".into()),
                Part::AttnNorm(i) => l(i, "input_layernorm.weight"),
                Part::Q(i) => l(i, "self_attn.q_proj.weight"),
                Part::K(i) => l(i, "self_attn.k_proj.weight"),
                Part::V(i) => l(i, "self_attn.v_proj.weight"),
                Part::QNorm(i) => l(i, "self_attn.q_norm.weight"),
                Part::KNorm(i) => l(i, "self_attn.k_norm.weight"),
                Part::O(i) => l(i, "self_attn.o_proj.weight"),
                Part::FfnNorm(i) => l(i, "post_attention_layernorm.weight"),
                Part::Gate(i) => l(i, "mlp.gate_proj.weight"),
                Part::Up(i) => l(i, "mlp.up_proj.weight"),
                Part::Down(i) => l(i, "mlp.down_proj.weight"),
                Part::MekiStatic(i) => l(i, "meki_module.embeddings.weight"),
                Part::MekiGNorm(i) => l(i, "meki_module.word_emb_projection.norm.weight"),
                Part::MekiGGate(i) => l(i, "meki_module.word_emb_projection.gate_proj.weight"),
                Part::MekiGUp(i) => l(i, "meki_module.word_emb_projection.up_proj.weight"),
                Part::MekiGDown(i) => l(i, "meki_module.word_emb_projection.down_proj.weight"),
                Part::MekiMix(i) => l(i, "meki_module.mix_norm.weight"),
                Part::MekiAlpha(i) => l(i, "meki_module.alpha_scale"),
                Part::MekiBeta(i) => l(i, "meki_module.beta_scale"),
                Part::MekiGateProj(i) => l(i, "meki_module.gate_proj.weight"),
                Part::MekiOut(i) => l(i, "meki_module.out_proj.weight"),
                Part::MekiPostNorm(i) => l(i, "meki_module.post_norm.weight"),
            })
        }
    }

    fn raw(&self, key: &str) -> Result<Option<RawTensor<'_>>, String> {
        match &self.store {
            Store::Hf(st) => Ok(st.get(key)),
            Store::Torch(t) => t.get(key),
        }
    }

    /// Whether the checkpoint holds a part's tensor.
    pub fn has(&self, part: Part) -> Result<bool, String> {
        match self.loc(part) {
            Some(loc) => Ok(self.raw(&loc.key)?.is_some()),
            None => Ok(false),
        }
    }

    /// The source tensor of a part, its expected shape checked.
    pub fn raw_part(&self, part: Part) -> Result<(RawTensor<'_>, Loc), String> {
        let loc = self
            .loc(part)
            .ok_or_else(|| format!("{part:?}: no such tensor in this layout"))?;
        let t = self
            .raw(&loc.key)?
            .ok_or_else(|| format!("{}: tensor {} missing", self.origin, loc.key))?;
        let want = self.source_shape(part, &loc);
        let ok = match part {
            // 0-d or [1]
            Part::MekiAlpha(_) | Part::MekiBeta(_) => t.n_elements() == 1 && t.shape.len() <= 1,
            _ => t.shape == want,
        };
        if !ok {
            return Err(format!(
                "{}: tensor {} has shape {}, expected {} ({}{})",
                self.origin,
                loc.key,
                shape_str(&t.shape),
                shape_str(&want),
                self.shape_reason(part),
                if self.megatron_layout {
                    ", Megatron layout"
                } else {
                    ", HF layout"
                }
            ));
        }
        Ok((t, loc))
    }

    fn shape_reason(&self, part: Part) -> &'static str {
        match part {
            Part::MekiStatic(_)
            | Part::MekiGDown(_)
            | Part::MekiGateProj(_)
            | Part::MekiOut(_)
            | Part::MekiMix(_) => "from hidden_size, vocabulary rows and d_mem",
            _ => "from the hyper-parameters",
        }
    }

    /// The shape of the whole source tensor a part lives in.
    fn source_shape(&self, part: Part, loc: &Loc) -> Vec<usize> {
        let hp = &self.hp;
        let d = hp.n_embd;
        let dm = self.meki.map_or(0, |m| m.d_mem);
        let (nq, nkv, hd) = (hp.n_head, hp.n_head_kv, hp.head_dim);
        if self.megatron_layout {
            match part {
                Part::Q(_) | Part::K(_) | Part::V(_) => return vec![(nq + 2 * nkv) * hd, d],
                Part::Gate(_) | Part::Up(_) => return vec![2 * hp.n_ff, d],
                Part::MekiGGate(_) | Part::MekiGUp(_) => return vec![2 * (d / 2), d],
                _ => {}
            }
        }
        let _ = loc;
        match part {
            Part::Embd => vec![hp.n_rows, d],
            Part::Output => vec![hp.n_rows, d],
            Part::OutNorm
            | Part::AttnNorm(_)
            | Part::FfnNorm(_)
            | Part::MekiGNorm(_)
            | Part::MekiPostNorm(_) => {
                vec![d]
            }
            Part::Q(_) => vec![nq * hd, d],
            Part::K(_) | Part::V(_) => vec![nkv * hd, d],
            Part::QNorm(_) | Part::KNorm(_) => vec![hd],
            Part::O(_) => vec![d, nq * hd],
            Part::Gate(_) | Part::Up(_) => vec![hp.n_ff, d],
            Part::Down(_) => vec![d, hp.n_ff],
            Part::MekiStatic(_) => vec![hp.n_rows, dm],
            Part::MekiGGate(_) | Part::MekiGUp(_) => vec![d / 2, d],
            Part::MekiGDown(_) => vec![dm, d / 2],
            Part::MekiMix(_) => vec![dm],
            Part::MekiAlpha(_) | Part::MekiBeta(_) => vec![],
            Part::MekiGateProj(_) => vec![dm, d],
            Part::MekiOut(_) => vec![d, dm],
        }
    }

    /// A part as f32 (rows selected, norm offset applied), torch order shape.
    pub fn load(&self, part: Part) -> Result<Loaded, String> {
        self.load_rows(part, None)
    }

    /// Like [`Checkpoint::load`], keeping only the first `limit` rows.
    pub fn load_rows(&self, part: Part, limit: Option<usize>) -> Result<Loaded, String> {
        let (t, loc) = self.raw_part(part)?;
        let (rows, cols) = t.rows_cols();
        let mut ranges: Vec<(usize, usize)> = match (loc.rows, loc.strided) {
            (Some(r), _) => vec![r],
            (None, Some((start, n, period))) => (0..rows / period.max(1))
                .map(|g| (g * period + start, n))
                .collect(),
            (None, None) => vec![(0, rows)],
        };
        if let Some(limit) = limit {
            ranges = vec![(ranges[0].0, limit.min(ranges[0].1))];
        }
        let total: usize = ranges.iter().map(|r| r.1).sum();
        let mut data = Vec::with_capacity(total * cols);
        for (r0, n) in ranges {
            data.extend(t.rows_f32(r0, n)?);
        }
        if self.hp.norm_plus_one && part.is_norm() {
            data.iter_mut().for_each(|x| *x += 1.0);
        }
        let shape = if t.shape.len() <= 1 {
            t.shape.clone()
        } else {
            vec![total, cols]
        };
        Ok(Loaded { shape, data })
    }

    /// A scalar part (alpha, beta).
    pub fn scalar(&self, part: Part) -> Result<f32, String> {
        Ok(self.load(part)?.data[0])
    }

    /// Rows `r0 .. r0 + n` of a part stored whole (embedding, static memory).
    pub fn rows(&self, part: Part, r0: usize, n: usize) -> Result<Vec<f32>, String> {
        let (t, _) = self.raw_part(part)?;
        t.rows_f32(r0, n)
    }

    /// Detects the MeKi form, variant and width from the tensors present,
    /// cross-checked against what the config says.
    fn detect_meki(
        &mut self,
        form_hint: Option<&str>,
        d_mem_hint: usize,
    ) -> Result<Option<MekiSpec>, String> {
        let n = self.hp.n_layer;
        let origin = self.origin.clone();
        // Names of the other layout: a checkpoint mixing them is refused by name.
        let other_names = if self.megatron_layout {
            [
                "meki_module.word_emb_projection.gate_proj.weight",
                "model.layers.0.meki_module.embeddings.weight",
            ]
        } else {
            [
                "meki_module.word_emb_projection.linear_fc1.weight",
                "decoder.layers.0.meki_module.embeddings.weight",
            ]
        };
        let names: Vec<String> = match &self.store {
            Store::Hf(st) => st.names().to_vec(),
            Store::Torch(t) => t.tensors.iter().map(|(k, _)| k.clone()).collect(),
        };
        if let Some(bad) = names
            .iter()
            .find(|k| other_names.iter().any(|o| k.contains(o)))
        {
            return Err(format!(
                "{origin}: tensor {bad} uses the {} naming, but this is a {} checkpoint",
                if self.megatron_layout {
                    "HF/demo"
                } else {
                    "Megatron"
                },
                if self.megatron_layout {
                    "Megatron"
                } else {
                    "HF-style"
                }
            ));
        }
        let any_meki = names.iter().any(|k| k.contains(".meki_module."));
        if !any_meki {
            if d_mem_hint > 0 {
                return Err(format!(
                    "{origin}: the config says meki_dim = {d_mem_hint} but there are no meki_module tensors"
                ));
            }
            return Ok(None);
        }
        let has_static = self.has(Part::MekiStatic(0))?;
        let has_dyn = self.has(Part::MekiGDown(0))?;
        let variant = match (has_static, has_dyn) {
            (true, true) => Variant::Both,
            (true, false) => Variant::Static,
            (false, true) => Variant::Dynamic,
            (false, false) => {
                return Err(format!(
                    "{origin}: layer 0 has meki_module tensors but neither the static memory ({}) nor the projection ({})",
                    self.loc(Part::MekiStatic(0)).map(|l| l.key).unwrap_or_default(),
                    self.loc(Part::MekiGDown(0)).map(|l| l.key).unwrap_or_default()
                ))
            }
        };
        let has_gnorm = self.has(Part::MekiGNorm(0))?;
        let form = match form_hint {
            Some("megatron") => Form::Megatron,
            Some("demo") | Some("hf") => Form::Demo,
            Some(other) => {
                return Err(format!(
                    "{origin}: meki_form {other:?} is neither \"demo\" nor \"megatron\""
                ))
            }
            None if has_gnorm => Form::Megatron,
            None => Form::Demo,
        };
        if variant.has_dynamic() && form == Form::Megatron && !has_gnorm {
            return Err(format!(
                "{origin}: Megatron form needs G's input RMSNorm {} (missing)",
                self.loc(Part::MekiGNorm(0))
                    .map(|l| l.key)
                    .unwrap_or_default()
            ));
        }
        if form == Form::Demo && has_gnorm {
            return Err(format!(
                "{origin}: {} is present, which only the Megatron form has, but the config says meki_form = \"demo\"",
                self.loc(Part::MekiGNorm(0)).map(|l| l.key).unwrap_or_default()
            ));
        }
        let gate = self.raw_part_unchecked(Part::MekiGateProj(0))?;
        let d_mem = gate.shape.first().copied().unwrap_or(0);
        if d_mem == 0 {
            return Err(format!("{origin}: layer 0's meki gate_proj has no rows"));
        }
        if d_mem_hint > 0 && d_mem_hint != d_mem {
            return Err(format!(
                "{origin}: meki_dim = {d_mem_hint} in the config, but gate_proj has {d_mem} rows"
            ));
        }
        let spec = MekiSpec {
            form,
            variant,
            d_mem,
        };
        self.meki = Some(spec);
        // Every layer must carry the same set, in the right shapes.
        for l in 0..n {
            let mut parts = vec![
                Part::MekiMix(l),
                Part::MekiAlpha(l),
                Part::MekiBeta(l),
                Part::MekiGateProj(l),
                Part::MekiOut(l),
                Part::MekiPostNorm(l),
            ];
            if variant.has_static() {
                parts.push(Part::MekiStatic(l));
            }
            if variant.has_dynamic() {
                parts.extend([Part::MekiGGate(l), Part::MekiGUp(l), Part::MekiGDown(l)]);
                if form == Form::Megatron {
                    parts.push(Part::MekiGNorm(l));
                }
            }
            for p in parts {
                self.raw_part(p).map_err(|e| {
                    format!(
                        "layer {l} ({} form, {} variant): {e}",
                        form.name(),
                        variant.name()
                    )
                })?;
            }
            if !variant.has_static() && self.has(Part::MekiStatic(l))? {
                return Err(format!(
                    "{origin}: layer {l} has a static memory but layer 0 does not"
                ));
            }
            if !variant.has_dynamic() && self.has(Part::MekiGDown(l))? {
                return Err(format!(
                    "{origin}: layer {l} has a dynamic projection but layer 0 does not"
                ));
            }
        }
        Ok(Some(spec))
    }

    fn raw_part_unchecked(&self, part: Part) -> Result<RawTensor<'_>, String> {
        let loc = self.loc(part).ok_or("no location")?;
        self.raw(&loc.key)?
            .ok_or_else(|| format!("{}: tensor {} missing", self.origin, loc.key))
    }
}
