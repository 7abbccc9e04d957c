//! Numeric building blocks of the forward pass, on f32 activations.
//!
//! `linear` is the only heavy operation; the element-wise ones run on the
//! per-token vector kernels of `meki-kernels` (called from `forward.rs`),
//! except a few small ones kept here in plain code.

use super::weights::Weight;
use crate::gguf::GgufFile;
use crate::kernels::formats::{self, GgmlType};
use crate::kernels::repack::{self, Packed};
use crate::kernels::{self, ThreadPool};
use std::cell::RefCell;

/// One token's activations quantized to a weight type's activation type
/// ([`kernels::vec_dot_type`]), kept for the next matrix that reads the same
/// input (Q, K and V; FFN gate, up and the MeKi gate): quantized once, not
/// once per matrix. [`SharedActs::reset`] when the input changes.
/// Repacked matrices share the input's prepared rows
/// ([`Packed::prepare_input`]) the same way, for any number of tokens, one
/// set per activation format ([`Packed::act_kind`]): in a Q4_K_M layer a
/// Q4_K and a Q6_K matrix read the same input in different formats.
#[derive(Default)]
pub struct SharedActs {
    act: Option<GgmlType>,
    bytes: Vec<u8>,
    packed: Vec<PreparedInput>,
}

impl SharedActs {
    pub fn reset(&mut self) {
        self.act = None;
        for p in &mut self.packed {
            p.ready_for = None;
        }
    }

    /// The input `x` (`n` rows) prepared for `p`, prepared now unless an
    /// earlier matrix of the same activation format already did.
    fn prepared_for(&mut self, pool: &ThreadPool, p: &Packed, x: &[f32], n: usize) -> &[u8] {
        let kind = p.act_kind();
        let i = match self.packed.iter().position(|e| e.kind == kind) {
            Some(i) => i,
            None => {
                self.packed.push(PreparedInput {
                    kind,
                    ready_for: None,
                    rows: Vec::new(),
                });
                self.packed.len() - 1
            }
        };
        let e = &mut self.packed[i];
        if e.ready_for != Some((n, p.cols())) {
            prepare(pool, p, x, n, &mut e.rows);
            e.ready_for = Some((n, p.cols()));
        }
        &e.rows
    }
}

/// Prepared input rows of one activation format.
struct PreparedInput {
    kind: GgmlType,
    /// Tokens and columns of `rows`, if ready.
    ready_for: Option<(usize, usize)>,
    rows: Vec<u8>,
}

/// Quantizes and prepares `n` rows of `x` for `p` into `out`, split over the
/// pool by pieces of rows (about four per thread), each written by the
/// thread that takes it.
fn prepare(pool: &ThreadPool, p: &Packed, x: &[f32], n: usize, out: &mut Vec<u8>) {
    let isa = kernels::isa();
    let (ab, cols) = (p.act_row_bytes(), p.cols());
    out.resize(n * ab, 0);
    let per = n.div_ceil(4 * pool.n_threads()).max(1);
    pool.run_chunks_mut(&mut out[..], per * ab, &|piece, rows| {
        let first = piece * per;
        let xs = &x[first * cols..(first + rows.len() / ab) * cols];
        p.prepare_rows(isa, xs, rows)
            .unwrap_or_else(|e| panic!("preparing activations: {e}"));
    });
}

thread_local! {
    /// Input buffer of repacked products that share nothing (`linear_once`).
    static ONCE_ACTS: RefCell<Vec<u8>> = RefCell::default();
}

/// `y = W x` for `n` tokens on a repacked matrix, with prepared rows.
fn linear_packed(pool: &ThreadPool, w: &Weight, p: &Packed, acts: &[u8], n: usize, y: &mut [f32]) {
    if let Err(e) = repack::matmul(kernels::isa(), pool, p, n, acts, y) {
        panic!("linear {}: {e}", w.name);
    }
}

/// `y[t] = W x[t]` for `n` tokens (`x`: `n x w.cols`, `y`: `n x w.rows`),
/// sharing the quantized activations of a single token through `acts`.
pub fn linear(
    pool: &ThreadPool,
    file: &GgufFile,
    w: &Weight,
    x: &[f32],
    n: usize,
    acts: &mut SharedActs,
    y: &mut [f32],
) {
    if let Some(p) = &w.packed {
        let prepared = acts.prepared_for(pool, p, x, n);
        return linear_packed(pool, w, p, prepared, n, y);
    }
    let act = kernels::vec_dot_type(w.ty);
    let act = match act {
        Some(a) if n == 1 && a != GgmlType::F32 => a,
        _ => return linear_once(pool, file, w, x, n, y),
    };
    let isa = kernels::isa();
    if acts.act != Some(act) {
        let len = act.row_bytes(w.cols as u64).expect("shape checked at load") as usize;
        acts.bytes.resize(len, 0);
        kernels::quantize_activations(isa, act, &x[..w.cols], &mut acts.bytes)
            .unwrap_or_else(|e| panic!("linear {}: {e}", w.name));
        acts.act = Some(act);
    }
    let r = kernels::matmul::matvec_quantized(
        isa,
        pool,
        w.bytes(file),
        w.ty,
        w.rows,
        w.cols,
        &acts.bytes,
        y,
    );
    if let Err(e) = r {
        panic!("linear {}: {e}", w.name);
    }
}

/// `y[t] = W x[t]` for `n` tokens: `x` is `n x w.cols`, `y` is `n x w.rows`.
/// Runs on the kernels of `meki-kernels` (activations quantized to the
/// weight type's pair, as ggml does), split over the pool's threads by rows.
pub fn linear_once(
    pool: &ThreadPool,
    file: &GgufFile,
    w: &Weight,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    if let Some(p) = &w.packed {
        return ONCE_ACTS.with(|a| {
            let mut a = a.borrow_mut();
            prepare(pool, p, x, n, &mut a);
            linear_packed(pool, w, p, &a, n, y);
        });
    }
    let bytes = w.bytes(file);
    // Shapes and types were checked at load, so a kernel error is a bug here.
    let r = if n == 1 {
        kernels::matvec(pool, bytes, w.ty, w.rows, w.cols, x, y)
    } else {
        kernels::matmul(pool, bytes, w.ty, w.rows, w.cols, n, x, y)
    };
    if let Err(e) = r {
        panic!("linear {}: {e}", w.name);
    }
}

/// One row of a weight, embedding or MeKi table as f32: F16 and Q8_0 rows
/// on the SIMD converters of [`kernels::vec`] (the same values as the
/// reference dequantizers: one exact conversion or one product per element),
/// other types on [`formats::dequantize_row`].
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F16 => kernels::vec::f16_to_f32(src, dst),
        GgmlType::Q8_0 => kernels::vec::q8_0_to_f32(src, dst),
        // Types and row lengths are checked when the model is loaded.
        _ => formats::dequantize_row(ty, src, dst).expect("weight type and shape checked at load"),
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorizes and keeps rounding error small.
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// In-place RMSNorm of one row.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// Rotation angles (cos, sin) of position `pos` for `n_rot` dimensions,
/// ggml's recurrence (`theta *= theta_scale` per pair, cos/sin in f32).
pub fn rope_angles(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    out: &mut Vec<(f32, f32)>,
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    out.clear();
    for _ in 0..n_rot / 2 {
        let (s, c) = (freq_scale * theta).sin_cos();
        out.push((c, s));
        theta *= theta_scale;
    }
}

/// In-place RMSNorm of each head of `x` (Qwen3's q/k norm).
pub fn rms_norm_heads(x: &mut [f32], head_dim: usize, w: &[f32], eps: f32) {
    for head in x.chunks_exact_mut(head_dim) {
        rms_norm_inplace(head, w, eps);
    }
}
