//! Tensor-level quantization: ggml block formats applied to whole GGUF tensors,
//! and llama.cpp's per-tensor type choice for the q4_k_m / q5_k_m mixes.
//!
//! [`quantize_file`] is `meki-convert quantize`: like `llama-quantize` without
//! an importance matrix, it reads a GGUF (F32/F16/BF16 or already quantized
//! weights, dequantized first), picks a type per tensor ([`mix`]), converts
//! rows in parallel with the reference quantizers of
//! [`crate::kernels::formats`] (so the bytes equal llama-quantize's), and
//! streams each tensor to a [`GgufWriter`]: peak memory is the mapped input
//! plus one bounded slab of output rows, never the whole model.

// `u64::is_multiple_of` needs Rust 1.87; the workspace MSRV is 1.80.
#![allow(clippy::manual_is_multiple_of)]

pub mod mix;
pub mod synth;

use crate::gguf::{GgufFile, GgufWriter, TensorInfo, Value};
use crate::kernels::formats::{self, GgmlType};
use rayon::prelude::*;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

pub use mix::{LlamaFtype, ModelInfo, TensorDesc};

/// llama.cpp's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Upper bound of output bytes converted per parallel step (per tensor slab).
const SLAB_BYTES: usize = 16 << 20;

/// Options of `meki-convert quantize` (also its command line: the doc
/// comments are the `--help` text).
#[derive(Clone, Debug, clap::Args)]
pub struct QuantizeOptions {
    /// Input GGUF (F32/F16/BF16 weights, or already quantized).
    pub input: PathBuf,
    /// Output GGUF (written to a temporary file, renamed when complete).
    pub output: PathBuf,
    /// Target: f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m, q5_k_m.
    #[arg(value_name = "TYPE")]
    pub target: String,
    /// Use TYPE for every 2-D tensor (no mix: embedding and output too).
    #[arg(long)]
    pub pure: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// MeKi table type: f32, f16 or q8_0 (default: keep the input's; the
    /// table never takes TYPE, it lives in storage).
    #[arg(long, value_name = "T", value_parser = crate::convert::parse_table_type)]
    pub table_type: Option<GgmlType>,
    /// MeKi projection type (blk.N.meki_gate / meki_out): f32, f16, bf16,
    /// q8_0, q5_0, q5_1, q4_0 or q4_1 (default: as any 2-D tensor of TYPE;
    /// their rows are only d and d_mem long, so no 256-element k-quant).
    #[arg(long, value_name = "T", value_parser = parse_meki_proj_type)]
    pub meki_proj_type: Option<GgmlType>,
}

/// A `--meki-proj-type` value: the float and 32-element block types (a
/// MeKi output row is `d_mem` long, e.g. 64: no 256-element k-quant fits).
pub fn parse_meki_proj_type(s: &str) -> Result<GgmlType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" => Ok(GgmlType::F32),
        "f16" => Ok(GgmlType::F16),
        "bf16" => Ok(GgmlType::BF16),
        "q8_0" => Ok(GgmlType::Q8_0),
        "q5_0" => Ok(GgmlType::Q5_0),
        "q5_1" => Ok(GgmlType::Q5_1),
        "q4_0" => Ok(GgmlType::Q4_0),
        "q4_1" => Ok(GgmlType::Q4_1),
        other => Err(format!(
            "--meki-proj-type {other:?}: expected f32, f16, bf16, q8_0, q5_0, q5_1, q4_0 or q4_1"
        )),
    }
}

/// Whether `name` is a MeKi projection (`blk.N.meki_gate.weight` or
/// `blk.N.meki_out.weight`).
pub fn is_meki_projection(name: &str) -> bool {
    name.starts_with("blk.")
        && (name.ends_with(".meki_gate.weight") || name.ends_with(".meki_out.weight"))
}

/// What [`quantize_file`] did to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// ggml's lower-case type names as llama.cpp prints them (`q4_K`, `bf16`).
pub fn ggml_type_name(t: GgmlType) -> String {
    t.name().to_ascii_lowercase().replace("_k", "_K")
}

/// Converts whole rows of `n_per_row` values from `src_ty` bytes to `dst_ty`
/// bytes (dequantize to f32 first, then the reference quantizer), rows in
/// parallel on the current rayon pool. Same type: a plain copy.
pub fn convert_rows(
    src_ty: GgmlType,
    src: &[u8],
    dst_ty: GgmlType,
    dst: &mut [u8],
    n_per_row: usize,
) -> Result<(), String> {
    let src_row = src_ty
        .row_bytes(n_per_row as u64)
        .ok_or_else(|| format!("rows of {n_per_row} are not whole {src_ty} blocks"))?
        as usize;
    let dst_row = dst_ty
        .row_bytes(n_per_row as u64)
        .ok_or_else(|| format!("rows of {n_per_row} are not whole {dst_ty} blocks"))?
        as usize;
    if src_row == 0 || src.len() % src_row != 0 || dst.len() != src.len() / src_row * dst_row {
        return Err(format!(
            "{} bytes of {src_ty} -> {} bytes of {dst_ty}: not the same number of rows of {n_per_row}",
            src.len(),
            dst.len()
        ));
    }
    if src_ty == dst_ty {
        dst.copy_from_slice(src);
        return Ok(());
    }
    for (ty, what) in [(src_ty, "dequantize"), (dst_ty, "quantize")] {
        let ok = if what == "dequantize" {
            formats::can_dequantize(ty)
        } else {
            formats::can_quantize(ty)
        };
        if !ok {
            return Err(format!("cannot {what} {ty}"));
        }
    }
    src.par_chunks(src_row)
        .zip(dst.par_chunks_mut(dst_row))
        .try_for_each_init(
            || vec![0f32; n_per_row],
            |buf, (s, d)| {
                formats::dequantize_row(src_ty, s, buf).map_err(|e| e.to_string())?;
                formats::quantize_row(dst_ty, buf, d).map_err(|e| e.to_string())
            },
        )
}

fn model_info(file: &GgufFile) -> ModelInfo {
    let md = file.metadata();
    let arch = md.get_str("general.architecture").unwrap_or("").to_string();
    let get = |k: &str| md.get_uint(&format!("{arch}.{k}")).unwrap_or(0) as usize;
    ModelInfo {
        n_layer: get("block_count"),
        n_expert: get("expert_count"),
        arch,
    }
}

/// The type [`quantize_file`] would give each tensor of `file` (file order).
pub fn plan_file(file: &GgufFile, ftype: LlamaFtype, pure: bool) -> Vec<GgmlType> {
    let descs: Vec<TensorDesc> = file
        .tensors()
        .iter()
        .map(|t| TensorDesc {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    mix::plan_types(&descs, &model_info(file), ftype, pure)
}

/// Quantize a GGUF file (see `meki-convert quantize --help`), printing one
/// progress line per tensor to stderr.
pub fn quantize_file(opts: &QuantizeOptions) -> Result<(), String> {
    quantize_file_report(opts, true).map(|_| ())
}

/// [`quantize_file`], returning what was done per tensor; `progress` prints
/// the per-tensor lines.
pub fn quantize_file_report(
    opts: &QuantizeOptions,
    progress: bool,
) -> Result<Vec<TensorReport>, String> {
    let ftype = LlamaFtype::parse(&opts.target).ok_or_else(|| {
        format!(
            "unknown quantization type {:?} (expected one of: {})",
            opts.target,
            LlamaFtype::NAMES
        )
    })?;
    let input = GgufFile::open(&opts.input).map_err(|e| e.to_string())?;
    let mut types = plan_file(&input, ftype, opts.pure);
    for (t, ty) in input.tensors().iter().zip(types.iter_mut()) {
        if t.name == crate::meki::TENSOR_TABLE {
            *ty = opts.table_type.unwrap_or(t.ggml_type);
        } else if is_meki_projection(&t.name) {
            if let Some(p) = opts.meki_proj_type {
                *ty = p;
            }
        }
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| format!("thread pool: {e}"))?;

    let out_err = |e: crate::gguf::GgufError| format!("{}: {e}", opts.output.display());
    let mut w = GgufWriter::create(&opts.output).map_err(out_err)?;
    w.copy_metadata(input.metadata()).map_err(out_err)?;
    w.set_kv(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    )
    .map_err(out_err)?;
    w.set_kv("general.file_type", Value::U32(ftype.id()))
        .map_err(out_err)?;
    for key in ["split.no", "split.count", "split.tensors.count"] {
        w.remove_kv(key).map_err(out_err)?;
    }
    for (t, &ty) in input.tensors().iter().zip(&types) {
        w.add_tensor_info(&t.name, &t.dims, ty).map_err(out_err)?;
    }

    let n = input.tensors().len();
    let started = Instant::now();
    let mut reports = Vec::with_capacity(n);
    let (mut total_in, mut total_out) = (0u64, 0u64);
    for (i, (t, &ty)) in input.tensors().iter().zip(&types).enumerate() {
        let t0 = Instant::now();
        let bytes_out = write_tensor(&input, t, ty, &mut w, &pool)
            .map_err(|e| format!("tensor {:?}: {e}", t.name))?;
        total_in += t.n_bytes;
        total_out += bytes_out;
        if progress {
            let shape: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
            eprintln!(
                "[{:>w$}/{n}] {:<36} {:>5} -> {:<5} {:>12}  {:8.2} MiB -> {:8.2} MiB  {:6.0} ms",
                i + 1,
                t.name,
                ggml_type_name(t.ggml_type),
                ggml_type_name(ty),
                shape.join("x"),
                t.n_bytes as f64 / 1048576.0,
                bytes_out as f64 / 1048576.0,
                t0.elapsed().as_secs_f64() * 1e3,
                w = n.to_string().len(),
            );
        }
        reports.push(TensorReport {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.ggml_type,
            to: ty,
            bytes_in: t.n_bytes,
            bytes_out,
        });
    }
    w.finish().map_err(out_err)?;
    if progress {
        eprintln!(
            "quantized {n} tensors to {} ({}): {:.2} MiB -> {:.2} MiB in {:.2} s",
            opts.target,
            opts.output.display(),
            total_in as f64 / 1048576.0,
            total_out as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(reports)
}

/// Streams one tensor to the writer, converting slab by slab; returns the
/// bytes written.
fn write_tensor(
    input: &GgufFile,
    t: &TensorInfo,
    ty: GgmlType,
    w: &mut GgufWriter,
    pool: &rayon::ThreadPool,
) -> Result<u64, String> {
    let data = input.tensor_data(t).map_err(|e| e.to_string())?;
    if ty == t.ggml_type {
        w.write_tensor(&t.name, data).map_err(|e| e.to_string())?;
        return Ok(t.n_bytes);
    }
    let ne0 = t.dims[0];
    let rows = t.dims[1..].iter().product::<u64>() as usize;
    let src_row = t.ggml_type.row_bytes(ne0).ok_or_else(|| {
        format!(
            "ne0 = {ne0} is not a whole number of {} blocks",
            t.ggml_type
        )
    })? as usize;
    let dst_row = ty.row_bytes(ne0).ok_or_else(|| {
        format!(
            "ne0 = {ne0} is not a multiple of the {} block size {}",
            ty,
            ty.block_size()
        )
    })? as usize;
    let rows_per_slab = (SLAB_BYTES / dst_row.max(1)).clamp(1, rows.max(1));
    let mut buf = vec![0u8; rows_per_slab * dst_row];
    let mut sink = w.tensor_writer(&t.name).map_err(|e| e.to_string())?;
    let mut written = 0u64;
    for r0 in (0..rows).step_by(rows_per_slab) {
        let nr = rows_per_slab.min(rows - r0);
        let src = &data[r0 * src_row..(r0 + nr) * src_row];
        let dst = &mut buf[..nr * dst_row];
        pool.install(|| convert_rows(t.ggml_type, src, ty, dst, ne0 as usize))?;
        sink.write_all(dst).map_err(|e| e.to_string())?;
        written += dst.len() as u64;
    }
    sink.finish().map_err(|e| e.to_string())?;
    Ok(written)
}
