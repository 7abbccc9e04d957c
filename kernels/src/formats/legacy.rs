//! Reference quantizers and dequantizers of the 32-wide legacy formats
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1), byte-exact with ggml's
//! `quantize_row_*_ref` / `dequantize_row_*` in `ggml-quants.c`.
//!
//! Exactness notes: every f32 operation is done in ggml's order (no fused
//! multiply-add: ggml-base is built without FMA), and float->int casts follow
//! C on x86-64 (`cvttss2si`: truncate, out of range or NaN -> `i32::MIN`, then
//! keep the low byte), see [`c_f32_to_i32`].
//!
//! All functions panic if `x.len()` and `y.len()` disagree
//! (`x.len() == y.len() * 32` for quantizers, the reverse for dequantizers).

use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};

/// C's float -> int conversion as compiled for x86-64 (`cvttss2si`): truncation
/// toward zero, and the "integer indefinite" `i32::MIN` for NaN or out of range.
#[inline]
pub fn c_f32_to_i32(v: f32) -> i32 {
    if v.is_nan() || !(-2147483648.0..2147483648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// `(int8_t)v` / `(uint8_t)v` in C on x86-64: convert, keep the low byte.
#[inline]
fn c_f32_to_i8(v: f32) -> i8 {
    c_f32_to_i32(v) as i8
}

#[inline]
fn check_len(what: &str, n_elems: usize, n_blocks: usize, block: usize) {
    assert_eq!(
        n_elems,
        n_blocks * block,
        "{what}: {n_elems} values for {n_blocks} blocks of {block}"
    );
}

/// Value of largest magnitude (the first one on ties), as `quantize_row_q4_0_ref`.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline]
fn absmax(x: &[f32]) -> f32 {
    // MAX(amax, fabsf(v)) = (amax > |v|) ? amax : |v|
    x.iter().fold(
        0.0f32,
        |amax, &v| if amax > v.abs() { amax } else { v.abs() },
    )
}

#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

pub fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    check_len("quantize_row_q4_0", x.len(), y.len(), QK);
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let d = signed_absmax(xb) / -8.0;
        let id = inverse(d);
        b.d = fp32_to_fp16(d);
        for j in 0..QK / 2 {
            let x0 = xb[j] * id;
            let x1 = xb[QK / 2 + j] * id;
            let xi0 = (c_f32_to_i8(x0 + 8.5) as i32).min(15) as u8;
            let xi1 = (c_f32_to_i8(x1 + 8.5) as i32).min(15) as u8;
            b.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    check_len("dequantize_row_q4_0", y.len(), x.len(), QK);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16_to_fp32(b.d);
        for j in 0..QK / 2 {
            let x0 = (b.qs[j] & 0x0F) as i32 - 8;
            let x1 = (b.qs[j] >> 4) as i32 - 8;
            yb[j] = x0 as f32 * d;
            yb[j + QK / 2] = x1 as f32 * d;
        }
    }
}

pub fn quantize_row_q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    check_len("quantize_row_q4_1", x.len(), y.len(), QK);
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        b.d = fp32_to_fp16(d);
        b.m = fp32_to_fp16(min);
        for j in 0..QK / 2 {
            let x0 = (xb[j] - min) * id;
            let x1 = (xb[QK / 2 + j] - min) * id;
            let xi0 = (c_f32_to_i8(x0 + 0.5) as i32).min(15) as u8;
            let xi1 = (c_f32_to_i8(x1 + 0.5) as i32).min(15) as u8;
            b.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    check_len("dequantize_row_q4_1", y.len(), x.len(), QK);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16_to_fp32(b.d);
        let m = fp16_to_fp32(b.m);
        for j in 0..QK / 2 {
            let x0 = (b.qs[j] & 0x0F) as f32;
            let x1 = (b.qs[j] >> 4) as f32;
            yb[j] = x0 * d + m;
            yb[j + QK / 2] = x1 * d + m;
        }
    }
}

pub fn quantize_row_q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    check_len("quantize_row_q5_0", x.len(), y.len(), QK);
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let d = signed_absmax(xb) / -16.0;
        let id = inverse(d);
        b.d = fp32_to_fp16(d);
        let mut qh: u32 = 0;
        for j in 0..QK / 2 {
            let x0 = xb[j] * id;
            let x1 = xb[QK / 2 + j] * id;
            let xi0 = (c_f32_to_i8(x0 + 16.5) as i32).min(31) as u8;
            let xi1 = (c_f32_to_i8(x1 + 16.5) as i32).min(31) as u8;
            b.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) as u32) >> 4) << j;
            qh |= (((xi1 & 0x10) as u32) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// A Q5_0 block's 32 quants, low nibble plus high bit, minus 16 (-16..=15).
fn q5_0_quants(b: &BlockQ5_0) -> [i8; QK] {
    let qh = u32::from_le_bytes(b.qh);
    let mut q = [0i8; QK];
    for j in 0..QK / 2 {
        let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = (((b.qs[j] & 0x0F) | xh_0) as i32 - 16) as i8;
        q[j + QK / 2] = (((b.qs[j] >> 4) | xh_1) as i32 - 16) as i8;
    }
    q
}

pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    check_len("dequantize_row_q5_0", y.len(), x.len(), QK);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16_to_fp32(b.d);
        for (yv, q) in yb.iter_mut().zip(q5_0_quants(b)) {
            *yv = q as f32 * d;
        }
    }
}

/// Q5_0 blocks rewritten as Q8_0 blocks of exactly the same values: the
/// same f16 scale and the 5-bit quants minus 16 (in -16..=15) as int8. The
/// engine widens small Q5_0 matrices this way to run them through the
/// repacked Q8_0 kernels (a Q5_0 dot reads Q8_0 activations too, so the
/// integer sums per block are the same).
pub fn widen_row_q5_0_to_q8_0(x: &[BlockQ5_0], y: &mut [BlockQ8_0]) {
    check_len("widen_row_q5_0_to_q8_0", y.len() * QK, x.len(), QK);
    for (b, yb) in x.iter().zip(y.iter_mut()) {
        *yb = BlockQ8_0 {
            d: b.d,
            qs: q5_0_quants(b),
        };
    }
}

pub fn quantize_row_q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    check_len("quantize_row_q5_1", x.len(), y.len(), QK);
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        b.d = fp32_to_fp16(d);
        b.m = fp32_to_fp16(min);
        let mut qh: u32 = 0;
        for j in 0..QK / 2 {
            let x0 = (xb[j] - min) * id;
            let x1 = (xb[QK / 2 + j] - min) * id;
            // (uint8_t)(x + 0.5f): no clamp in ggml.
            let xi0 = c_f32_to_i32(x0 + 0.5) as u8;
            let xi1 = c_f32_to_i32(x1 + 0.5) as u8;
            b.qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) as u32) >> 4) << j;
            qh |= (((xi1 & 0x10) as u32) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    check_len("dequantize_row_q5_1", y.len(), x.len(), QK);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16_to_fp32(b.d);
        let m = fp16_to_fp32(b.m);
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((b.qs[j] & 0x0F) | xh_0) as f32;
            let x1 = ((b.qs[j] >> 4) | xh_1) as f32;
            yb[j] = x0 * d + m;
            yb[j + QK / 2] = x1 * d + m;
        }
    }
}

/// Weight format and the activation format paired with Q4_0/Q5_0/Q8_0 dots.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    check_len("quantize_row_q8_0", x.len(), y.len(), QK);
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let d = absmax(xb) / 127.0;
        let id = inverse(d);
        b.d = fp32_to_fp16(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = c_f32_to_i8((v * id).round());
        }
    }
}

pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    check_len("dequantize_row_q8_0", y.len(), x.len(), QK);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16_to_fp32(b.d);
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Activation format paired with Q4_1/Q5_1: like Q8_0 plus `s = f16(sum(qs) * d)`.
pub fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    check_len("quantize_row_q8_1", x.len(), y.len(), QK);
    for (xb, b) in x.chunks_exact(QK).zip(y.iter_mut()) {
        let d = absmax(xb) / 127.0;
        let id = inverse(d);
        b.d = fp32_to_fp16(d);
        let mut sum: i32 = 0;
        for j in 0..QK / 2 {
            let q0 = c_f32_to_i8((xb[j] * id).round());
            let q1 = c_f32_to_i8((xb[QK / 2 + j] * id).round());
            b.qs[j] = q0;
            b.qs[QK / 2 + j] = q1;
            sum += q0 as i32 + q1 as i32;
        }
        b.s = fp32_to_fp16(sum as f32 * d);
    }
}

/// Not in ggml (Q8_1 is never stored); the obvious inverse, `qs * d`.
pub fn dequantize_row_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    check_len("dequantize_row_q8_1", y.len(), x.len(), QK);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16_to_fp32(b.d);
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}
