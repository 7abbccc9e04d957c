//! Shared test helpers: a small deterministic RNG, random rows of every
//! format, and f64 dequantizers written from ggml's `dequantize_row_*`.
#![allow(dead_code)]

use bytemuck::pod_read_unaligned;
use half::{bf16, f16};
use meki_kernels::formats::*;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A random f16 scale of magnitude in [2^-10, 2^-2] with random sign.
fn scale(rng: &mut Rng, signed: bool) -> [u8; 2] {
    let mag = 2f32.powf(-10.0 + 8.0 * (rng.f32() + 1.0) / 2.0);
    let s = if signed && rng.next_u64() & 1 == 1 {
        -mag
    } else {
        mag
    };
    f16::from_f32(s).to_le_bytes()
}

/// A random weight row of `nb` blocks of `ty`: random quants, sane scales.
pub fn random_weights(rng: &mut Rng, ty: GgmlType, nb: usize) -> Vec<u8> {
    let bs = ty.type_size();
    let mut v = rng.bytes(nb * bs);
    for b in v.chunks_exact_mut(bs) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                b[0..2].copy_from_slice(&scale(rng, true));
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => {
                b[0..2].copy_from_slice(&scale(rng, true));
                b[2..4].copy_from_slice(&scale(rng, true));
            }
            GgmlType::Q6K => b[208..210].copy_from_slice(&scale(rng, true)),
            GgmlType::F32 => b.copy_from_slice(&(rng.f32() * 4.0).to_le_bytes()),
            GgmlType::F16 => b.copy_from_slice(&f16::from_f32(rng.f32() * 4.0).to_le_bytes()),
            GgmlType::BF16 => b.copy_from_slice(&bf16::from_f32(rng.f32() * 4.0).to_le_bytes()),
            _ => panic!("no random weights for {ty}"),
        }
    }
    v
}

/// A random Q8_0/Q8_1/Q8_K activation row built directly (quants in
/// [-127,127], consistent `s` / `bsums`), not through a quantizer.
pub fn random_q8(rng: &mut Rng, act: GgmlType, nb: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..nb {
        match act {
            GgmlType::Q8_0 => {
                let mut b = BlockQ8_0 {
                    d: f16::from_f32(0.01 + rng.f32().abs()),
                    qs: [0; QK],
                };
                b.qs.iter_mut()
                    .for_each(|q| *q = (rng.below(255) as i32 - 127) as i8);
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
            GgmlType::Q8_1 => {
                let d = 0.01 + rng.f32().abs();
                let mut b = BlockQ8_1 {
                    d: f16::from_f32(d),
                    s: f16::ZERO,
                    qs: [0; QK],
                };
                b.qs.iter_mut()
                    .for_each(|q| *q = (rng.below(255) as i32 - 127) as i8);
                let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
                b.s = f16::from_f32(sum as f32 * d);
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
            GgmlType::Q8K => {
                let mut b = BlockQ8K {
                    d: 0.001 + rng.f32().abs(),
                    qs: [0; QK_K],
                    bsums: [0; 16],
                };
                b.qs.iter_mut()
                    .for_each(|q| *q = (rng.below(255) as i32 - 127) as i8);
                for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                    *s = g.iter().map(|&q| q as i16).sum();
                }
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
            _ => panic!("not a q8 type: {act}"),
        }
    }
    out
}

/// Dequantized weights as (a, b) with value a - b: `a` the scaled quant and
/// `b` the min / offset part (0 for formats without one), so that error bounds
/// can use |a| + |b| (the kernels compute the two parts separately).
pub fn dequant_weights(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    let bs = ty.type_size();
    let h = |x: f16| x.to_f64();
    for c in bytes[..n / ty.block_size() * bs].chunks_exact(bs) {
        match ty {
            GgmlType::Q4_0 => {
                let b: BlockQ4_0 = pod_read_unaligned(c);
                let lo = b.qs.map(|q| (q & 15) as f64 - 8.0);
                let hi = b.qs.map(|q| (q >> 4) as f64 - 8.0);
                out.extend(lo.iter().chain(&hi).map(|q| (h(b.d) * q, 0.0)));
            }
            GgmlType::Q4_1 => {
                let b: BlockQ4_1 = pod_read_unaligned(c);
                let lo = b.qs.map(|q| (q & 15) as f64);
                let hi = b.qs.map(|q| (q >> 4) as f64);
                out.extend(lo.iter().chain(&hi).map(|q| (h(b.d) * q, -h(b.m))));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, qh, qs): (f16, f16, [u8; 4], [u8; 16]) = if ty == GgmlType::Q5_0 {
                    let b: BlockQ5_0 = pod_read_unaligned(c);
                    (b.d, f16::ZERO, b.qh, b.qs)
                } else {
                    let b: BlockQ5_1 = pod_read_unaligned(c);
                    (b.d, b.m, b.qh, b.qs)
                };
                let qh = u32::from_le_bytes(qh);
                let off = if ty == GgmlType::Q5_0 { 16.0 } else { 0.0 };
                let mut v = [0f64; 32];
                for j in 0..16 {
                    v[j] = ((qs[j] & 15) as u32 | ((qh >> j) & 1) << 4) as f64 - off;
                    v[j + 16] = ((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as f64 - off;
                }
                out.extend(v.iter().map(|q| (h(d) * q, -h(m))));
            }
            GgmlType::Q8_0 => {
                let b: BlockQ8_0 = pod_read_unaligned(c);
                out.extend(b.qs.iter().map(|&q| (h(b.d) * q as f64, 0.0)));
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (d, dmin, sc, qs, qh) = if ty == GgmlType::Q4K {
                    let b: BlockQ4K = pod_read_unaligned(c);
                    (b.d, b.dmin, b.scales, b.qs, None)
                } else {
                    let b: BlockQ5K = pod_read_unaligned(c);
                    (b.d, b.dmin, b.scales, b.qs, Some(b.qh))
                };
                // get_scale_min_k4
                let sm = |j: usize| -> (f64, f64) {
                    if j < 4 {
                        ((sc[j] & 63) as f64, (sc[j + 4] & 63) as f64)
                    } else {
                        (
                            ((sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4)) as f64,
                            ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)) as f64,
                        )
                    }
                };
                for j in 0..4 {
                    let (s1, m1) = sm(2 * j);
                    let (s2, m2) = sm(2 * j + 1);
                    let hb = |l: usize, bit: usize| {
                        qh.map_or(0.0, |qh| (((qh[l] >> bit) & 1) * 16) as f64)
                    };
                    for l in 0..32 {
                        let q = (qs[32 * j + l] & 15) as f64 + hb(l, 2 * j);
                        out.push((h(d) * s1 * q, h(dmin) * m1));
                    }
                    for l in 0..32 {
                        let q = (qs[32 * j + l] >> 4) as f64 + hb(l, 2 * j + 1);
                        out.push((h(d) * s2 * q, h(dmin) * m2));
                    }
                }
            }
            GgmlType::Q6K => {
                let b: BlockQ6K = pod_read_unaligned(c);
                let mut v = [(0f64, 0f64); 256];
                for n in 0..2 {
                    for l in 0..32 {
                        let (ql, qh) = (&b.ql[64 * n..], b.qh[32 * n + l]);
                        let sc = |k: usize| b.scales[8 * n + l / 16 + k] as f64 * h(b.d);
                        let q1 = ((ql[l] & 15) | (qh & 3) << 4) as f64 - 32.0;
                        let q2 = ((ql[l + 32] & 15) | ((qh >> 2) & 3) << 4) as f64 - 32.0;
                        let q3 = ((ql[l] >> 4) | ((qh >> 4) & 3) << 4) as f64 - 32.0;
                        let q4 = ((ql[l + 32] >> 4) | ((qh >> 6) & 3) << 4) as f64 - 32.0;
                        v[128 * n + l] = (sc(0) * q1, 0.0);
                        v[128 * n + l + 32] = (sc(2) * q2, 0.0);
                        v[128 * n + l + 64] = (sc(4) * q3, 0.0);
                        v[128 * n + l + 96] = (sc(6) * q4, 0.0);
                    }
                }
                out.extend_from_slice(&v);
            }
            GgmlType::F32 => out.push((pod_read_unaligned::<f32>(c) as f64, 0.0)),
            GgmlType::F16 => out.push((pod_read_unaligned::<f16>(c).to_f64(), 0.0)),
            GgmlType::BF16 => out.push((pod_read_unaligned::<bf16>(c).to_f64(), 0.0)),
            _ => panic!("no dequantizer for {ty}"),
        }
    }
    out
}

/// Dequantized activations; for Q8_1 also the per-block stored sums `s`.
pub fn dequant_act(act: GgmlType, bytes: &[u8], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = Vec::with_capacity(n);
    let mut sums = Vec::new();
    let bs = act.type_size();
    for c in bytes[..n / act.block_size() * bs].chunks_exact(bs) {
        match act {
            GgmlType::Q8_0 => {
                let b: BlockQ8_0 = pod_read_unaligned(c);
                v.extend(b.qs.iter().map(|&q| b.d.to_f64() * q as f64));
            }
            GgmlType::Q8_1 => {
                let b: BlockQ8_1 = pod_read_unaligned(c);
                v.extend(b.qs.iter().map(|&q| b.d.to_f64() * q as f64));
                sums.push(b.s.to_f64());
            }
            GgmlType::Q8K => {
                let b: BlockQ8K = pod_read_unaligned(c);
                v.extend(b.qs.iter().map(|&q| b.d as f64 * q as f64));
            }
            GgmlType::F32 => v.push(pod_read_unaligned::<f32>(c) as f64),
            _ => panic!("not an activation type: {act}"),
        }
    }
    (v, sums)
}

/// The exact dot product in f64, and the magnitude sum used in error bounds.
/// The min part of Q4_1/Q5_1 multiplies the stored block sum `s` (that is
/// what the format defines), not the sum of the dequantized activations.
pub fn exact_dot(ty: GgmlType, w: &[u8], x: &[u8], n: usize) -> (f64, f64) {
    let act = meki_kernels::vec_dot_type(ty).unwrap();
    let wv = dequant_weights(ty, w, n);
    let (xv, sums) = dequant_act(act, x, n);
    let (mut dot, mut mag) = (0f64, 0f64);
    for (i, (&(a, b), &xi)) in wv.iter().zip(&xv).enumerate() {
        dot += a * xi;
        mag += (a * xi).abs();
        if sums.is_empty() {
            dot -= b * xi;
            mag += (b * xi).abs();
        } else if i % QK == 0 {
            let s = sums[i / QK];
            dot -= b * s;
            mag += (b * s).abs();
        }
    }
    (dot, mag)
}

/// The bit patterns of `v`, to compare results for bit-for-bit equality
/// (NaN included) with a readable diff.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

pub fn random_f32(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * scale).collect()
}

/// Copies `data` into a fresh buffer at byte offset `off`, returning the
/// buffer (keep it alive) and the range of the copy.
pub fn at_offset(data: &[u8], off: usize) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut v = vec![0xA5u8; data.len() + off + 8];
    v[off..off + data.len()].copy_from_slice(data);
    (v, off..off + data.len())
}
