//! `meki-convert checkpoint`: MeKi training checkpoints (HF-style directories
//! or Megatron torch checkpoints) -> GGUF, with the MeKi tables folded.
//!
//! Pipeline: [`checkpoint::Checkpoint`] reads either form ([`safetensors`],
//! or [`torch`] = [`zip`] + [`pickle`]) and detects the MeKi form and variant;
//! the backbone is written with llama.cpp's tensor names and keys (qwen3, or
//! llama with Q/K rows permuted for rotate-half Megatron checkpoints without
//! QK-norm); [`fold`] computes the tables block of vocabulary rows by block
//! ([`gemm`]) and streams them token-major into `meki_table.weight`. Names and
//! keys of the MeKi tensors are those of [`crate::meki`].

pub mod checkpoint;
pub mod fold;
pub mod gemm;
pub mod pickle;
pub mod safetensors;
pub mod tensor;
pub mod tokenizer;
pub mod torch;
pub mod zip;

use crate::gguf::{GgufFile, GgufWriter, Value};
use crate::kernels::formats::GgmlType;
use crate::meki as mk;
use crate::quant::{self, LlamaFtype, ModelInfo, TensorDesc};
use checkpoint::{Checkpoint, Form, MekiSpec, Part};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `meki-convert checkpoint`.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Backbone type (llama-quantize names: f32, f16, bf16, q8_0, q4_k_m, ...).
    pub backbone_type: String,
    /// Table type: f16, q8_0 or f32.
    pub table_type: String,
    /// MeKi projection type (`None`: as the backbone's mix gives them).
    pub meki_proj_type: Option<GgmlType>,
    /// Tokenizer directory (default: the checkpoint directory, HF form).
    pub tokenizer: Option<PathBuf>,
    /// Keep this GGUF's backbone byte for byte, add only the MeKi part.
    pub base: Option<PathBuf>,
    /// Write the MeKi part to the sidecar `NAME.meki.gguf`.
    pub split_tables: bool,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Expected d_mem (checked against the tensors).
    pub meki_dim: Option<usize>,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// What a conversion did.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub arch: String,
    pub form: Option<Form>,
    pub variant: Option<&'static str>,
    pub n_vocab: usize,
    pub d_mem: usize,
    pub main: PathBuf,
    pub sidecar: Option<PathBuf>,
    pub fold_seconds: f64,
    /// Multiply-adds of the fold.
    pub fold_macs: f64,
}

/// One backbone (or MeKi projection) tensor to write.
struct OutTensor {
    name: String,
    part: Part,
    /// ggml order (ne0 first).
    dims: Vec<u64>,
    /// Keep only the first rows (vocabulary trimming).
    rows: Option<usize>,
    /// Permute rows per head for llama's interleaved rope (heads).
    permute_heads: Option<usize>,
}

/// A `--table-type` value: the types the engine gathers MeKi rows from.
pub fn parse_table_type(s: &str) -> Result<GgmlType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(GgmlType::F16),
        "q8_0" => Ok(GgmlType::Q8_0),
        "f32" => Ok(GgmlType::F32),
        other => Err(format!("--table-type {other:?}: expected f16, q8_0 or f32")),
    }
}

/// convert_hf_to_gguf.py's `LlamaModel.permute`: within each head, rows
/// `[first half; second half]` become interleaved pairs, so llama.cpp's
/// adjacent-pair rope computes the checkpoint's rotate-half rope.
fn permute_rows(data: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `meki-convert checkpoint`.
pub fn convert_checkpoint(opts: &CheckpointOptions) -> Result<ConvertReport, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| format!("thread pool: {e}"))?;
    pool.install(|| convert_inner(opts))
}

fn convert_inner(opts: &CheckpointOptions) -> Result<ConvertReport, String> {
    let ftype = LlamaFtype::parse(&opts.backbone_type).ok_or_else(|| {
        format!(
            "--type {:?}: expected one of {}",
            opts.backbone_type,
            LlamaFtype::NAMES
        )
    })?;
    let table_ty = parse_table_type(&opts.table_type)?;
    let ck = Checkpoint::open(&opts.input, opts.meki_dim)?;
    let hp = ck.hp.clone();
    let say = |m: String| {
        if opts.progress {
            eprintln!("{m}");
        }
    };
    say(format!(
        "checkpoint {}: {} layout, {} layers, d = {}, ffn = {}, heads {}/{} x {}, {} vocabulary rows, {}",
        ck.origin,
        if ck.megatron_layout { "Megatron" } else { "HF" },
        hp.n_layer,
        hp.n_embd,
        hp.n_ff,
        hp.n_head,
        hp.n_head_kv,
        hp.head_dim,
        hp.n_rows,
        match ck.meki {
            Some(m) => format!(
                "MeKi form {} (gate input {}), variant {}, d_mem = {}",
                m.form.name(),
                m.form.gate_input(),
                m.variant.name(),
                m.d_mem
            ),
            None => "no MeKi tensors (dense)".into(),
        }
    ));
    if let Some(m) = ck.meki {
        if table_ty == GgmlType::Q8_0 && m.d_mem % 32 != 0 {
            return Err(format!(
                "--table-type q8_0 needs d_mem a multiple of 32, got {}",
                m.d_mem
            ));
        }
    }

    // Tokenizer and vocabulary size.
    let tok_dir = match &opts.tokenizer {
        Some(d) => Some(d.clone()),
        None if !ck.megatron_layout && opts.input.join("tokenizer.json").is_file() => {
            Some(opts.input.clone())
        }
        None => None,
    };
    let tok = match &tok_dir {
        Some(d) => Some(tokenizer::read_tokenizer(d, ck.hf_config.as_ref())?),
        None => {
            say("warning: no tokenizer (pass --tokenizer DIR): all embedding rows are kept, no tokenizer metadata".into());
            None
        }
    };
    let n_vocab = match &tok {
        Some(t) if t.n_tokens > hp.n_rows => {
            return Err(format!(
                "the tokenizer has {} tokens but the embedding only {} rows",
                t.n_tokens, hp.n_rows
            ))
        }
        Some(t) => t.n_tokens,
        None => hp.n_rows,
    };
    if n_vocab < hp.n_rows {
        say(format!(
            "dropping {} padding rows past the tokenizer's {n_vocab} tokens",
            hp.n_rows - n_vocab
        ));
    }

    // Architecture.
    let (arch, permute) = if !ck.megatron_layout {
        ("qwen3", false)
    } else if hp.qk_norm {
        if !hp.rope_neox {
            return Err("interleaved rope with QK-norm (Megatron --rotary-interleaved --qk-layernorm) is not supported".into());
        }
        ("qwen3", false)
    } else {
        ("llama", hp.rope_neox)
    };

    // Backbone tensors.
    let d = hp.n_embd as u64;
    let mut outs: Vec<OutTensor> = Vec::new();
    let t = |name: String, part: Part, dims: Vec<u64>| OutTensor {
        name,
        part,
        dims,
        rows: None,
        permute_heads: None,
    };
    outs.push(OutTensor {
        rows: Some(n_vocab),
        ..t(
            "token_embd.weight".into(),
            Part::Embd,
            vec![d, n_vocab as u64],
        )
    });
    let (qd, kvd) = (
        (hp.n_head * hp.head_dim) as u64,
        (hp.n_head_kv * hp.head_dim) as u64,
    );
    let meki = ck.meki;
    for l in 0..hp.n_layer {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        outs.push(t(b("attn_norm"), Part::AttnNorm(l), vec![d]));
        outs.push(OutTensor {
            permute_heads: permute.then_some(hp.n_head),
            ..t(b("attn_q"), Part::Q(l), vec![d, qd])
        });
        outs.push(OutTensor {
            permute_heads: permute.then_some(hp.n_head_kv),
            ..t(b("attn_k"), Part::K(l), vec![d, kvd])
        });
        outs.push(t(b("attn_v"), Part::V(l), vec![d, kvd]));
        if arch == "qwen3" {
            outs.push(t(
                b("attn_q_norm"),
                Part::QNorm(l),
                vec![hp.head_dim as u64],
            ));
            outs.push(t(
                b("attn_k_norm"),
                Part::KNorm(l),
                vec![hp.head_dim as u64],
            ));
        }
        outs.push(t(b("attn_output"), Part::O(l), vec![qd, d]));
        outs.push(t(b("ffn_norm"), Part::FfnNorm(l), vec![d]));
        outs.push(t(b("ffn_gate"), Part::Gate(l), vec![d, hp.n_ff as u64]));
        outs.push(t(b("ffn_up"), Part::Up(l), vec![d, hp.n_ff as u64]));
        outs.push(t(b("ffn_down"), Part::Down(l), vec![hp.n_ff as u64, d]));
    }
    outs.push(t("output_norm.weight".into(), Part::OutNorm, vec![d]));
    if !hp.tied {
        outs.push(OutTensor {
            rows: Some(n_vocab),
            ..t(
                "output.weight".into(),
                Part::Output,
                vec![d, n_vocab as u64],
            )
        });
    }
    let mut meki_outs: Vec<OutTensor> = Vec::new();
    if let Some(m) = meki {
        let dm = m.d_mem as u64;
        for l in 0..hp.n_layer {
            meki_outs.push(t(mk::gate_name(l), Part::MekiGateProj(l), vec![d, dm]));
            meki_outs.push(t(mk::out_name(l), Part::MekiOut(l), vec![dm, d]));
            meki_outs.push(t(mk::post_norm_name(l), Part::MekiPostNorm(l), vec![d]));
        }
    }

    // Types: llama.cpp's mix over backbone + projections (tables: --table-type).
    let descs: Vec<TensorDesc> = outs
        .iter()
        .chain(&meki_outs)
        .map(|o| TensorDesc {
            name: o.name.clone(),
            dims: o.dims.clone(),
            ggml_type: GgmlType::F32,
        })
        .collect();
    let info = ModelInfo {
        arch: arch.into(),
        n_layer: hp.n_layer,
        n_expert: 0,
    };
    let mut types = quant::mix::plan_types(&descs, &info, ftype, false);
    let mut meki_types = types.split_off(outs.len());
    if let Some(p) = opts.meki_proj_type {
        for (o, ty) in meki_outs.iter().zip(meki_types.iter_mut()) {
            if quant::is_meki_projection(&o.name) {
                if o.dims[0] % p.block_size() as u64 != 0 {
                    return Err(format!(
                        "--meki-proj-type {p}: {} has rows of {}, not a multiple of {}",
                        o.name,
                        o.dims[0],
                        p.block_size()
                    ));
                }
                *ty = p;
            }
        }
    }
    let meki_part = meki.map(|spec| MekiPart {
        outs: meki_outs,
        types: meki_types,
        spec,
        n_layer: hp.n_layer,
        n_vocab,
        table_ty,
    });

    let base = match &opts.base {
        Some(p) => Some(GgufFile::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    if let Some(b) = &base {
        check_base(b, &hp, n_vocab)?;
    }

    let mut metadata: Vec<(String, Value)> = Vec::new();
    let name = opts
        .input
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    if base.is_none() {
        let a = arch;
        let mut kv = |k: &str, v: Value| metadata.push((k.to_string(), v));
        kv("general.architecture", a.into());
        kv("general.type", "model".into());
        kv("general.name", name.as_str().into());
        kv(&format!("{a}.block_count"), Value::U32(hp.n_layer as u32));
        kv(&format!("{a}.context_length"), Value::U32(hp.n_ctx as u32));
        kv(
            &format!("{a}.embedding_length"),
            Value::U32(hp.n_embd as u32),
        );
        kv(
            &format!("{a}.feed_forward_length"),
            Value::U32(hp.n_ff as u32),
        );
        kv(
            &format!("{a}.attention.head_count"),
            Value::U32(hp.n_head as u32),
        );
        kv(
            &format!("{a}.attention.head_count_kv"),
            Value::U32(hp.n_head_kv as u32),
        );
        kv(&format!("{a}.rope.freq_base"), Value::F32(hp.rope_base));
        kv(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(hp.eps),
        );
        kv(
            &format!("{a}.attention.key_length"),
            Value::U32(hp.head_dim as u32),
        );
        kv(
            &format!("{a}.attention.value_length"),
            Value::U32(hp.head_dim as u32),
        );
        if a == "llama" {
            kv(&format!("{a}.vocab_size"), Value::U32(n_vocab as u32));
            kv(
                &format!("{a}.rope.dimension_count"),
                Value::U32(hp.head_dim as u32),
            );
        } else if tok.is_none() {
            kv(&format!("{a}.vocab_size"), Value::U32(n_vocab as u32));
        }
        kv("general.file_type", Value::U32(ftype.id()));
        kv(
            "general.quantization_version",
            Value::U32(quant::QUANTIZATION_VERSION),
        );
        if let Some(tk) = &tok {
            metadata.extend(tk.kv.iter().cloned());
        }
    }
    let meki_kv: Vec<(String, Value)> = match meki {
        None => Vec::new(),
        Some(m) => vec![
            (mk::KEY_VERSION.into(), Value::U32(mk::VERSION)),
            (mk::KEY_FORM.into(), m.form.name().into()),
            (mk::KEY_GATE_INPUT.into(), m.form.gate_input().into()),
            (mk::KEY_DIM.into(), Value::U32(m.d_mem as u32)),
            (mk::KEY_N_LAYER.into(), Value::U32(hp.n_layer as u32)),
            (mk::KEY_N_VOCAB.into(), Value::U32(n_vocab as u32)),
            (mk::KEY_TABLE_LAYOUT.into(), "token_major".into()),
            (mk::KEY_VARIANT.into(), m.variant.name().into()),
        ],
    };

    let mut report = ConvertReport {
        arch: base
            .as_ref()
            .and_then(|b| {
                b.metadata()
                    .get_str("general.architecture")
                    .ok()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| arch.to_string()),
        form: meki.map(|m| m.form),
        variant: meki.map(|m| m.variant.name()),
        n_vocab,
        d_mem: meki.map_or(0, |m| m.d_mem),
        main: opts.output.clone(),
        sidecar: None,
        fold_seconds: 0.0,
        fold_macs: 0.0,
    };
    let split = opts.split_tables && meki.is_some();
    if opts.split_tables && meki.is_none() {
        say("--split-tables: the checkpoint has no MeKi tensors; writing the backbone only".into());
    }

    // The main file.
    let main_path = opts.output.clone();
    let same_as_base = opts.base.as_ref().is_some_and(|b| same_file(b, &main_path));
    if !(split && same_as_base) {
        if same_as_base {
            return Err(
                "-o names the --base file; without --split-tables the output must be a new file"
                    .into(),
            );
        }
        let mut w = GgufWriter::create(&main_path).map_err(out_err(&main_path))?;
        match &base {
            Some(b) => w.copy_metadata(b.metadata()).map_err(out_err(&main_path))?,
            None => {
                for (k, v) in &metadata {
                    w.add_kv(k, v.clone()).map_err(out_err(&main_path))?;
                }
            }
        }
        if !split {
            for (k, v) in &meki_kv {
                w.set_kv(k, v.clone()).map_err(out_err(&main_path))?;
            }
        }
        // Declare.
        match &base {
            Some(b) => {
                for ti in b.tensors() {
                    w.add_tensor_info(&ti.name, &ti.dims, ti.ggml_type)
                        .map_err(out_err(&main_path))?;
                }
            }
            None => {
                for (o, &ty) in outs.iter().zip(&types) {
                    w.add_tensor_info(&o.name, &o.dims, ty)
                        .map_err(out_err(&main_path))?;
                }
            }
        }
        if let (false, Some(mp)) = (split, &meki_part) {
            mp.declare(&mut w).map_err(out_err(&main_path))?;
        }
        // Data.
        match &base {
            Some(b) => {
                for ti in b.tensors() {
                    let data = b.tensor_data(ti).map_err(|e| e.to_string())?;
                    w.write_tensor(&ti.name, data)
                        .map_err(out_err(&main_path))?;
                }
            }
            None => {
                for (i, (o, &ty)) in outs.iter().zip(&types).enumerate() {
                    write_out(&ck, o, ty, &mut w)?;
                    if opts.progress {
                        eprint!("\rbackbone: {}/{} tensors", i + 1, outs.len());
                    }
                }
                if opts.progress {
                    eprintln!();
                }
            }
        }
        if let (false, Some(mp)) = (split, &meki_part) {
            mp.write(&ck, &mut w, opts.progress, &mut report)?;
        }
        w.finish().map_err(out_err(&main_path))?;
        say(format!("wrote {}", main_path.display()));
    }

    if split {
        let main_file =
            GgufFile::open(&main_path).map_err(|e| format!("{}: {e}", main_path.display()))?;
        let id = mk::identity::backbone_id(&main_file)?;
        drop(main_file);
        let side = mk::sidecar_path(&main_path);
        let mut w = GgufWriter::create(&side).map_err(out_err(&side))?;
        w.add_kv("general.type", "meki-tables")
            .map_err(out_err(&side))?;
        for (k, v) in &meki_kv {
            w.add_kv(k, v.clone()).map_err(out_err(&side))?;
        }
        w.add_kv(mk::KEY_BACKBONE_ID, Value::String(id))
            .map_err(out_err(&side))?;
        if let Some(mp) = &meki_part {
            mp.declare(&mut w).map_err(out_err(&side))?;
            mp.write(&ck, &mut w, opts.progress, &mut report)?;
        }
        w.finish().map_err(out_err(&side))?;
        say(format!("wrote {}", side.display()));
        report.sidecar = Some(side);
    }
    if let Some(rss) = peak_rss_mib() {
        say(format!("peak RSS {rss:.0} MiB"));
    }
    Ok(report)
}

fn out_err(p: &Path) -> impl Fn(crate::gguf::GgufError) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The base GGUF must be this checkpoint's backbone shape.
fn check_base(b: &GgufFile, hp: &checkpoint::Hparams, n_vocab: usize) -> Result<(), String> {
    let md = b.metadata();
    let arch = md
        .get_str("general.architecture")
        .map_err(|e| e.to_string())?;
    let get = |k: &str| {
        md.get_uint(&format!("{arch}.{k}"))
            .map_err(|e| e.to_string())
    };
    let n_layer = get("block_count")? as usize;
    let d = get("embedding_length")? as usize;
    if n_layer != hp.n_layer || d != hp.n_embd {
        return Err(format!(
            "--base: {n_layer} layers of width {d}, the checkpoint has {} of width {}",
            hp.n_layer, hp.n_embd
        ));
    }
    let emb = b
        .tensor("token_embd.weight")
        .ok_or("--base: no token_embd.weight")?;
    let rows = emb.dims.get(1).copied().unwrap_or(0) as usize;
    if rows != n_vocab {
        return Err(format!(
            "--base: token_embd has {rows} rows, the checkpoint's vocabulary is {n_vocab}"
        ));
    }
    if b.tensors()
        .iter()
        .any(|t| mk::identity::is_meki_tensor(&t.name))
    {
        return Err("--base already holds MeKi tensors".into());
    }
    Ok(())
}

/// Loads, converts and writes one tensor.
fn write_out(
    ck: &Checkpoint,
    o: &OutTensor,
    ty: GgmlType,
    w: &mut GgufWriter,
) -> Result<(), String> {
    let loaded = ck
        .load_rows(o.part, o.rows)
        .map_err(|e| format!("{}: {e}", o.name))?;
    let ne0 = o.dims[0] as usize;
    let expect: u64 = o.dims.iter().product();
    if loaded.data.len() as u64 != expect {
        return Err(format!(
            "{}: {} values loaded, {} expected for {:?}",
            o.name,
            loaded.data.len(),
            expect,
            o.dims
        ));
    }
    let data = match o.permute_heads {
        Some(h) => permute_rows(&loaded.data, h, ne0),
        None => loaded.data,
    };
    let n_bytes =
        crate::gguf::tensor_n_bytes(&o.dims, ty).map_err(|e| format!("{}: {e}", o.name))? as usize;
    let mut buf = vec![0u8; n_bytes];
    quant::convert_rows(
        GgmlType::F32,
        bytemuck::cast_slice(&data),
        ty,
        &mut buf,
        ne0,
    )
    .map_err(|e| format!("{}: {e}", o.name))?;
    w.write_tensor(&o.name, &buf)
        .map_err(|e| format!("{}: {e}", o.name))
}

/// The MeKi tensors of one conversion: per-layer projections (typed by the
/// backbone's quantization mix) and the folded token-major table. Written
/// into the main file, or into the sidecar with `--split-tables`.
struct MekiPart {
    outs: Vec<OutTensor>,
    types: Vec<GgmlType>,
    spec: MekiSpec,
    n_layer: usize,
    n_vocab: usize,
    table_ty: GgmlType,
}

impl MekiPart {
    fn declare(&self, w: &mut GgufWriter) -> crate::gguf::Result<()> {
        for (o, &ty) in self.outs.iter().zip(&self.types) {
            w.add_tensor_info(&o.name, &o.dims, ty)?;
        }
        w.add_tensor_info(
            mk::TENSOR_TABLE,
            &[(self.n_layer * self.spec.d_mem) as u64, self.n_vocab as u64],
            self.table_ty,
        )
    }

    /// Writes the projections, then folds and writes the table in blocks
    /// of vocabulary rows, with a progress line per layer.
    fn write(
        &self,
        ck: &Checkpoint,
        w: &mut GgufWriter,
        progress: bool,
        report: &mut ConvertReport,
    ) -> Result<(), String> {
        let (m, n_vocab, table_ty) = (self.spec, self.n_vocab, self.table_ty);
        for (o, &ty) in self.outs.iter().zip(&self.types) {
            write_out(ck, o, ty, w)?;
        }
        let n_layer = ck.hp.n_layer;
        let row = n_layer * m.d_mem;
        let row_bytes = table_ty.row_bytes(row as u64).ok_or("table row size")? as usize;
        // Blocks of vocabulary rows: ~128 MiB of f32 results at a time.
        let block = ((128usize << 20) / (row * 4)).clamp(fold::ROWS_PER_TASK, 16384);
        let mut out = vec![0f32; block * row];
        let mut bytes = vec![0u8; block * row_bytes];
        let mut sink = w
            .tensor_writer(mk::TENSOR_TABLE)
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let d = ck.hp.n_embd as f64;
        let per_row = if m.variant.has_dynamic() {
            1.5 * d * d + d / 2.0 * m.d_mem as f64
        } else {
            0.0
        };
        for v0 in (0..n_vocab).step_by(block) {
            let n = block.min(n_vocab - v0);
            fold::fold_block(ck, m, v0, n, &mut out, |l| {
                if progress {
                    eprint!(
                        "\rfold: rows {v0}..{} of {n_vocab}, layer {}/{n_layer}   ",
                        v0 + n,
                        l + 1
                    );
                }
            })?;
            quant::convert_rows(
                GgmlType::F32,
                bytemuck::cast_slice(&out[..n * row]),
                table_ty,
                &mut bytes[..n * row_bytes],
                row,
            )?;
            sink.write_all(&bytes[..n * row_bytes])
                .map_err(|e| e.to_string())?;
        }
        sink.finish().map_err(|e| e.to_string())?;
        report.fold_seconds = t0.elapsed().as_secs_f64();
        report.fold_macs = per_row * n_vocab as f64 * n_layer as f64;
        if progress {
            eprintln!(
                "\rfold: {n_vocab} rows x {n_layer} layers in {:.2} s ({:.1} GFLOP/s)        ",
                report.fold_seconds,
                2.0 * report.fold_macs / report.fold_seconds.max(1e-9) / 1e9
            );
        }
        Ok(())
    }
}
