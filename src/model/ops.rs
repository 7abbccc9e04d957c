//! Numeric building blocks of the forward pass, on f32 activations.
//!
//! `linear` is the only heavy operation; the element-wise ones are cheap and
//! written plainly (the per-token vector kernels of `meki-kernels` replace
//! them where the profile says so).

use super::weights::Weight;
use crate::gguf::GgufFile;
use crate::kernels::formats::{self, GgmlType};
use crate::kernels::{self, ThreadPool};

/// `y[t] = W x[t]` for `n` tokens: `x` is `n x w.cols`, `y` is `n x w.rows`.
/// Runs on the kernels of `meki-kernels` (activations quantized to the
/// weight type's pair, as ggml does), split over the pool's threads by rows.
pub fn linear(pool: &ThreadPool, file: &GgufFile, w: &Weight, x: &[f32], n: usize, y: &mut [f32]) {
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

/// RMSNorm of one row: `x / sqrt(mean(x^2) + eps) * w` (sum in f64 as ggml does).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
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

/// Rotary embedding of one head at position `pos`, ggml's recurrence
/// (`theta *= theta_scale` per pair, cos/sin in f32).
pub fn rope(head: &mut [f32], pos: usize, base: f32, freq_scale: f32, neox: bool) {
    let n = head.len();
    let theta_scale = base.powf(-2.0 / n as f32);
    let mut theta = pos as f32;
    for i in 0..n / 2 {
        let t = freq_scale * theta;
        let (s, c) = t.sin_cos();
        let (a, b) = if neox {
            (i, i + n / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let x0 = head[a];
        let x1 = head[b];
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
        theta *= theta_scale;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
