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
/// ([`repack::prepare_acts`]) the same way, for any number of tokens.
#[derive(Default)]
pub struct SharedActs {
    act: Option<GgmlType>,
    bytes: Vec<u8>,
    /// Tokens and columns of the prepared rows in `packed`, if ready.
    packed_for: Option<(usize, usize)>,
    packed: PackedActs,
}

impl SharedActs {
    pub fn reset(&mut self) {
        self.act = None;
        self.packed_for = None;
    }
}

/// Buffers of a repacked product's input: the Q8_0 rows, then the prepared
/// rows built from them.
#[derive(Default)]
struct PackedActs {
    q8: Vec<u8>,
    prepared: Vec<u8>,
}

impl PackedActs {
    /// Quantizes `n` rows of `cols` (`x`) to Q8_0 and prepares them.
    fn prepare(&mut self, pool: &ThreadPool, x: &[f32], n: usize, cols: usize) {
        let isa = kernels::isa();
        let rb = GgmlType::Q8_0
            .row_bytes(cols as u64)
            .expect("shape checked at load") as usize;
        self.q8.resize(n * rb, 0);
        if n == 1 {
            kernels::quantize_activations(isa, GgmlType::Q8_0, &x[..cols], &mut self.q8)
                .unwrap_or_else(|e| panic!("quantizing activations: {e}"));
        } else {
            // Rows split over the pool: disjoint output rows per item.
            let rows: Vec<std::sync::Mutex<&mut [u8]>> = self
                .q8
                .chunks_exact_mut(rb)
                .map(std::sync::Mutex::new)
                .collect();
            pool.run_chunks(n, &|t| {
                let mut row = rows[t].lock().unwrap_or_else(|e| e.into_inner());
                kernels::quantize_activations(
                    isa,
                    GgmlType::Q8_0,
                    &x[t * cols..(t + 1) * cols],
                    &mut row,
                )
                .unwrap_or_else(|e| panic!("quantizing activations: {e}"));
            });
        }
        repack::prepare_acts(&self.q8, n, cols, &mut self.prepared)
            .unwrap_or_else(|e| panic!("preparing activations: {e}"));
    }
}

thread_local! {
    /// Input buffers of repacked products that share nothing (`linear_once`).
    static ONCE_ACTS: RefCell<PackedActs> = RefCell::default();
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
        if acts.packed_for != Some((n, w.cols)) {
            acts.packed.prepare(pool, x, n, w.cols);
            acts.packed_for = Some((n, w.cols));
        }
        return linear_packed(pool, w, p, &acts.packed.prepared, n, y);
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
            a.prepare(pool, x, n, w.cols);
            linear_packed(pool, w, p, &a.prepared, n, y);
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

/// One row of a weight (or embedding) as f32.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    // Types and row lengths are checked when the model is loaded.
    formats::dequantize_row(ty, src, dst).expect("weight type and shape checked at load");
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
