//! AArch64 NEON dot products and activation quantizers.
//!
//! Each quantized dot product exists twice: with the `dotprod` extension
//! (`sdot`, emitted with inline asm because `vdotq_s32` is unstable in Rust)
//! and without it (widening `smull` + pairwise adds). Both compute the same
//! exact i32 lanes, so their results are bit-identical.
//!
//! All functions are `unsafe`: callers pass slices holding `n` elements of
//! their format (`n` a multiple of the block size) and, for the `_dp`
//! variants, have checked [`crate::Isa::Neon`] is available. Loads are
//! unaligned-safe (`ld1` has no alignment requirement).

use crate::formats::*;
use crate::scalar::dot::unpack_scales_k4;
use std::arch::aarch64::*;
use std::arch::asm;

const BQ4_0: usize = std::mem::size_of::<BlockQ4_0>();
const BQ4_1: usize = std::mem::size_of::<BlockQ4_1>();
const BQ5_0: usize = std::mem::size_of::<BlockQ5_0>();
const BQ5_1: usize = std::mem::size_of::<BlockQ5_1>();
const BQ8_0: usize = std::mem::size_of::<BlockQ8_0>();
const BQ8_1: usize = std::mem::size_of::<BlockQ8_1>();
const BQ4K: usize = std::mem::size_of::<BlockQ4K>();
const BQ5K: usize = std::mem::size_of::<BlockQ5K>();
const BQ6K: usize = std::mem::size_of::<BlockQ6K>();
const BQ8K: usize = std::mem::size_of::<BlockQ8K>();

/// A 16-lane i8 dot product accumulated into 4 i32 lanes, lane i holding
/// the products of bytes 4i..4i+3 (both implementations group identically).
pub(crate) trait I8Dot {
    /// # Safety
    /// `Sdot` needs the `dotprod` extension.
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

pub(crate) struct Sdot;
pub(crate) struct Widen;

impl I8Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: only instantiated inside `#[target_feature(enable = "dotprod")]` functions.
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) acc, in(vreg) a, in(vreg) b,
             options(pure, nomem, nostack));
        acc
    }
}

impl I8Dot for Widen {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p1 = vmull_high_s8(a, b);
        // Lane i = bytes 4i..4i+3, exactly as `sdot` groups them.
        vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)))
    }
}

/// f16 bits at `p` (any alignment) to f32.
#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    let r: f32;
    // SAFETY: `fcvt` half->single is base ARMv8 floating point.
    asm!("fcvt {0:s}, {1:h}", out(vreg) r, in(vreg) h as i16, options(pure, nomem, nostack));
    r
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// 8 f16 at `p` -> two f32x4.
#[inline(always)]
pub(crate) unsafe fn load_f16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p as *const u16);
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: `fcvtl`/`fcvtl2` are base ARMv8 Advanced SIMD.
    asm!("fcvtl {0:v}.4s, {2:v}.4h", "fcvtl2 {1:v}.4s, {2:v}.8h", out(vreg) lo, out(vreg) hi,
         in(vreg) h, options(pure, nomem, nostack));
    (lo, hi)
}

#[inline(always)]
unsafe fn ld_s8(p: *const u8) -> int8x16_t {
    vld1q_s8(p as *const i8)
}

/// 16 bytes of nibbles -> (low nibbles, high nibbles) as i8 0..15.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (int8x16_t, int8x16_t) {
    let v = vld1q_u8(p);
    (
        vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)),
    )
}

/// The 5th bits of a Q5_0/Q5_1 block as 0x10 bytes, element order.
#[inline(always)]
unsafe fn high_bits_32(p: *const u8) -> (int8x16_t, int8x16_t) {
    let b = std::slice::from_raw_parts(p, 4);
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bit = vld1q_u8(BIT.as_ptr());
    let b01 = vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1]));
    let b23 = vcombine_u8(vdup_n_u8(b[2]), vdup_n_u8(b[3]));
    let m = vdupq_n_u8(0x10);
    (
        vreinterpretq_s8_u8(vandq_u8(vtstq_u8(b01, bit), m)),
        vreinterpretq_s8_u8(vandq_u8(vtstq_u8(b23, bit), m)),
    )
}

#[inline(always)]
unsafe fn q4_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
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
unsafe fn q4_1<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ4_1 && x.len() >= n / QK * BQ8_1);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    let mut summs = 0f32;
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ4_1), xp.add(i * BQ8_1));
        summs += f16_at(wb.add(2)) * f16_at(xb.add(2));
        let (lo, hi) = nibbles(wb.add(4));
        let p = D::dot(vdupq_n_s32(0), lo, ld_s8(xb.add(4)));
        let p = D::dot(p, hi, ld_s8(xb.add(20)));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), f16_at(wb) * f16_at(xb));
    }
    vaddvq_f32(acc) + summs
}

#[inline(always)]
unsafe fn q5_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
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
unsafe fn q5_1<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ5_1 && x.len() >= n / QK * BQ8_1);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    let mut summs = 0f32;
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ5_1), xp.add(i * BQ8_1));
        summs += f16_at(wb.add(2)) * f16_at(xb.add(2));
        let (h0, h1) = high_bits_32(wb.add(4));
        let (lo, hi) = nibbles(wb.add(8));
        let p = D::dot(vdupq_n_s32(0), vorrq_s8(lo, h0), ld_s8(xb.add(4)));
        let p = D::dot(p, vorrq_s8(hi, h1), ld_s8(xb.add(20)));
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), f16_at(wb) * f16_at(xb));
    }
    vaddvq_f32(acc) + summs
}

#[inline(always)]
unsafe fn q8_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
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
unsafe fn mins_dot_bsums(mins: [u32; 2], bsums: *const u8) -> i32 {
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
unsafe fn q4_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ4K && x.len() >= n / QK_K * BQ8K);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(0x0F);
    for i in 0..n / QK_K {
        let (wb, xb) = (wp.add(i * BQ4K), xp.add(i * BQ8K));
        let yd = f32_at(xb);
        let s = unpack_scales_k4(std::slice::from_raw_parts(wb.add(4), 12));
        let summ = mins_dot_bsums([s[2], s[3]], xb.add(4 + QK_K));
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
unsafe fn q5_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ5K && x.len() >= n / QK_K * BQ8K);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut sum = 0f32;
    let m4 = vdupq_n_u8(0x0F);
    let m16 = vdupq_n_u8(0x10);
    for i in 0..n / QK_K {
        let (wb, xb) = (wp.add(i * BQ5K), xp.add(i * BQ8K));
        let yd = f32_at(xb);
        let s = unpack_scales_k4(std::slice::from_raw_parts(wb.add(4), 12));
        let summ = mins_dot_bsums([s[2], s[3]], xb.add(4 + QK_K));
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
unsafe fn q6_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
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

macro_rules! entries {
    ($($imp:ident => $dp:ident, $nodp:ident;)*) => {$(
        #[target_feature(enable = "dotprod")]
        pub(crate) unsafe fn $dp(n: usize, w: &[u8], x: &[u8]) -> f32 {
            $imp::<Sdot>(n, w, x)
        }
        pub(crate) unsafe fn $nodp(n: usize, w: &[u8], x: &[u8]) -> f32 {
            $imp::<Widen>(n, w, x)
        }
    )*};
}

entries! {
    q4_0 => dot_q4_0_q8_0_dp, dot_q4_0_q8_0;
    q4_1 => dot_q4_1_q8_1_dp, dot_q4_1_q8_1;
    q5_0 => dot_q5_0_q8_0_dp, dot_q5_0_q8_0;
    q5_1 => dot_q5_1_q8_1_dp, dot_q5_1_q8_1;
    q8_0 => dot_q8_0_q8_0_dp, dot_q8_0_q8_0;
    q4_k => dot_q4_k_q8_k_dp, dot_q4_k_q8_k;
    q5_k => dot_q5_k_q8_k_dp, dot_q5_k_q8_k;
    q6_k => dot_q6_k_q8_k_dp, dot_q6_k_q8_k;
}

/// Float rows: `load` turns 8 weights at a byte pointer into two f32x4.
#[inline(always)]
unsafe fn dot_float(
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
unsafe fn load_f32x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    (
        vld1q_f32(p as *const f32),
        vld1q_f32((p as *const f32).add(4)),
    )
}

#[inline(always)]
unsafe fn load_bf16x8(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p as *const u16);
    (
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
        vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
    )
}

unsafe fn bf16_at(p: *const u8) -> f32 {
    f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
}

pub(crate) unsafe fn dot_f32_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && x.len() >= 4 * n);
    dot_float(
        n,
        w.as_ptr(),
        4,
        x.as_ptr() as *const f32,
        load_f32x8,
        f32_at,
    )
}

pub(crate) unsafe fn dot_f16_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && x.len() >= 4 * n);
    dot_float(
        n,
        w.as_ptr(),
        2,
        x.as_ptr() as *const f32,
        load_f16x8,
        f16_at,
    )
}

pub(crate) unsafe fn dot_bf16_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && x.len() >= 4 * n);
    dot_float(
        n,
        w.as_ptr(),
        2,
        x.as_ptr() as *const f32,
        load_bf16x8,
        bf16_at,
    )
}

// ---- activation quantizers -------------------------------------------------

/// Narrows 8 i32x4 (each in i8 range) to 32 bytes in order.
#[inline(always)]
unsafe fn store_i8x32(q: &[int32x4_t; 8], out: *mut u8) {
    for h in 0..2 {
        let a = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
        let b = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
        vst1q_s8(
            out.add(16 * h) as *mut i8,
            vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)),
        );
    }
}

#[inline(always)]
unsafe fn absmax(x: *const f32, n: usize) -> f32 {
    let mut m = vdupq_n_f32(0.0);
    for k in 0..n / 4 {
        m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x.add(4 * k))));
    }
    vmaxvq_f32(m)
}

/// One 32-block of Q8_0/Q8_1: writes the quants, returns (d, sum of quants).
#[inline(always)]
unsafe fn quant_block_32(x: *const f32, out: *mut u8) -> (f32, i32) {
    let d = absmax(x, QK) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [vdupq_n_s32(0); 8];
    let mut s = vdupq_n_s32(0);
    for (k, qk) in q.iter_mut().enumerate() {
        // vcvtaq: round to nearest, ties away from zero == roundf.
        *qk = vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(x.add(4 * k)), id));
        s = vaddq_s32(s, *qk);
    }
    store_i8x32(&q, out);
    (d, vaddvq_s32(s))
}

fn store_f16(p: *mut u8, v: f32) {
    let b = half::f16::from_f32(v).to_bits().to_le_bytes();
    // SAFETY: callers pass a pointer to 2 writable bytes inside their block.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, 2) };
}

pub(crate) unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK;
    debug_assert!(out.len() >= nb * BQ8_0);
    for i in 0..nb {
        let o = out.as_mut_ptr().add(i * BQ8_0);
        let (d, _) = quant_block_32(x.as_ptr().add(i * QK), o.add(2));
        store_f16(o, d);
    }
}

pub(crate) unsafe fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK;
    debug_assert!(out.len() >= nb * BQ8_1);
    for i in 0..nb {
        let o = out.as_mut_ptr().add(i * BQ8_1);
        let (d, sum) = quant_block_32(x.as_ptr().add(i * QK), o.add(4));
        store_f16(o, d);
        store_f16(o.add(2), sum as f32 * d);
    }
}

pub(crate) unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK_K;
    debug_assert!(out.len() >= nb * BQ8K);
    for i in 0..nb {
        let xb = x.as_ptr().add(i * QK_K);
        let o = out.as_mut_ptr().add(i * BQ8K);
        let amax = absmax(xb, QK_K);
        if amax == 0.0 {
            std::ptr::write_bytes(o, 0, BQ8K);
            continue;
        }
        // The reference keeps the sign of the first element of largest magnitude.
        let xs = std::slice::from_raw_parts(xb, QK_K);
        let max = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let lim = vdupq_n_s32(127);
        for g in 0..QK_K / 32 {
            let mut q = [vdupq_n_s32(0); 8];
            for (k, qk) in q.iter_mut().enumerate() {
                // vcvtnq: round to nearest, ties to even == `nearest_int`.
                let v = vmulq_n_f32(vld1q_f32(xb.add(32 * g + 4 * k)), iscale);
                *qk = vminq_s32(vcvtnq_s32_f32(v), lim);
            }
            store_i8x32(&q, o.add(4 + 32 * g));
            let bs = o.add(4 + QK_K) as *mut i16;
            let s0 = vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
            let s1 = vaddvq_s32(vaddq_s32(vaddq_s32(q[4], q[5]), vaddq_s32(q[6], q[7])));
            bs.add(2 * g).write_unaligned(s0 as i16);
            bs.add(2 * g + 1).write_unaligned(s1 as i16);
        }
        (o as *mut f32).write_unaligned(1.0 / iscale);
    }
}
