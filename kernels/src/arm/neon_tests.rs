//! Tests of the NEON tiles (compiled for aarch64 tests only): every
//! [`crate::dot::GemmFn`] result and every one-row [`crate::dot::DotFn`]
//! result equals, bit for bit, the one-row kernels as they were before the
//! tiles (kept below as the reference), for both `I8Dot` implementations, on
//! every tile shape and edge (1..=9 rows, 1..=17 tokens), odd block counts,
//! float tails, and unaligned, padded row strides.
#![allow(clippy::needless_range_loop)]

use super::*;
use crate::dot::{act_row_bytes, dot_fn, gemm_fn, DotFn};

// ---- the one-row kernels before the tiles (reference) ----------------------

#[inline(always)]
unsafe fn row_q4_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ4_0 && x.len() >= n / QK * BQ8_0);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    let s8 = vdupq_n_s8(8);
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ4_0), xp.add(i * BQ8_0));
        let (lo, hi) = nibbles(wb.add(2));
        let p = D::dot(vdupq_n_s32(0), vsubq_s8(lo, s8), ld_s8(xb.add(2)));
        let p = D::dot(p, vsubq_s8(hi, s8), ld_s8(xb.add(18)));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), f16_at(wb) * f16_at(xb));
    }
    vaddvq_f32(acc)
}

#[inline(always)]
unsafe fn row_q5_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ5_0 && x.len() >= n / QK * BQ8_0);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    let s16 = vdupq_n_s8(16);
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ5_0), xp.add(i * BQ8_0));
        let (h0, h1) = high_bits_32(wb.add(2));
        let (lo, hi) = nibbles(wb.add(6));
        let lo = vsubq_s8(vorrq_s8(lo, h0), s16);
        let hi = vsubq_s8(vorrq_s8(hi, h1), s16);
        let p = D::dot(vdupq_n_s32(0), lo, ld_s8(xb.add(2)));
        let p = D::dot(p, hi, ld_s8(xb.add(18)));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), f16_at(wb) * f16_at(xb));
    }
    vaddvq_f32(acc)
}

#[inline(always)]
unsafe fn row_q8_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ8_0 && x.len() >= n / QK * BQ8_0);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ8_0), xp.add(i * BQ8_0));
        let p = D::dot(vdupq_n_s32(0), ld_s8(wb.add(2)), ld_s8(xb.add(2)));
        let p = D::dot(p, ld_s8(wb.add(18)), ld_s8(xb.add(18)));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), f16_at(wb) * f16_at(xb));
    }
    vaddvq_f32(acc)
}

/// Sum over the 8 sub-blocks of min * (bsums of its two 16-groups).
#[inline(always)]
unsafe fn row_mins_dot_bsums(mins: [u32; 2], bsums: *const u8) -> i32 {
    let b0 = vld1q_s16(bsums as *const i16);
    let b1 = vld1q_s16((bsums as *const i16).add(8));
    let pairs = vpaddq_s16(b0, b1);
    let m = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(
        mins[0] as u64 | (mins[1] as u64) << 32,
    )));
    let p = vmull_s16(vget_low_s16(m), vget_low_s16(pairs));
    let p = vmlal_high_s16(p, m, pairs);
    vaddvq_s32(p)
}

#[inline(always)]
unsafe fn row_q4_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ4K && x.len() >= n / QK_K * BQ8K);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(0x0F);
    for i in 0..n / QK_K {
        let (wb, xb) = (wp.add(i * BQ4K), xp.add(i * BQ8K));
        let yd = f32_at(xb);
        let s = unpack_scales_k4(std::slice::from_raw_parts(wb.add(4), 12));
        let summ = row_mins_dot_bsums([s[2], s[3]], xb.add(4 + QK_K));
        let sc = [s[0].to_le_bytes(), s[1].to_le_bytes()];
        let (q4, q8) = (wb.add(16), xb.add(4));
        let mut isum = vdupq_n_s32(0);
        for j in 0..QK_K / 64 {
            let b0 = vld1q_u8(q4.add(32 * j));
            let b1 = vld1q_u8(q4.add(32 * j + 16));
            let y = q8.add(64 * j);
            let lo = D::dot(
                vdupq_n_s32(0),
                vreinterpretq_s8_u8(vandq_u8(b0, m4)),
                ld_s8(y),
            );
            let lo = D::dot(lo, vreinterpretq_s8_u8(vandq_u8(b1, m4)), ld_s8(y.add(16)));
            let hi = D::dot(
                vdupq_n_s32(0),
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(b0)),
                ld_s8(y.add(32)),
            );
            let hi = D::dot(
                hi,
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(b1)),
                ld_s8(y.add(48)),
            );
            isum = vmlaq_n_s32(isum, lo, sc[j / 2][(2 * j) % 4] as i32);
            isum = vmlaq_n_s32(isum, hi, sc[j / 2][(2 * j + 1) % 4] as i32);
        }
        sum += (yd * f16_at(wb)) * vaddvq_s32(isum) as f32 - (yd * f16_at(wb.add(2))) * summ as f32;
    }
    sum
}

#[inline(always)]
unsafe fn row_q5_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ5K && x.len() >= n / QK_K * BQ8K);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(0x0F);
    let m16 = vdupq_n_u8(0x10);
    for i in 0..n / QK_K {
        let (wb, xb) = (wp.add(i * BQ5K), xp.add(i * BQ8K));
        let yd = f32_at(xb);
        let s = unpack_scales_k4(std::slice::from_raw_parts(wb.add(4), 12));
        let summ = row_mins_dot_bsums([s[2], s[3]], xb.add(4 + QK_K));
        let sc = [s[0].to_le_bytes(), s[1].to_le_bytes()];
        let qh0 = vld1q_u8(wb.add(16));
        let qh1 = vld1q_u8(wb.add(32));
        let (q5, q8) = (wb.add(48), xb.add(4));
        let mut isum = vdupq_n_s32(0);
        for j in 0..QK_K / 64 {
            let b0 = vld1q_u8(q5.add(32 * j));
            let b1 = vld1q_u8(q5.add(32 * j + 16));
            let u1 = vdupq_n_u8(1 << (2 * j));
            let u2 = vdupq_n_u8(2 << (2 * j));
            let l0 = vorrq_u8(vandq_u8(b0, m4), vandq_u8(vtstq_u8(qh0, u1), m16));
            let l1 = vorrq_u8(vandq_u8(b1, m4), vandq_u8(vtstq_u8(qh1, u1), m16));
            let h0 = vorrq_u8(vshrq_n_u8::<4>(b0), vandq_u8(vtstq_u8(qh0, u2), m16));
            let h1 = vorrq_u8(vshrq_n_u8::<4>(b1), vandq_u8(vtstq_u8(qh1, u2), m16));
            let y = q8.add(64 * j);
            let lo = D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(l0), ld_s8(y));
            let lo = D::dot(lo, vreinterpretq_s8_u8(l1), ld_s8(y.add(16)));
            let hi = D::dot(vdupq_n_s32(0), vreinterpretq_s8_u8(h0), ld_s8(y.add(32)));
            let hi = D::dot(hi, vreinterpretq_s8_u8(h1), ld_s8(y.add(48)));
            isum = vmlaq_n_s32(isum, lo, sc[j / 2][(2 * j) % 4] as i32);
            isum = vmlaq_n_s32(isum, hi, sc[j / 2][(2 * j + 1) % 4] as i32);
        }
        sum += (yd * f16_at(wb)) * vaddvq_s32(isum) as f32 - (yd * f16_at(wb.add(2))) * summ as f32;
    }
    sum
}

#[inline(always)]
unsafe fn row_q6_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ6K && x.len() >= n / QK_K * BQ8K);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(0x0F);
    let m3 = vdupq_n_u8(0x30);
    let s32 = vdupq_n_s8(32);
    for i in 0..n / QK_K {
        let (wb, xb) = (wp.add(i * BQ6K), xp.add(i * BQ8K));
        let sc = std::slice::from_raw_parts(wb.add(192) as *const i8, 16);
        let mut isum = vdupq_n_s32(0);
        for h in 0..2 {
            let ql = wb.add(64 * h);
            let qh = wb.add(128 + 32 * h);
            let y = xb.add(4 + 128 * h);
            for k in 0..2 {
                let a = vld1q_u8(ql.add(16 * k));
                let b = vld1q_u8(ql.add(32 + 16 * k));
                let hb = vld1q_u8(qh.add(16 * k));
                let q = [
                    vorrq_u8(vandq_u8(a, m4), vandq_u8(vshlq_n_u8::<4>(hb), m3)),
                    vorrq_u8(vandq_u8(b, m4), vandq_u8(vshlq_n_u8::<2>(hb), m3)),
                    vorrq_u8(vshrq_n_u8::<4>(a), vandq_u8(hb, m3)),
                    vorrq_u8(vshrq_n_u8::<4>(b), vandq_u8(vshrq_n_u8::<2>(hb), m3)),
                ];
                for (g, qg) in q.into_iter().enumerate() {
                    let v = vsubq_s8(vreinterpretq_s8_u8(qg), s32);
                    let p = D::dot(vdupq_n_s32(0), v, ld_s8(y.add(32 * g + 16 * k)));
                    isum = vmlaq_n_s32(isum, p, sc[8 * h + 2 * g + k] as i32);
                }
            }
        }
        sum += (f32_at(xb) * f16_at(wb.add(208))) * vaddvq_s32(isum) as f32;
    }
    sum
}

/// Float rows (the previous one-row kernel): `load` turns 8 weights at a byte pointer into two f32x4.
#[inline(always)]
unsafe fn row_dot_float(
    n: usize,
    w: *const u8,
    wsize: usize,
    x: *const f32,
    load: unsafe fn(*const u8) -> (float32x4_t, float32x4_t),
    one: unsafe fn(*const u8) -> f32,
) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (a0, a1) = load(w.add(wsize * i));
        let (a2, a3) = load(w.add(wsize * (i + 8)));
        acc[0] = vfmaq_f32(acc[0], a0, vld1q_f32(x.add(i)));
        acc[1] = vfmaq_f32(acc[1], a1, vld1q_f32(x.add(i + 4)));
        acc[2] = vfmaq_f32(acc[2], a2, vld1q_f32(x.add(i + 8)));
        acc[3] = vfmaq_f32(acc[3], a3, vld1q_f32(x.add(i + 12)));
        i += 16;
    }
    let mut s = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    while i < n {
        s += one(w.add(wsize * i)) * x.add(i).read_unaligned();
        i += 1;
    }
    s
}

#[inline(always)]
unsafe fn row_load_f32x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    (
        vld1q_f32(p as *const f32),
        vld1q_f32((p as *const f32).add(4)),
    )
}

#[inline(always)]
unsafe fn row_load_bf16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p as *const u16);
    (
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

unsafe fn row_bf16_at(p: *const u8) -> f32 {
    f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
}

unsafe fn row_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    row_dot_float(
        n,
        w.as_ptr(),
        4,
        x.as_ptr() as *const f32,
        row_load_f32x8,
        f32_at,
    )
}

unsafe fn row_f16(n: usize, w: &[u8], x: &[u8]) -> f32 {
    row_dot_float(
        n,
        w.as_ptr(),
        2,
        x.as_ptr() as *const f32,
        load_f16x8,
        f16_at,
    )
}

unsafe fn row_bf16(n: usize, w: &[u8], x: &[u8]) -> f32 {
    row_dot_float(
        n,
        w.as_ptr(),
        2,
        x.as_ptr() as *const f32,
        row_load_bf16x8,
        row_bf16_at,
    )
}

macro_rules! row_entries {
    ($($imp:ident => $dp:ident, $nodp:ident;)*) => {$(
        #[target_feature(enable = "dotprod")]
        unsafe fn $dp(n: usize, w: &[u8], x: &[u8]) -> f32 {
            $imp::<Sdot>(n, w, x)
        }
        unsafe fn $nodp(n: usize, w: &[u8], x: &[u8]) -> f32 {
            $imp::<Widen>(n, w, x)
        }
    )*};
}

row_entries! {
    row_q4_0 => row_q4_0_dp, row_q4_0_nodp;
    row_q5_0 => row_q5_0_dp, row_q5_0_nodp;
    row_q8_0 => row_q8_0_dp, row_q8_0_nodp;
    row_q4_k => row_q4_k_dp, row_q4_k_nodp;
    row_q5_k => row_q5_k_dp, row_q5_k_nodp;
    row_q6_k => row_q6_k_dp, row_q6_k_nodp;
}

/// The reference one-row kernel of `ty` for `isa`.
fn row_ref(isa: Isa, ty: GgmlType) -> DotFn {
    let dp = isa == Isa::Neon;
    match (ty, dp) {
        (GgmlType::Q4_0, true) => row_q4_0_dp,
        (GgmlType::Q4_0, false) => row_q4_0_nodp,
        (GgmlType::Q5_0, true) => row_q5_0_dp,
        (GgmlType::Q5_0, false) => row_q5_0_nodp,
        (GgmlType::Q8_0, true) => row_q8_0_dp,
        (GgmlType::Q8_0, false) => row_q8_0_nodp,
        (GgmlType::Q4K, true) => row_q4_k_dp,
        (GgmlType::Q4K, false) => row_q4_k_nodp,
        (GgmlType::Q5K, true) => row_q5_k_dp,
        (GgmlType::Q5K, false) => row_q5_k_nodp,
        (GgmlType::Q6K, true) => row_q6_k_dp,
        (GgmlType::Q6K, false) => row_q6_k_nodp,
        (GgmlType::F32, _) => row_f32,
        (GgmlType::F16, _) => row_f16,
        (GgmlType::BF16, _) => row_bf16,
        _ => panic!("no reference for {ty}"),
    }
}

// ---- test data -------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// A random f16 of magnitude in [2^-10, 2^-2], random sign.
    fn scale(&mut self) -> [u8; 2] {
        let s = 2f32.powf(-10.0 + 4.0 * (self.f32() + 1.0))
            * if self.next() & 1 == 1 { -1.0 } else { 1.0 };
        half::f16::from_f32(s).to_le_bytes()
    }
}

/// A weight row of `n` elements of `ty`: random quants, sane scales.
fn weight_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    match ty {
        GgmlType::F32 => (0..n).for_each(|_| v.extend((rng.f32() * 4.0).to_le_bytes())),
        GgmlType::F16 => {
            (0..n).for_each(|_| v.extend(half::f16::from_f32(rng.f32() * 4.0).to_le_bytes()))
        }
        GgmlType::BF16 => {
            (0..n).for_each(|_| v.extend(half::bf16::from_f32(rng.f32() * 4.0).to_le_bytes()))
        }
        _ => {
            let bs = ty.type_size();
            v = (0..n / ty.block_size() * bs)
                .map(|_| rng.next() as u8)
                .collect();
            for b in v.chunks_exact_mut(bs) {
                match ty {
                    GgmlType::Q6K => b[208..210].copy_from_slice(&rng.scale()),
                    GgmlType::Q4K | GgmlType::Q5K => {
                        b[0..2].copy_from_slice(&rng.scale());
                        b[2..4].copy_from_slice(&rng.scale());
                    }
                    _ => b[0..2].copy_from_slice(&rng.scale()),
                }
            }
        }
    }
    v
}

/// An activation row for `ty` (f32 bytes, or quantized by the NEON quantizer).
fn act_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
    let mut out = vec![0u8; act_row_bytes(ty, n).unwrap()];
    // SAFETY: `n` is a whole number of blocks and `out` one activation row.
    unsafe {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => quantize_q8_0(&x, &mut out),
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => quantize_q8_k(&x, &mut out),
            _ => out.copy_from_slice(bytemuck::cast_slice(&x)),
        }
    }
    out
}

// ---- the check -------------------------------------------------------------

const MAX_ROWS: usize = 9;
const MAX_TOKS: usize = 17;

/// Every (rows, tokens) shape up to 9 x 17 against the reference, for both
/// NEON families available here. Rows are `row bytes + 3` apart and
/// activations `+ 5` (unaligned), outputs `rows + 2` apart: the padding must
/// stay untouched.
fn check(ty: GgmlType, n: usize, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let rb = ty.row_bytes(n as u64).unwrap() as usize;
    let ab = act_row_bytes(ty, n).unwrap();
    let (ws, xs) = (rb + 3, ab + 5);
    let mut wbuf = vec![0xA5u8; 1 + MAX_ROWS * ws];
    for r in 0..MAX_ROWS {
        wbuf[1 + r * ws..1 + r * ws + rb].copy_from_slice(&weight_row(&mut rng, ty, n));
    }
    let mut xbuf = vec![0x5Au8; 3 + MAX_TOKS * xs];
    for t in 0..MAX_TOKS {
        xbuf[3 + t * xs..3 + t * xs + ab].copy_from_slice(&act_row(&mut rng, ty, n));
    }
    let wrow = |r: usize| &wbuf[1 + r * ws..1 + r * ws + rb];
    let xrow = |t: usize| &xbuf[3 + t * xs..3 + t * xs + ab];
    for isa in [Isa::Neon, Isa::NeonNoDotprod] {
        if !isa.is_available() {
            eprintln!("{isa} not available here: not tested");
            continue;
        }
        let (dot, gemm, row) = (
            dot_fn(isa, ty).unwrap(),
            gemm_fn(isa, ty).unwrap(),
            row_ref(isa, ty),
        );
        let mut want = [[0f32; MAX_ROWS]; MAX_TOKS];
        for t in 0..MAX_TOKS {
            for r in 0..MAX_ROWS {
                // SAFETY: one row of each type, `n` a whole number of blocks,
                // `isa` available (checked above).
                let (a, b) = unsafe { (row(n, wrow(r), xrow(t)), dot(n, wrow(r), xrow(t))) };
                assert!(a.is_finite(), "{ty} {isa} n={n}: reference {a}");
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{ty} {isa} n={n} dot ({t},{r}): {b} vs reference {a}"
                );
                want[t][r] = a;
            }
        }
        for rows in 1..=MAX_ROWS {
            for toks in 1..=MAX_TOKS {
                let ys = rows + 2;
                let mut y = vec![f32::NAN; toks * ys];
                // SAFETY: `rows` weight rows `ws` bytes apart and `toks`
                // activation rows `xs` bytes apart lie inside the buffers;
                // `y` holds `toks * ys` outputs.
                unsafe {
                    gemm(
                        n,
                        wbuf.as_ptr().add(1),
                        ws,
                        rows,
                        xbuf.as_ptr().add(3),
                        xs,
                        toks,
                        y.as_mut_ptr(),
                        ys,
                    )
                };
                for t in 0..toks {
                    for r in 0..ys {
                        let got = y[t * ys + r];
                        if r >= rows {
                            assert!(
                                got.is_nan(),
                                "{ty} {isa} {rows}x{toks}: wrote padding ({t},{r})"
                            );
                            continue;
                        }
                        assert_eq!(
                            got.to_bits(),
                            want[t][r].to_bits(),
                            "{ty} {isa} n={n} {rows} rows x {toks} tokens at ({t},{r}): {got} vs {}",
                            want[t][r]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn q8_0_family_tiles_equal_row_kernels() {
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        for nb in [1usize, 3, 7] {
            check(ty, nb * QK, 10 + nb as u64 + ty as u64);
        }
    }
}

#[test]
fn k_quant_tiles_equal_row_kernels() {
    for ty in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        for nb in [1usize, 3] {
            check(ty, nb * QK_K, 20 + nb as u64 + ty as u64);
        }
    }
}

#[test]
fn float_tiles_equal_row_kernels() {
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for n in [5usize, 16, 37, 70] {
            check(ty, n, 30 + n as u64 + ty as u64);
        }
    }
}

/// Q8_0 weights of -128 against activations of -128 (products of 2^14, the
/// `smull` limit) stay exact in both families.
#[test]
fn q8_0_extremes_equal_row_kernels() {
    let nb = 3;
    let mut w = vec![0x80u8; nb * BQ8_0];
    let mut x = vec![0x80u8; nb * BQ8_0];
    for b in 0..nb {
        w[b * BQ8_0..b * BQ8_0 + 2].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        x[b * BQ8_0..b * BQ8_0 + 2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    }
    let want = (nb * QK) as f32 * 128.0 * 128.0 * 0.125;
    for isa in [Isa::Neon, Isa::NeonNoDotprod]
        .into_iter()
        .filter(|i| i.is_available())
    {
        let gemm = gemm_fn(isa, GgmlType::Q8_0).unwrap();
        let mut y = [0f32; 2];
        // SAFETY: one row each (strides 0: the same row twice as two tokens).
        unsafe {
            gemm(
                nb * QK,
                w.as_ptr(),
                0,
                1,
                x.as_ptr(),
                0,
                2,
                y.as_mut_ptr(),
                1,
            )
        };
        assert_eq!(y, [want; 2], "{isa}");
    }
}

/// A fixed workload for counting executed instructions under
/// `qemu-aarch64 -singlestep -d exec,nochain` (not a check): every tiled
/// type, both families, `KNEON_TOKS` tokens (default 8) x 8 rows through the
/// tiles, then the same pairs through the one-row dots.
#[test]
#[ignore]
fn instruction_count_workload() {
    let toks: usize = std::env::var("KNEON_TOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rows = 8;
    let mut rng = Rng(12345);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::F16,
    ] {
        let n = 1024;
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let ab = act_row_bytes(ty, n).unwrap();
        let w: Vec<u8> = (0..rows)
            .flat_map(|_| weight_row(&mut rng, ty, n))
            .collect();
        let x: Vec<u8> = (0..toks).flat_map(|_| act_row(&mut rng, ty, n)).collect();
        for isa in [Isa::Neon, Isa::NeonNoDotprod]
            .into_iter()
            .filter(|i| i.is_available())
        {
            let (dot, gemm) = (dot_fn(isa, ty).unwrap(), gemm_fn(isa, ty).unwrap());
            let mut y = vec![0f32; rows * toks];
            // SAFETY: `rows` weight rows and `toks` activation rows of `n`
            // elements, `y` holds all outputs.
            unsafe {
                gemm(
                    n,
                    w.as_ptr(),
                    rb,
                    rows,
                    x.as_ptr(),
                    ab,
                    toks,
                    y.as_mut_ptr(),
                    rows,
                )
            };
            for t in 0..toks {
                for r in 0..rows {
                    // SAFETY: as above, one row each.
                    let d = unsafe { dot(n, &w[r * rb..(r + 1) * rb], &x[t * ab..(t + 1) * ab]) };
                    assert_eq!(d.to_bits(), y[t * rows + r].to_bits());
                }
            }
        }
    }
}
