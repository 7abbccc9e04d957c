//! NEON per-token vector kernels (API and contracts in `crate::vec`; lengths
//! are checked there). `unsafe` only for raw-pointer loads and stores.

use super::neon::{dot_f16_f32, f16_at, load_f16x8};
use std::arch::aarch64::*;

/// exp(x) for 4 lanes, same method and constants as the AVX2 `exp_ps`.
#[inline(always)]
pub(crate) unsafe fn exp_f32x4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-104.0)), vdupq_n_f32(88.8));
    let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.987_569_1e-4);
    p = vfmaq_f32(vdupq_n_f32(1.398_199_9e-3), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.333_452e-3), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.166_579_6e-2), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.666_666_5e-1), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5), p, r);
    let y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), vmulq_f32(p, r), r);
    let ni = vcvtnq_s32_f32(n);
    let n1 = vshrq_n_s32::<1>(ni);
    let n2 = vsubq_s32(ni, n1);
    let bias = vdupq_n_s32(127);
    let s1 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n1, bias)));
    let s2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n2, bias)));
    vmulq_f32(vmulq_f32(y, s1), s2)
}

#[inline(always)]
unsafe fn sigmoid_f32x4(x: float32x4_t) -> float32x4_t {
    let e = exp_f32x4(vnegq_f32(x));
    vdivq_f32(vdupq_n_f32(1.0), vaddq_f32(vdupq_n_f32(1.0), e))
}

/// Applies `f` to 4 lanes at a time, the tail through a padded buffer.
#[inline(always)]
unsafe fn map4(x: &mut [f32], pad: f32, f: impl Fn(float32x4_t) -> float32x4_t) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(p.add(i), f(vld1q_f32(p.add(i))));
        i += 4;
    }
    if i < n {
        let mut t = [pad; 4];
        t[..n - i].copy_from_slice(&x[i..]);
        vst1q_f32(t.as_mut_ptr(), f(vld1q_f32(t.as_ptr())));
        x[i..].copy_from_slice(&t[..n - i]);
    }
}

pub(crate) unsafe fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let xp = x.as_ptr();
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        let a = vld1q_f32(xp.add(i));
        let b = vld1q_f32(xp.add(i + 4));
        acc[0] = vfmaq_f32(acc[0], a, a);
        acc[1] = vfmaq_f32(acc[1], b, b);
        i += 8;
    }
    let mut ss = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for &v in &x[i..] {
        ss += v * v;
    }
    let scale = 1.0 / (ss / n as f32 + eps).sqrt();
    let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= n {
        let v = vmulq_n_f32(vld1q_f32(xp.add(i)), scale);
        vst1q_f32(op.add(i), vmulq_f32(v, vld1q_f32(wp.add(i))));
        i += 4;
    }
    for k in i..n {
        out[k] = x[k] * scale * w[k];
    }
}

pub(crate) unsafe fn add(a: &mut [f32], b: &[f32]) {
    let n = a.len();
    let (ap, bp) = (a.as_mut_ptr(), b.as_ptr());
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(
            ap.add(i),
            vaddq_f32(vld1q_f32(ap.add(i)), vld1q_f32(bp.add(i))),
        );
        i += 4;
    }
    for k in i..n {
        a[k] += b[k];
    }
}

pub(crate) unsafe fn sigmoid(x: &mut [f32]) {
    map4(x, 0.0, |v| sigmoid_f32x4(v));
}

pub(crate) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    out.copy_from_slice(gate);
    map4(out, 0.0, |g| vmulq_f32(g, sigmoid_f32x4(g)));
    add_mul(out, up);
}

unsafe fn add_mul(out: &mut [f32], up: &[f32]) {
    let n = out.len();
    let (op, up_) = (out.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(
            op.add(i),
            vmulq_f32(vld1q_f32(op.add(i)), vld1q_f32(up_.add(i))),
        );
        i += 4;
    }
    for k in i..n {
        out[k] *= up[k];
    }
}

pub(crate) unsafe fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let vmax = vdupq_n_f32(max);
    map4(x, f32::NEG_INFINITY, |v| exp_f32x4(vsubq_f32(v, vmax)));
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        acc = vaddq_f32(acc, vld1q_f32(p.add(i)));
        i += 4;
    }
    let sum = vaddvq_f32(acc) + x[i..].iter().sum::<f32>();
    let inv = 1.0 / sum;
    map4(x, 0.0, |v| vmulq_n_f32(v, inv));
}

pub(crate) unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let (a, b) = load_f16x8(sp.add(2 * i));
        vst1q_f32(dp.add(i), a);
        vst1q_f32(dp.add(i + 4), b);
        i += 8;
    }
    for (k, d) in dst.iter_mut().enumerate().skip(i) {
        *d = f16_at(sp.add(2 * k));
    }
}

pub(crate) unsafe fn q8_0_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, d) in dst.chunks_exact_mut(32).enumerate() {
        let sb = src.as_ptr().add(34 * b);
        let s = f16_at(sb);
        for h in 0..2 {
            let q = vld1q_s8(sb.add(2 + 16 * h) as *const i8);
            let lo = vmovl_s8(vget_low_s8(q));
            let hi = vmovl_high_s8(q);
            let o = d.as_mut_ptr().add(16 * h);
            vst1q_f32(
                o,
                vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), s),
            );
            vst1q_f32(o.add(4), vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), s));
            vst1q_f32(
                o.add(8),
                vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), s),
            );
            vst1q_f32(o.add(12), vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), s));
        }
    }
}

pub(crate) unsafe fn attn_scores(
    q: &[f32],
    keys: &[u8],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    let qb: &[u8] = bytemuck::cast_slice(q);
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_f16_f32(d, &keys[j * stride..j * stride + 2 * d], qb) * scale;
    }
}

pub(crate) unsafe fn attn_weighted_sum(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    let d = out.len();
    out.iter_mut().for_each(|o| *o = 0.0);
    let op = out.as_mut_ptr();
    for (j, &wj) in w.iter().enumerate() {
        let v = values.as_ptr().add(j * stride);
        let mut i = 0;
        while i + 8 <= d {
            let (a, b) = load_f16x8(v.add(2 * i));
            vst1q_f32(op.add(i), vfmaq_n_f32(vld1q_f32(op.add(i)), a, wj));
            vst1q_f32(op.add(i + 4), vfmaq_n_f32(vld1q_f32(op.add(i + 4)), b, wj));
            i += 8;
        }
        for k in i..d {
            *op.add(k) += wj * f16_at(v.add(2 * k));
        }
    }
}

pub(crate) unsafe fn rope_tables(
    x: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    let n_rot = cos.len();
    let half = n_rot / 2;
    let (cp, sp) = (cos.as_ptr(), sin.as_ptr());
    for h in x.chunks_exact_mut(head_dim) {
        let p = h.as_mut_ptr();
        if neox && half.is_multiple_of(4) {
            let mut i = 0;
            while i < half {
                let a = vld1q_f32(p.add(i));
                let b = vld1q_f32(p.add(i + half));
                let ra = vfmaq_f32(vmulq_f32(a, vld1q_f32(cp.add(i))), b, vld1q_f32(sp.add(i)));
                let rb = vfmaq_f32(
                    vmulq_f32(b, vld1q_f32(cp.add(i + half))),
                    a,
                    vld1q_f32(sp.add(i + half)),
                );
                vst1q_f32(p.add(i), ra);
                vst1q_f32(p.add(i + half), rb);
                i += 4;
            }
        } else if !neox && n_rot.is_multiple_of(4) {
            let mut i = 0;
            while i < n_rot {
                let a = vld1q_f32(p.add(i));
                let swapped = vrev64q_f32(a);
                let r = vfmaq_f32(
                    vmulq_f32(a, vld1q_f32(cp.add(i))),
                    swapped,
                    vld1q_f32(sp.add(i)),
                );
                vst1q_f32(p.add(i), r);
                i += 4;
            }
        } else {
            crate::scalar::vec::rope_tables(h, head_dim, cos, sin, neox);
        }
    }
}

pub(crate) unsafe fn attn_tile_scores(
    q: &[f32],
    d: usize,
    keys: &[f32],
    stride: usize,
    s: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(4) {
        return crate::scalar::vec::attn_tile_scores(q, d, keys, stride, s, n);
    }
    let kp = keys.as_ptr();
    for (qi, si) in q.chunks_exact(d).zip(s.chunks_exact_mut(n)) {
        let qp = qi.as_ptr();
        // Two keys per pass: two independent FMA chains per query load.
        let mut j = 0;
        while j + 2 <= n {
            let (k0, k1) = (kp.add(j * stride), kp.add((j + 1) * stride));
            let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            let mut i = 0;
            while i < d {
                let qv = vld1q_f32(qp.add(i));
                a0 = vfmaq_f32(a0, qv, vld1q_f32(k0.add(i)));
                a1 = vfmaq_f32(a1, qv, vld1q_f32(k1.add(i)));
                i += 4;
            }
            si[j] = vaddvq_f32(a0);
            si[j + 1] = vaddvq_f32(a1);
            j += 2;
        }
        if j < n {
            let kj = kp.add(j * stride);
            let mut a = vdupq_n_f32(0.0);
            let mut i = 0;
            while i < d {
                a = vfmaq_f32(a, vld1q_f32(qp.add(i)), vld1q_f32(kj.add(i)));
                i += 4;
            }
            si[j] = vaddvq_f32(a);
        }
    }
}

pub(crate) unsafe fn attn_tile_accumulate(
    p: &[f32],
    values: &[f32],
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(4) {
        return crate::scalar::vec::attn_tile_accumulate(p, values, stride, d, o, n);
    }
    let vp = values.as_ptr();
    for (pi, oi) in p.chunks_exact(n).zip(o.chunks_exact_mut(d)) {
        let op = oi.as_mut_ptr();
        // Four columns per pass, the accumulator in a register over all rows.
        let mut c = 0;
        while c < d {
            let mut a = vld1q_f32(op.add(c));
            for (j, &w) in pi.iter().enumerate() {
                a = vfmaq_n_f32(a, vld1q_f32(vp.add(j * stride + c)), w);
            }
            vst1q_f32(op.add(c), a);
            c += 4;
        }
    }
}

pub(crate) unsafe fn exp_shift_sum(x: &mut [f32], shift: f32) -> f32 {
    let vs = vdupq_n_f32(shift);
    map4(x, f32::NEG_INFINITY, |v| exp_f32x4(vsubq_f32(v, vs)));
    let n = x.len();
    let p = x.as_ptr();
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        acc = vaddq_f32(acc, vld1q_f32(p.add(i)));
        i += 4;
    }
    vaddvq_f32(acc) + x[i..].iter().sum::<f32>()
}

pub(crate) unsafe fn attn_tile_scores_f16(
    q: &[f32],
    d: usize,
    keys: &[u8],
    stride: usize,
    s: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(8) {
        return crate::scalar::vec::attn_tile_scores_f16(q, d, keys, stride, s, n);
    }
    let kp = keys.as_ptr();
    for (qi, si) in q.chunks_exact(d).zip(s.chunks_exact_mut(n)) {
        let qp = qi.as_ptr();
        for (j, o) in si.iter_mut().enumerate() {
            let kj = kp.add(j * stride);
            let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            let mut i = 0;
            while i < d {
                let (k0, k1) = load_f16x8(kj.add(2 * i));
                a0 = vfmaq_f32(a0, vld1q_f32(qp.add(i)), k0);
                a1 = vfmaq_f32(a1, vld1q_f32(qp.add(i + 4)), k1);
                i += 8;
            }
            *o = vaddvq_f32(vaddq_f32(a0, a1));
        }
    }
}

pub(crate) unsafe fn attn_tile_accumulate_f16(
    p: &[f32],
    values: &[u8],
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(8) {
        return crate::scalar::vec::attn_tile_accumulate_f16(p, values, stride, d, o, n);
    }
    let vp = values.as_ptr();
    for (pi, oi) in p.chunks_exact(n).zip(o.chunks_exact_mut(d)) {
        let op = oi.as_mut_ptr();
        // Eight columns per pass, the accumulators in registers over all rows.
        let mut c = 0;
        while c < d {
            let (mut a0, mut a1) = (vld1q_f32(op.add(c)), vld1q_f32(op.add(c + 4)));
            for (j, &w) in pi.iter().enumerate() {
                let (v0, v1) = load_f16x8(vp.add(j * stride + 2 * c));
                a0 = vfmaq_n_f32(a0, v0, w);
                a1 = vfmaq_n_f32(a1, v1, w);
            }
            vst1q_f32(op.add(c), a0);
            vst1q_f32(op.add(c + 4), a1);
            c += 8;
        }
    }
}
