//! Scalar reference dot products of a weight row with an activation row.
//!
//! Like ggml's `ggml_vec_dot_*_generic`: per block the integer sum of products
//! is exact (i32), and is then scaled by the block's float scales and added to
//! an f32 total in block order. Float rows accumulate in f64.
//!
//! Rows are byte slices at any address: blocks are copied out with
//! `pod_read_unaligned` (cheap; this path is the reference, not the fast one).
//! Callers guarantee `n` is a multiple of the block size and the slices hold
//! `n` elements (checked by [`crate::dot::vec_dot`]).

use crate::formats::*;
use bytemuck::{pod_read_unaligned, Pod};
use half::{bf16, f16};

fn blocks<T: Pod>(bytes: &[u8], count: usize) -> impl Iterator<Item = T> + '_ {
    let sz = std::mem::size_of::<T>();
    bytes[..count * sz]
        .chunks_exact(sz)
        .map(pod_read_unaligned::<T>)
}

fn i8_dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Q4_0 quants of one block as signed values, in element order.
pub fn unpack_q4_0(b: &BlockQ4_0) -> [i8; QK] {
    let mut q = [0i8; QK];
    for j in 0..QK / 2 {
        q[j] = (b.qs[j] & 0x0F) as i8 - 8;
        q[j + QK / 2] = (b.qs[j] >> 4) as i8 - 8;
    }
    q
}

pub fn unpack_q4_1(b: &BlockQ4_1) -> [i8; QK] {
    let mut q = [0i8; QK];
    for j in 0..QK / 2 {
        q[j] = (b.qs[j] & 0x0F) as i8;
        q[j + QK / 2] = (b.qs[j] >> 4) as i8;
    }
    q
}

fn unpack_q5(qs: &[u8; 16], qh: [u8; 4], offset: i8) -> [i8; QK] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0i8; QK];
    for j in 0..QK / 2 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        q[j] = ((qs[j] & 0x0F) | (h0 << 4)) as i8 - offset;
        q[j + QK / 2] = ((qs[j] >> 4) | (h1 << 4)) as i8 - offset;
    }
    q
}

pub fn unpack_q5_0(b: &BlockQ5_0) -> [i8; QK] {
    unpack_q5(&b.qs, b.qh, 16)
}

pub fn unpack_q5_1(b: &BlockQ5_1) -> [i8; QK] {
    unpack_q5(&b.qs, b.qh, 0)
}

/// The 6-bit (scale, min) pair `j` (0..8) of a Q4_K/Q5_K super-block.
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

const KMASK1: u32 = 0x3f3f3f3f;
const KMASK2: u32 = 0x0f0f0f0f;
const KMASK3: u32 = 0x03030303;

/// The 12 packed bytes of Q4_K/Q5_K -> [scales 0..8 | mins 0..8] as bytes.
/// (The NEON kernels' helper; AVX2 unpacks in vector registers.)
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn unpack_scales_k4(p: &[u8]) -> [u32; 4] {
    let r = |i: usize| u32::from_le_bytes([p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]]);
    let (u0, u1, u2) = (r(0), r(1), r(2));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

/// Q4_K quants (0..15) in element order.
pub fn unpack_q4_k(b: &BlockQ4K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for j in 0..QK_K / 64 {
        for l in 0..32 {
            q[64 * j + l] = b.qs[32 * j + l] & 0x0F;
            q[64 * j + 32 + l] = b.qs[32 * j + l] >> 4;
        }
    }
    q
}

/// Q5_K quants (0..31) in element order.
pub fn unpack_q5_k(b: &BlockQ5K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for j in 0..QK_K / 64 {
        for l in 0..32 {
            let h0 = (b.qh[l] >> (2 * j)) & 1;
            let h1 = (b.qh[l] >> (2 * j + 1)) & 1;
            q[64 * j + l] = (b.qs[32 * j + l] & 0x0F) | (h0 << 4);
            q[64 * j + 32 + l] = (b.qs[32 * j + l] >> 4) | (h1 << 4);
        }
    }
    q
}

/// Q6_K quants as signed values (-32..31) in element order.
pub fn unpack_q6_k(b: &BlockQ6K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for n in 0..2 {
        let (ql, qh) = (&b.ql[64 * n..], &b.qh[32 * n..]);
        let out = &mut q[128 * n..];
        for l in 0..32 {
            out[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            out[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    q
}

pub fn dot_q4_0_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ4_0>(w, nb).zip(blocks::<BlockQ8_0>(x, nb)) {
        let sumi = i8_dot(&unpack_q4_0(&a), &b.qs);
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

pub fn dot_q4_1_q8_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ4_1>(w, nb).zip(blocks::<BlockQ8_1>(x, nb)) {
        let sumi = i8_dot(&unpack_q4_1(&a), &b.qs);
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32()) + a.m.to_f32() * b.s.to_f32();
    }
    sum
}

pub fn dot_q5_0_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ5_0>(w, nb).zip(blocks::<BlockQ8_0>(x, nb)) {
        let sumi = i8_dot(&unpack_q5_0(&a), &b.qs);
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

pub fn dot_q5_1_q8_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ5_1>(w, nb).zip(blocks::<BlockQ8_1>(x, nb)) {
        let sumi = i8_dot(&unpack_q5_1(&a), &b.qs);
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32()) + a.m.to_f32() * b.s.to_f32();
    }
    sum
}

pub fn dot_q8_0_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ8_0>(w, nb).zip(blocks::<BlockQ8_0>(x, nb)) {
        let sumi = i8_dot(&a.qs, &b.qs);
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

pub fn dot_q4_k_q8_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK_K;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ4K>(w, nb).zip(blocks::<BlockQ8K>(x, nb)) {
        let q = unpack_q4_k(&a);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &a.scales);
            let r = 32 * j..32 * j + 32;
            let d: i32 = q[r.clone()]
                .iter()
                .zip(&b.qs[r])
                .map(|(&u, &v)| u as i32 * v as i32)
                .sum();
            sumi += sc as i32 * d;
            summ += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
        }
        sum += (a.d.to_f32() * b.d) * sumi as f32 - (a.dmin.to_f32() * b.d) * summ as f32;
    }
    sum
}

pub fn dot_q5_k_q8_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK_K;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ5K>(w, nb).zip(blocks::<BlockQ8K>(x, nb)) {
        let q = unpack_q5_k(&a);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &a.scales);
            let r = 32 * j..32 * j + 32;
            let d: i32 = q[r.clone()]
                .iter()
                .zip(&b.qs[r])
                .map(|(&u, &v)| u as i32 * v as i32)
                .sum();
            sumi += sc as i32 * d;
            summ += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
        }
        sum += (a.d.to_f32() * b.d) * sumi as f32 - (a.dmin.to_f32() * b.d) * summ as f32;
    }
    sum
}

pub fn dot_q6_k_q8_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let nb = n / QK_K;
    let mut sum = 0f32;
    for (a, b) in blocks::<BlockQ6K>(w, nb).zip(blocks::<BlockQ8K>(x, nb)) {
        let q = unpack_q6_k(&a);
        let mut sumi = 0i32;
        for j in 0..QK_K / 16 {
            let r = 16 * j..16 * j + 16;
            sumi += a.scales[j] as i32 * i8_dot(&q[r.clone()], &b.qs[r]);
        }
        sum += (a.d.to_f32() * b.d) * sumi as f32;
    }
    sum
}

pub fn dot_f32_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    blocks::<f32>(w, n)
        .zip(blocks::<f32>(x, n))
        .map(|(a, b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

pub fn dot_f16_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    blocks::<f16>(w, n)
        .zip(blocks::<f32>(x, n))
        .map(|(a, b)| a.to_f64() * b as f64)
        .sum::<f64>() as f32
}

pub fn dot_bf16_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    blocks::<bf16>(w, n)
        .zip(blocks::<f32>(x, n))
        .map(|(a, b)| a.to_f64() * b as f64)
        .sum::<f64>() as f32
}
