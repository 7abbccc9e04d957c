//! Reference quantizers and dequantizers of the 256-wide k-quant formats
//! (Q4_K, Q5_K, Q6_K, and the activation format Q8_K), byte-exact with
//! ggml's `quantize_row_*_ref` / `dequantize_row_*` in `ggml-quants.c`
//! (the path llama-quantize takes when no importance matrix is given).
//!
//! The scale searches (`make_qkx2_quants` for Q4_K/Q5_K, `make_qx_quants` for
//! Q6_K) are transcribed with the same iteration order and the same f32
//! operation order, because any reassociation changes which candidate scale
//! wins and so changes the bytes. `nearest_int` is ggml's magic-number rounding
//! (round half to even for |x| < 2^22), not `f32::round`.
//!
//! All functions panic if `x.len()` and `y.len()` disagree
//! (`x.len() == y.len() * 256`, the reverse for dequantizers).

use super::float::{fp16_to_fp32, fp32_to_fp16};
use super::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE, QK_K};
use half::f16;

/// ggml `GROUP_MAX_EPS`: below this a group counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: add 1.5 * 2^23 and read the low mantissa bits. Exact
/// round-half-even for |x| <= 4194303; garbage (but the same garbage as ggml)
/// beyond.
#[inline]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

#[inline]
fn check_len(what: &str, n_elems: usize, n_blocks: usize) {
    assert_eq!(
        n_elems,
        n_blocks * QK_K,
        "{what}: {n_elems} values for {n_blocks} blocks of {QK_K}"
    );
}

/// ggml's `make_qkx2_quants`: affine (scale, min) fit of `x` to `0..=nmax`
/// with weighted least squares over `nstep + 1` candidate inverse scales.
/// Returns the scale; writes levels into `l` and `-min` into `the_min`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> f32 {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        *the_min = -min;
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        let mut diff = scale * li as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let w = weights[i];
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// ggml's `make_qx_quants` without importance weights (`qw == NULL`):
/// symmetric fit of `x` to `-nmax..nmax-1`, levels stored offset by `nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = -nmax_f / max;
    if rmse_type == 0 {
        for i in 0..n {
            let li = nearest_int(iscale * x[i]);
            l[i] = (nmax + li.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let mut rmse_type = rmse_type;
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    let weight = |v: f32| -> f32 {
        match rmse_type {
            1 => v * v,
            2 => 1.0,
            3 => v.abs(),
            _ => v.abs().sqrt(),
        }
    };
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (li + nmax) as i8;
        let w = weight(x[i]);
        let lf = li as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let lf = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = weight(v);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let li = nearest_int(iscale * x[i]);
                l[i] = (nmax + li.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j`.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Shared front half of Q4_K/Q5_K: per-32 affine fits, 6-bit packing of the
/// scales and mins, super-block `d`/`dmin`, then the final levels in `l`.
fn quantize_superblock_affine(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> (f16, f16, [u8; K_SCALE_SIZE]) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        scales[j] = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut mins[j],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; K_SCALE_SIZE];
    for j in 0..QK_K / 32 {
        // uint8_t ls = nearest_int(...): C keeps the low byte, then MIN(63, .)
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = fp32_to_fp16(max_scale / 63.0);
    let dmin = fp32_to_fp16(max_min / 63.0);

    for j in 0..QK_K / 32 {
        let (s, m) = get_scale_min_k4(j, &sc);
        let dd = fp16_to_fp32(d) * s as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = fp16_to_fp32(dmin) * m as f32;
        for ii in 0..32 {
            let li = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax);
            l[32 * j + ii] = li as u8;
        }
    }
    (d, dmin, sc)
}

pub fn quantize_row_q4_k(x: &[f32], y: &mut [BlockQ4K]) {
    check_len("quantize_row_q4_k", x.len(), y.len());
    let mut l = [0u8; QK_K];
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, sc) = quantize_superblock_affine(xb, 15, -1.0, 20, &mut l);
        b.d = d;
        b.dmin = dmin;
        b.scales = sc;
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                b.qs[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    }
}

pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    check_len("dequantize_row_q4_k", y.len(), x.len());
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(b.d);
        let min = fp16_to_fp32(b.dmin);
        for c in 0..QK_K / 64 {
            let q = &b.qs[32 * c..32 * c + 32];
            let (s1, m1) = get_scale_min_k4(2 * c, &b.scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (s2, m2) = get_scale_min_k4(2 * c + 1, &b.scales);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let out = &mut yb[64 * c..64 * c + 64];
            for i in 0..32 {
                out[i] = d1 * (q[i] & 0xF) as f32 - m1;
                out[32 + i] = d2 * (q[i] >> 4) as f32 - m2;
            }
        }
    }
}

pub fn quantize_row_q5_k(x: &[f32], y: &mut [BlockQ5K]) {
    check_len("quantize_row_q5_k", x.len(), y.len());
    let mut l = [0u8; QK_K];
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, sc) = quantize_superblock_affine(xb, 31, -0.5, 15, &mut l);
        b.d = d;
        b.dmin = dmin;
        b.scales = sc;
        b.qh = [0; QK_K / 8];
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    b.qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    b.qh[j] |= m2;
                }
                b.qs[32 * c + j] = l1 | (l2 << 4);
            }
            m1 = m1.wrapping_shl(2);
            m2 = m2.wrapping_shl(2);
        }
    }
}

pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    check_len("dequantize_row_q5_k", y.len(), x.len());
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(b.d);
        let min = fp16_to_fp32(b.dmin);
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..QK_K / 64 {
            let ql = &b.qs[32 * c..32 * c + 32];
            let (s1, m1) = get_scale_min_k4(2 * c, &b.scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (s2, m2) = get_scale_min_k4(2 * c + 1, &b.scales);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let out = &mut yb[64 * c..64 * c + 64];
            for i in 0..32 {
                let h1 = if b.qh[i] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[i] & u2 != 0 { 16 } else { 0 };
                out[i] = d1 * ((ql[i] & 0xF) as i32 + h1) as f32 - m1;
                out[32 + i] = d2 * ((ql[i] >> 4) as i32 + h2) as f32 - m2;
            }
            u1 = u1.wrapping_shl(2);
            u2 = u2.wrapping_shl(2);
        }
    }
}

pub fn quantize_row_q6_k(x: &[f32], y: &mut [BlockQ6K]) {
    check_len("quantize_row_q6_k", x.len(), y.len());
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants(
                32,
                &xb[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
                1,
            );
            scales[ib] = scale;
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K {
                ql: [0; QK_K / 2],
                qh: [0; QK_K / 4],
                scales: [0; QK_K / 16],
                d: fp32_to_fp16(0.0),
            };
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = fp32_to_fp16(1.0 / iscale);
        for (bs, &s) in b.scales.iter_mut().zip(&scales) {
            // MIN(127, nearest_int(.)) stored into int8_t: low byte.
            *bs = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = fp16_to_fp32(b.d) * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let li = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (li + 32) as i8;
            }
        }
        for (c, j) in (0..QK_K).step_by(128).enumerate() {
            let ql = &mut b.ql[64 * c..64 * c + 64];
            let qh = &mut b.qh[32 * c..32 * c + 32];
            for i in 0..32 {
                let (a0, a1, a2, a3) = (
                    l[j + i] as u8,
                    l[j + i + 32] as u8,
                    l[j + i + 64] as u8,
                    l[j + i + 96] as u8,
                );
                ql[i] = (a0 & 0xF) | ((a2 & 0xF) << 4);
                ql[i + 32] = (a1 & 0xF) | ((a3 & 0xF) << 4);
                // int8_t >> 4 is arithmetic in C; levels are 0..63 here anyway.
                qh[i] = ((l[j + i] >> 4) as u8)
                    | (((l[j + i + 32] >> 4) as u8) << 2)
                    | (((l[j + i + 64] >> 4) as u8) << 4)
                    | (((l[j + i + 96] >> 4) as u8) << 6);
            }
        }
    }
}

pub fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    check_len("dequantize_row_q6_k", y.len(), x.len());
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16_to_fp32(b.d);
        for c in 0..QK_K / 128 {
            let ql = &b.ql[64 * c..64 * c + 64];
            let qh = &b.qh[32 * c..32 * c + 32];
            let sc = &b.scales[8 * c..8 * c + 8];
            let out = &mut yb[128 * c..128 * c + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                out[l] = d * sc[is] as f32 * q1 as f32;
                out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

/// Activation format paired with the k-quants (`quantize_row_q8_K_ref`):
/// `d = max / -127` of the signed absmax, `qs = min(127, nearest_int(x / d))`,
/// `bsums` = sums of 16 consecutive `qs`. An all-zero block gets `d = 0`,
/// `qs = 0` and (unlike ggml, which leaves them untouched) `bsums = 0`.
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    check_len("quantize_row_q8_k", x.len(), y.len());
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        b.d = 1.0 / iscale;
    }
}

/// `dequantize_row_q8_K`: `d * qs`.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    check_len("dequantize_row_q8_k", y.len(), x.len());
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = b.d * q as f32;
        }
    }
}
