//! Scalar reference per-token vector kernels (see `crate::vec` for the API).

use crate::formats::{BlockQ8_0, QK};
use half::f16;

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let scale = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

pub fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

pub fn sigmoid(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
}

pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16::from_le_bytes([s[0], s[1]]).to_f32();
    }
}

/// The reference rounding: `f16::from_f32` per value.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s);
    }
}

pub fn q8_0_to_f32(src: &[u8], dst: &mut [f32]) {
    let sz = std::mem::size_of::<BlockQ8_0>();
    for (d, s) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(sz)) {
        let b: BlockQ8_0 = bytemuck::pod_read_unaligned(s);
        let scale = b.d.to_f32();
        d.iter_mut()
            .zip(&b.qs)
            .for_each(|(d, &q)| *d = q as f32 * scale);
    }
}

/// `out[j] = scale * q . k_j` for f16 key rows `k_j` at byte stride `stride`.
pub fn attn_scores(q: &[f32], keys: &[u8], stride: usize, scale: f32, out: &mut [f32]) {
    let d = q.len();
    for (j, o) in out.iter_mut().enumerate() {
        let k = &keys[j * stride..j * stride + 2 * d];
        let s: f64 = q
            .iter()
            .zip(k.chunks_exact(2))
            .map(|(&a, b)| a as f64 * f16::from_le_bytes([b[0], b[1]]).to_f64())
            .sum();
        *o = s as f32 * scale;
    }
}

/// `out = sum_j w[j] * v_j` for f16 value rows `v_j` at byte stride `stride`.
pub fn attn_weighted_sum(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    let d = out.len();
    let mut acc = vec![0f64; d];
    for (j, &wj) in w.iter().enumerate() {
        let v = &values[j * stride..j * stride + 2 * d];
        for (a, b) in acc.iter_mut().zip(v.chunks_exact(2)) {
            *a += wj as f64 * f16::from_le_bytes([b[0], b[1]]).to_f64();
        }
    }
    out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
}

/// Rotates pairs `(x[a], x[b])` by the angles whose cos/sin are given.
/// Normal order pairs `(2i, 2i+1)`, NeoX order `(i, i + n_rot/2)`.
pub fn rope(x: &mut [f32], head_dim: usize, cs: &[(f32, f32)], neox: bool) {
    let half = cs.len();
    for h in x.chunks_exact_mut(head_dim) {
        for (i, &(c, s)) in cs.iter().enumerate() {
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (h[a], h[b]);
            h[a] = x0 * c - x1 * s;
            h[b] = x0 * s + x1 * c;
        }
    }
}

/// Rotation with the tables of `vec::rope_with` (scalar fallback of the
/// SIMD layout; same arithmetic as the SIMD kernels).
pub fn rope_tables(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], neox: bool) {
    let n_rot = cos.len();
    let half = n_rot / 2;
    for h in x.chunks_exact_mut(head_dim) {
        let src: Vec<f32> = h[..n_rot].to_vec();
        for k in 0..n_rot {
            let p = if neox { (k + half) % n_rot } else { k ^ 1 };
            h[k] = src[k] * cos[k] + src[p] * sin[k];
        }
    }
}

/// `x[i] = exp(x[i] - shift)`, returning their sum.
pub fn exp_shift_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - shift).exp();
        sum += *v as f64;
    }
    sum as f32
}

/// `s[i*n + j] = q_i . k_j` (f64 sums) for `r` query rows of `d` and `n`
/// keys, element `i` of key `j` read by `key(j, i)`.
fn tile_scores(q: &[f32], d: usize, s: &mut [f32], n: usize, key: impl Fn(usize, usize) -> f64) {
    for (qi, si) in q.chunks_exact(d).zip(s.chunks_exact_mut(n)) {
        for (j, o) in si.iter_mut().enumerate() {
            *o = qi
                .iter()
                .enumerate()
                .map(|(i, &a)| a as f64 * key(j, i))
                .sum::<f64>() as f32;
        }
    }
}

/// `o_i += sum_j p[i*n + j] v_j` (f64 sums) for `r` rows of `d` and `n`
/// values, element `k` of value `j` read by `value(j, k)`.
fn tile_accumulate(
    p: &[f32],
    d: usize,
    o: &mut [f32],
    n: usize,
    value: impl Fn(usize, usize) -> f64,
) {
    for (pi, oi) in p.chunks_exact(n).zip(o.chunks_exact_mut(d)) {
        for (k, ok) in oi.iter_mut().enumerate() {
            let sum: f64 = pi
                .iter()
                .enumerate()
                .map(|(j, &w)| w as f64 * value(j, k))
                .sum();
            *ok = (*ok as f64 + sum) as f32;
        }
    }
}

/// `s[i*n + j] = q_i . k_j` (f64 sums) for `r` query rows of `d` and `n` keys.
pub fn attn_tile_scores(q: &[f32], d: usize, keys: &[f32], stride: usize, s: &mut [f32], n: usize) {
    tile_scores(q, d, s, n, |j, i| keys[j * stride + i] as f64)
}

/// `o_i += sum_j p[i*n + j] v_j` (f64 sums) for `r` rows of `d` and `n` values.
pub fn attn_tile_accumulate(
    p: &[f32],
    values: &[f32],
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
) {
    tile_accumulate(p, d, o, n, |j, k| values[j * stride + k] as f64)
}

fn f16_at(b: &[u8], i: usize) -> f64 {
    f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f64()
}

/// [`attn_tile_scores`] for f16 keys at byte stride `stride`.
pub fn attn_tile_scores_f16(
    q: &[f32],
    d: usize,
    keys: &[u8],
    stride: usize,
    s: &mut [f32],
    n: usize,
) {
    tile_scores(q, d, s, n, |j, i| f16_at(&keys[j * stride..], i))
}

/// [`attn_tile_accumulate`] for f16 values at byte stride `stride`.
pub fn attn_tile_accumulate_f16(
    p: &[f32],
    values: &[u8],
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
) {
    tile_accumulate(p, d, o, n, |j, k| f16_at(&values[j * stride..], k))
}
