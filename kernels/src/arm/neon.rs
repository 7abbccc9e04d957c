//! AArch64 NEON dot products, their register-tiled multi-row forms
//! ([`crate::dot::GemmFn`]) and the activation quantizers.
//!
//! Each quantized kernel exists twice: with the `dotprod` extension (`sdot`,
//! emitted with inline asm because `vdotq_s32` is unstable in Rust) and
//! without it (widening `smull` + pairwise adds). Both compute the same exact
//! i32 values (the same lanes where lanes are converted to f32, as in Q8_0;
//! the same sums where only a sum is, as in the k-quants), so their results
//! are bit-identical.
//!
//! All functions are `unsafe`: callers pass slices holding `n` elements of
//! their format (`n` a multiple of the block size) and, for the `_dp`
//! variants, have checked [`crate::Isa::Neon`] is available. Loads are
//! unaligned-safe (`ld1` has no alignment requirement).

use crate::dispatch::Isa;
use crate::dot::{DotFn, GemmFn};
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

    /// Whether this is `sdot` (index into [`KWeights::ROW`]).
    const DOTPROD: bool;

    /// `dot(dot(0, a0, b0), a1, b1)`: the same exact lanes, in fewer
    /// instructions where the implementation can share them.
    #[inline(always)]
    unsafe fn dot2(a0: int8x16_t, b0: int8x16_t, a1: int8x16_t, b1: int8x16_t) -> int32x4_t {
        Self::dot(Self::dot(vdupq_n_s32(0), a0, b0), a1, b1)
    }

    /// `acc + s * (a0 . b0 + a1 . b1)` in some exact grouping of the lanes
    /// (k-quants add all lanes at the end). Needs |a| <= 32 (6-bit quants).
    #[inline(always)]
    unsafe fn dot2_scaled(
        acc: int32x4_t,
        a0: int8x16_t,
        b0: int8x16_t,
        a1: int8x16_t,
        b1: int8x16_t,
        s: i16,
    ) -> int32x4_t {
        vmlaq_n_s32(acc, Self::dot2(a0, b0, a1, b1), s as i32)
    }

    /// `acc + s * (a . b)`, as [`I8Dot::dot2_scaled`] for 16 quants.
    #[inline(always)]
    unsafe fn dot_scaled(acc: int32x4_t, a: int8x16_t, b: int8x16_t, s: i16) -> int32x4_t {
        vmlaq_n_s32(acc, Self::dot(vdupq_n_s32(0), a, b), s as i32)
    }
}

pub(crate) struct Sdot;
pub(crate) struct Widen;

impl I8Dot for Sdot {
    const DOTPROD: bool = true;
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: only instantiated inside `#[target_feature(enable = "dotprod")]` functions.
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) acc, in(vreg) a, in(vreg) b,
             options(pure, nomem, nostack));
        acc
    }
}

impl I8Dot for Widen {
    const DOTPROD: bool = false;
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p1 = vmull_high_s8(a, b);
        // Lane i = bytes 4i..4i+3, exactly as `sdot` groups them.
        vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)))
    }

    #[inline(always)]
    unsafe fn dot2(a0: int8x16_t, b0: int8x16_t, a1: int8x16_t, b1: int8x16_t) -> int32x4_t {
        // Byte pairs of both products summed in i32 (`saddlp`, `sadalp`),
        // then pairs of pairs: lane i = bytes 4i..4i+3 of both (9
        // instructions instead of 11). |a * b| <= 2^14 fits the i16 products.
        let lo = vpadalq_s16(
            vpaddlq_s16(vmull_s8(vget_low_s8(a0), vget_low_s8(b0))),
            vmull_s8(vget_low_s8(a1), vget_low_s8(b1)),
        );
        let hi = vpadalq_s16(vpaddlq_s16(vmull_high_s8(a0, b0)), vmull_high_s8(a1, b1));
        vpaddq_s32(lo, hi)
    }

    #[inline(always)]
    unsafe fn dot2_scaled(
        acc: int32x4_t,
        a0: int8x16_t,
        b0: int8x16_t,
        a1: int8x16_t,
        b1: int8x16_t,
        s: i16,
    ) -> int32x4_t {
        // 4 products per i16 lane (|sum| <= 4 * 32 * 128 = 2^14), then the
        // scale widening into i32: 6 instructions instead of 10.
        let p = vmlal_high_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)), a0, b0);
        let p = vmlal_high_s8(vmlal_s8(p, vget_low_s8(a1), vget_low_s8(b1)), a1, b1);
        vmlal_high_n_s16(vmlal_n_s16(acc, vget_low_s16(p), s), p, s)
    }

    #[inline(always)]
    unsafe fn dot_scaled(acc: int32x4_t, a: int8x16_t, b: int8x16_t, s: i16) -> int32x4_t {
        let p = vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b);
        vmlal_high_n_s16(vmlal_n_s16(acc, vget_low_s16(p), s), p, s)
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

// ---- register tiles: RM weight rows x RN activation rows -------------------
//
// A tile keeps RM x RN accumulators in registers and loads each weight block
// and each activation block once per tile. Per (row, token) pair the integer
// lanes and the float operations, in their order, are those of the one-row
// dot product, which is the 1 x 1 tile, so every [`crate::dot::GemmFn`]
// result is bit-identical to the [`crate::dot::DotFn`] of its type.
//
// Shapes come from the 32 x 128-bit register file, from which work a tile
// can share, and from the compiled code (no stack spills in the inner loops;
// executed instructions counted under `qemu-aarch64 -singlestep`, see the
// `instruction_count_workload` test):
// - Q4_0/Q5_0/Q8_0: 4 x 2 (4 x 1 for one token): 8 f32 accumulators, the
//   quants of one row (2) and of 2 tokens (4), 2 scale vectors and the dot
//   temporaries. 4 x 3 fits on paper (~27 registers) but LLVM schedules all
//   its loads early and spills 14 registers per block, for no fewer
//   instructions per pair than 4 x 2.
// - Q4_K/Q5_K/Q6_K: 1 x 8 (1 x 4 for Q4_K/Q5_K without `dotprod`; the
//   one-row kernel for one token): the per-pair work (`sdot` + `mla` per 16
//   quants) cannot be shared, so the tile shares the weight decode between
//   tokens.
// - F32/F16/BF16: the one-row kernel has 4 accumulators (16 elements per
//   step, for FMA latency), so a tile holds 4 per pair: 2 x 2 (4 x 1 for one
//   token), 16 accumulators.

/// Weight formats paired with Q8_0 activations (f16 scale at offset 0).
pub(crate) trait Q8Weights {
    const BYTES: usize;
    /// The block's 32 quants as signed values (elements 0..16, 16..32).
    unsafe fn quants(b: *const u8) -> (int8x16_t, int8x16_t);
}

pub(crate) struct Q4_0W;
pub(crate) struct Q5_0W;
pub(crate) struct Q8_0W;

impl Q8Weights for Q4_0W {
    const BYTES: usize = BQ4_0;
    #[inline(always)]
    unsafe fn quants(b: *const u8) -> (int8x16_t, int8x16_t) {
        let (lo, hi) = nibbles(b.add(2));
        let s8 = vdupq_n_s8(8);
        (vsubq_s8(lo, s8), vsubq_s8(hi, s8))
    }
}

impl Q8Weights for Q5_0W {
    const BYTES: usize = BQ5_0;
    #[inline(always)]
    unsafe fn quants(b: *const u8) -> (int8x16_t, int8x16_t) {
        let (h0, h1) = high_bits_32(b.add(2));
        let (lo, hi) = nibbles(b.add(6));
        let s16 = vdupq_n_s8(16);
        (
            vsubq_s8(vorrq_s8(lo, h0), s16),
            vsubq_s8(vorrq_s8(hi, h1), s16),
        )
    }
}

impl Q8Weights for Q8_0W {
    const BYTES: usize = BQ8_0;
    #[inline(always)]
    unsafe fn quants(b: *const u8) -> (int8x16_t, int8x16_t) {
        (ld_s8(b.add(2)), ld_s8(b.add(18)))
    }
}

/// The f16 scales at offset 0 of the blocks `p + i * stride` (i < RM <= 4)
/// as f32 lanes: gathered in a general register, one `fcvtl` for all rows.
#[inline(always)]
unsafe fn scales_f16<const RM: usize>(p: *const u8, stride: usize) -> float32x4_t {
    let mut bits = 0u64;
    for i in 0..RM {
        bits |= ((p.add(i * stride) as *const u16).read_unaligned() as u64) << (16 * i);
    }
    let h = vcreate_u16(bits);
    let r: float32x4_t;
    // SAFETY: `fcvtl` is base ARMv8 Advanced SIMD.
    asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) r, in(vreg) h, options(pure, nomem, nostack));
    r
}

/// `acc + v * d[i]` (one fused `fmla` by element, as `vfmaq_n_f32`).
#[inline(always)]
unsafe fn fma_lane(acc: float32x4_t, v: float32x4_t, d: float32x4_t, i: usize) -> float32x4_t {
    match i {
        0 => vfmaq_laneq_f32::<0>(acc, v, d),
        1 => vfmaq_laneq_f32::<1>(acc, v, d),
        2 => vfmaq_laneq_f32::<2>(acc, v, d),
        _ => vfmaq_laneq_f32::<3>(acc, v, d),
    }
}

/// Dot products of RM weight rows (`w + i * ws`) with RN Q8_0 activation
/// rows (`x + j * xs`), `nb` blocks each: `[token][row]`. Per pair and
/// block: the exact i32 lanes of `q . y` (4 quants per lane, as `sdot`), to
/// f32, fused-multiply-added with `d_w * d_y` into one f32x4; the lanes are
/// added at the end.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // (row, token) indices read clearer here
unsafe fn tile_q8<W: Q8Weights, D: I8Dot, const RM: usize, const RN: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
) -> [[f32; RM]; RN] {
    let mut acc = [[vdupq_n_f32(0.0); RM]; RN];
    for l in 0..nb {
        let wb = w.add(l * W::BYTES);
        let dw = scales_f16::<RM>(wb, ws);
        let mut ys = [[vdupq_n_s8(0); 2]; RN];
        let mut dd = [vdupq_n_f32(0.0); RN];
        for j in 0..RN {
            let xb = x.add(j * xs + l * BQ8_0);
            ys[j] = [ld_s8(xb.add(2)), ld_s8(xb.add(18))];
            // Lane i: d_w(i) * d_y, the one-row kernel's scalar product.
            dd[j] = vmulq_n_f32(dw, f16_at(xb));
        }
        for i in 0..RM {
            let (q0, q1) = W::quants(wb.add(i * ws));
            for j in 0..RN {
                let p = D::dot2(q0, ys[j][0], q1, ys[j][1]);
                acc[j][i] = fma_lane(acc[j][i], vcvtq_f32_s32(p), dd[j], i);
            }
        }
    }
    let mut out = [[0f32; RM]; RN];
    for j in 0..RN {
        for i in 0..RM {
            out[j][i] = vaddvq_f32(acc[j][i]);
        }
    }
    out
}

/// Writes the tile results to `y[t * ys + r]`.
#[inline(always)]
unsafe fn store_tile<const RM: usize, const RN: usize>(v: [[f32; RM]; RN], y: *mut f32, ys: usize) {
    for (j, row) in v.iter().enumerate() {
        for (i, &e) in row.iter().enumerate() {
            *y.add(j * ys + i) = e;
        }
    }
}

/// Writes one row's results for RN tokens to `y[t * ys]`.
#[inline(always)]
unsafe fn store_col<const RN: usize>(v: [f32; RN], y: *mut f32, ys: usize) {
    for (j, &e) in v.iter().enumerate() {
        *y.add(j * ys) = e;
    }
}

/// `rows` weight rows (`w`, `wrb` bytes apart) times `toks` Q8_0 activation
/// rows (`x`, `xrb` bytes apart), `n` elements each, into `y[t * ys + r]`.
///
/// Tiles of 4 rows x 2 tokens (4 x 1 for one token), smaller at the edges.
/// Per block the one-row kernel spends 5 instructions per pair that no tile
/// can share (2 `sdot`, the zeroed accumulator, `scvtf`, `fmla`), plus the
/// weight decode (Q4_0: load, `and`, `usra`, `add`), the scale loads and
/// conversions and the activation loads, which a tile shares. Executed
/// instructions per pair and Q4_0 block: one-row 21.3, 4 x 2 10.7, 4 x 1
/// 15.0 (without `dotprod`: 27.3, 18.4, 21.0).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_q8<W: Q8Weights, D: I8Dot>(
    n: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    x: *const u8,
    xrb: usize,
    toks: usize,
    y: *mut f32,
    ys: usize,
) {
    let nb = n / QK;
    let rn_max = if toks == 1 { 1 } else { 2 };
    let mut r = 0;
    while r < rows {
        let rm = (rows - r).min(4);
        let wr = w.add(r * wrb);
        let mut t = 0;
        while t < toks {
            let rn = (toks - t).min(rn_max);
            let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
            macro_rules! go {
                ($m:literal, $n:literal) => {
                    store_tile(tile_q8::<W, D, $m, $n>(nb, wr, wrb, xt, xrb), yt, ys)
                };
            }
            match (rm, rn) {
                (4, 2) => go!(4, 2),
                (4, _) => go!(4, 1),
                (3, 2) => go!(3, 2),
                (3, _) => go!(3, 1),
                (2, 2) => go!(2, 2),
                (2, _) => go!(2, 1),
                (_, 2) => go!(1, 2),
                _ => go!(1, 1),
            }
            t += rn;
        }
        r += rm;
    }
}

/// The mins of a Q4_K/Q5_K super-block (6-bit, unpacked) as 8 i16 lanes.
#[inline(always)]
unsafe fn mins_i16(mins: [u32; 2]) -> int16x8_t {
    vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(
        mins[0] as u64 | (mins[1] as u64) << 32,
    )))
}

/// The Q8_K block sums of each 32-quant sub-block (pairs of 16-sums).
#[inline(always)]
unsafe fn bsum_pairs(bsums: *const u8) -> int16x8_t {
    let b0 = vld1q_s16(bsums as *const i16);
    let b1 = vld1q_s16((bsums as *const i16).add(8));
    vpaddq_s16(b0, b1)
}

/// Sum over the 8 sub-blocks of min * bsum (exact).
#[inline(always)]
unsafe fn mins_dot_bsums(m: int16x8_t, pairs: int16x8_t) -> i32 {
    let p = vmull_s16(vget_low_s16(m), vget_low_s16(pairs));
    vaddvq_s32(vmlal_high_s16(p, m, pairs))
}

/// A k-quant weight format with a one-row x RN-token tile against Q8_K rows
/// (`x + j * xs`), `nb` super-blocks.
pub(crate) trait KWeights {
    /// Bytes per super-block.
    const BYTES: usize;
    /// The one-row kernels, without and with `dotprod`.
    const ROW: [DotFn; 2];
    /// Tokens per tile (at most 8), without and with `dotprod`.
    const TOKENS: [usize; 2];
    unsafe fn tile<D: I8Dot, const RN: usize>(
        nb: usize,
        w: *const u8,
        x: *const u8,
        xs: usize,
    ) -> [f32; RN];
}

pub(crate) struct Q4KW;
pub(crate) struct Q5KW;
pub(crate) struct Q6KW;

impl KWeights for Q4KW {
    const BYTES: usize = BQ4K;
    const ROW: [DotFn; 2] = [dot_q4_k_q8_k, dot_q4_k_q8_k_dp];
    const TOKENS: [usize; 2] = [4, 8];
    #[inline(always)]
    unsafe fn tile<D: I8Dot, const RN: usize>(
        nb: usize,
        w: *const u8,
        x: *const u8,
        xs: usize,
    ) -> [f32; RN] {
        tile_q45_k::<false, D, RN>(nb, w, x, xs)
    }
}

impl KWeights for Q5KW {
    const BYTES: usize = BQ5K;
    const ROW: [DotFn; 2] = [dot_q5_k_q8_k, dot_q5_k_q8_k_dp];
    const TOKENS: [usize; 2] = [4, 8];
    #[inline(always)]
    unsafe fn tile<D: I8Dot, const RN: usize>(
        nb: usize,
        w: *const u8,
        x: *const u8,
        xs: usize,
    ) -> [f32; RN] {
        tile_q45_k::<true, D, RN>(nb, w, x, xs)
    }
}

impl KWeights for Q6KW {
    const BYTES: usize = BQ6K;
    const ROW: [DotFn; 2] = [dot_q6_k_q8_k, dot_q6_k_q8_k_dp];
    const TOKENS: [usize; 2] = [8, 8];
    #[inline(always)]
    unsafe fn tile<D: I8Dot, const RN: usize>(
        nb: usize,
        w: *const u8,
        x: *const u8,
        xs: usize,
    ) -> [f32; RN] {
        tile_q6_k::<D, RN>(nb, w, x, xs)
    }
}

/// One Q4_K (`FIVE` false) or Q5_K (true) row against RN Q8_K rows. Per
/// super-block and token: the exact i32 sum of `scale_s * (q . y)_s` over
/// the 8 sub-blocks and of `min_s * bsum_s`, then in f32
/// `sum += (d_y * d) * isum - (d_y * dmin) * summ` (the one-row order).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_q45_k<const FIVE: bool, D: I8Dot, const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
) -> [f32; RN] {
    let bytes = if FIVE { BQ5K } else { BQ4K };
    let m4 = vdupq_n_u8(0x0F);
    let m16 = vdupq_n_u8(0x10);
    let mut sum = [0f32; RN];
    for i in 0..nb {
        let wb = w.add(i * bytes);
        let s = unpack_scales_k4(std::slice::from_raw_parts(wb.add(4), 12));
        let sc = [s[0].to_le_bytes(), s[1].to_le_bytes()];
        let (q4, qh0, qh1) = if FIVE {
            (wb.add(48), vld1q_u8(wb.add(16)), vld1q_u8(wb.add(32)))
        } else {
            (wb.add(16), vdupq_n_u8(0), vdupq_n_u8(0))
        };
        let mut isum = [vdupq_n_s32(0); RN];
        for k in 0..QK_K / 64 {
            let b0 = vld1q_u8(q4.add(32 * k));
            let b1 = vld1q_u8(q4.add(32 * k + 16));
            let (mut l0, mut l1) = (vandq_u8(b0, m4), vandq_u8(b1, m4));
            let (mut h0, mut h1) = (vshrq_n_u8::<4>(b0), vshrq_n_u8::<4>(b1));
            if FIVE {
                // Bit 2k of each qh byte is the fifth bit of chunk k's low
                // nibbles, bit 2k + 1 that of its high nibbles.
                let u1 = vdupq_n_u8(1 << (2 * k));
                let u2 = vdupq_n_u8(2 << (2 * k));
                l0 = vorrq_u8(l0, vandq_u8(vtstq_u8(qh0, u1), m16));
                l1 = vorrq_u8(l1, vandq_u8(vtstq_u8(qh1, u1), m16));
                h0 = vorrq_u8(h0, vandq_u8(vtstq_u8(qh0, u2), m16));
                h1 = vorrq_u8(h1, vandq_u8(vtstq_u8(qh1, u2), m16));
            }
            let (l0, l1) = (vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(l1));
            let (h0, h1) = (vreinterpretq_s8_u8(h0), vreinterpretq_s8_u8(h1));
            let sl = sc[k / 2][(2 * k) % 4] as i16;
            let sh = sc[k / 2][(2 * k + 1) % 4] as i16;
            for j in 0..RN {
                let y = x.add(j * xs + i * BQ8K + 4 + 64 * k);
                isum[j] = D::dot2_scaled(isum[j], l0, ld_s8(y), l1, ld_s8(y.add(16)), sl);
                isum[j] = D::dot2_scaled(isum[j], h0, ld_s8(y.add(32)), h1, ld_s8(y.add(48)), sh);
            }
        }
        let (wd, wdmin) = (f16_at(wb), f16_at(wb.add(2)));
        let mins = mins_i16([s[2], s[3]]);
        for j in 0..RN {
            let xb = x.add(j * xs + i * BQ8K);
            let yd = f32_at(xb);
            let summ = mins_dot_bsums(mins, bsum_pairs(xb.add(4 + QK_K)));
            sum[j] += (yd * wd) * vaddvq_s32(isum[j]) as f32 - (yd * wdmin) * summ as f32;
        }
    }
    sum
}

/// One Q6_K row against RN Q8_K rows: per super-block and token the exact
/// i32 sum of `scale_g * ((q - 32) . y)_g` over the 16 groups, then
/// `sum += (d_y * d) * isum` in f32.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_q6_k<D: I8Dot, const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
) -> [f32; RN] {
    let m4 = vdupq_n_u8(0x0F);
    let m3 = vdupq_n_u8(0x30);
    let s32 = vdupq_n_s8(32);
    let mut sum = [0f32; RN];
    for i in 0..nb {
        let wb = w.add(i * BQ6K);
        let sc = std::slice::from_raw_parts(wb.add(192) as *const i8, 16);
        let mut isum = [vdupq_n_s32(0); RN];
        for h in 0..2 {
            let ql = wb.add(64 * h);
            let qh = wb.add(128 + 32 * h);
            // All 128 quants of the half first (8 registers), then the
            // groups in activation order: each token's loads are sequential
            // and each pair of 16-byte loads is used at once (no spills).
            let mut v = [[vdupq_n_s8(0); 2]; 4];
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
                    v[g][k] = vsubq_s8(vreinterpretq_s8_u8(qg), s32);
                }
            }
            for g in 0..4 {
                for k in 0..2 {
                    let s = sc[8 * h + 2 * g + k] as i16;
                    for j in 0..RN {
                        let y = x.add(j * xs + i * BQ8K + 4 + 128 * h + 32 * g + 16 * k);
                        isum[j] = D::dot_scaled(isum[j], v[g][k], ld_s8(y), s);
                    }
                }
            }
        }
        let wd = f16_at(wb.add(208));
        for j in 0..RN {
            let yd = f32_at(x.add(j * xs + i * BQ8K));
            sum[j] += (yd * wd) * vaddvq_s32(isum[j]) as f32;
        }
    }
    sum
}

/// `rows` k-quant weight rows times `toks` Q8_K rows (layout as
/// [`gemm_q8`]): each row against up to 8 tokens at a time.
///
/// Per 64 quants the one-row Q4_K kernel spends 8 instructions per pair
/// with `sdot` (4 `sdot`, 2 zeroed accumulators, 2 `mla`) besides the weight
/// decode and the scales; Q6_K per 16 quants 3 (`sdot`, zero, `mla`) besides
/// ~5 of decode. Only the decode can be shared, and only between tokens, so
/// the tile is one row x 8 tokens (8 i32 accumulators, 4 to 8 decoded
/// vectors, the masks: ~24 registers); without `dotprod` Q4_K/Q5_K take 4
/// tokens (8 spill). Executed instructions per pair and super-block,
/// one-row -> tile: Q4_K 129 -> 74, Q5_K 168 -> 84, Q6_K 177 -> 104;
/// without `dotprod` 145 -> 107, 253 -> 125, 215 -> 120.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_k<K: KWeights, D: I8Dot>(
    n: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    x: *const u8,
    xrb: usize,
    toks: usize,
    y: *mut f32,
    ys: usize,
) {
    let nb = n / QK_K;
    if toks == 1 {
        // Decode: nothing to share, so the one-row kernel itself (the 1 x 1
        // tile inlined in this large function counted ~10% more executed
        // instructions under qemu).
        let dot = K::ROW[D::DOTPROD as usize];
        let xr = std::slice::from_raw_parts(x, nb * BQ8K);
        for r in 0..rows {
            *y.add(r) = dot(
                n,
                std::slice::from_raw_parts(w.add(r * wrb), nb * K::BYTES),
                xr,
            );
        }
        return;
    }
    let tokens = K::TOKENS[D::DOTPROD as usize];
    for r in 0..rows {
        let wr = w.add(r * wrb);
        let mut t = 0;
        while t < toks {
            let rn = (toks - t).min(tokens);
            let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
            macro_rules! go {
                ($n:literal) => {
                    store_col(K::tile::<D, $n>(nb, wr, xt, xrb), yt, ys)
                };
            }
            match rn {
                8 => go!(8),
                7 => go!(7),
                6 => go!(6),
                5 => go!(5),
                4 => go!(4),
                3 => go!(3),
                2 => go!(2),
                _ => go!(1),
            }
            t += rn;
        }
    }
}

// ---- entry points ----------------------------------------------------------

/// One-row dot products (the 1 x 1 tiles).
#[inline(always)]
unsafe fn q4_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ4_0 && x.len() >= n / QK * BQ8_0);
    tile_q8::<Q4_0W, D, 1, 1>(n / QK, w.as_ptr(), 0, x.as_ptr(), 0)[0][0]
}

#[inline(always)]
unsafe fn q5_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ5_0 && x.len() >= n / QK * BQ8_0);
    tile_q8::<Q5_0W, D, 1, 1>(n / QK, w.as_ptr(), 0, x.as_ptr(), 0)[0][0]
}

#[inline(always)]
unsafe fn q8_0<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ8_0 && x.len() >= n / QK * BQ8_0);
    tile_q8::<Q8_0W, D, 1, 1>(n / QK, w.as_ptr(), 0, x.as_ptr(), 0)[0][0]
}

#[inline(always)]
unsafe fn q4_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ4K && x.len() >= n / QK_K * BQ8K);
    Q4KW::tile::<D, 1>(n / QK_K, w.as_ptr(), x.as_ptr(), 0)[0]
}

#[inline(always)]
unsafe fn q5_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ5K && x.len() >= n / QK_K * BQ8K);
    Q5KW::tile::<D, 1>(n / QK_K, w.as_ptr(), x.as_ptr(), 0)[0]
}

#[inline(always)]
unsafe fn q6_k<D: I8Dot>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ6K && x.len() >= n / QK_K * BQ8K);
    Q6KW::tile::<D, 1>(n / QK_K, w.as_ptr(), x.as_ptr(), 0)[0]
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

/// [`crate::dot::GemmFn`]s: `$drv::<$w, Sdot>` with `dotprod` enabled and
/// `$drv::<$w, Widen>` without.
macro_rules! gemm_entries {
    ($($drv:ident::<$w:ty> => $dp:ident, $nodp:ident;)*) => {$(
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "dotprod")]
        pub(crate) unsafe fn $dp(
            n: usize, w: *const u8, wrb: usize, rows: usize,
            x: *const u8, xrb: usize, toks: usize, y: *mut f32, ys: usize,
        ) {
            $drv::<$w, Sdot>(n, w, wrb, rows, x, xrb, toks, y, ys)
        }
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $nodp(
            n: usize, w: *const u8, wrb: usize, rows: usize,
            x: *const u8, xrb: usize, toks: usize, y: *mut f32, ys: usize,
        ) {
            $drv::<$w, Widen>(n, w, wrb, rows, x, xrb, toks, y, ys)
        }
    )*};
}

gemm_entries! {
    gemm_q8::<Q4_0W> => gemm_q4_0_q8_0_dp, gemm_q4_0_q8_0;
    gemm_q8::<Q5_0W> => gemm_q5_0_q8_0_dp, gemm_q5_0_q8_0;
    gemm_q8::<Q8_0W> => gemm_q8_0_q8_0_dp, gemm_q8_0_q8_0;
    gemm_k::<Q4KW> => gemm_q4_k_q8_k_dp, gemm_q4_k_q8_k;
    gemm_k::<Q5KW> => gemm_q5_k_q8_k_dp, gemm_q5_k_q8_k;
    gemm_k::<Q6KW> => gemm_q6_k_q8_k_dp, gemm_q6_k_q8_k;
}

/// The multi-row kernel of `ty` for `isa` (`Neon` or `NeonNoDotprod`, checked
/// available by the caller), for [`crate::dot::gemm_fn`].
pub(crate) fn gemm_fn(isa: Isa, ty: GgmlType) -> Option<GemmFn> {
    let dp = match isa {
        Isa::Neon => true,
        Isa::NeonNoDotprod => false,
        _ => return None,
    };
    let f: GemmFn = match (ty, dp) {
        (GgmlType::Q4_0, true) => gemm_q4_0_q8_0_dp,
        (GgmlType::Q4_0, false) => gemm_q4_0_q8_0,
        (GgmlType::Q5_0, true) => gemm_q5_0_q8_0_dp,
        (GgmlType::Q5_0, false) => gemm_q5_0_q8_0,
        (GgmlType::Q8_0, true) => gemm_q8_0_q8_0_dp,
        (GgmlType::Q8_0, false) => gemm_q8_0_q8_0,
        (GgmlType::Q4K, true) => gemm_q4_k_q8_k_dp,
        (GgmlType::Q4K, false) => gemm_q4_k_q8_k,
        (GgmlType::Q5K, true) => gemm_q5_k_q8_k_dp,
        (GgmlType::Q5K, false) => gemm_q5_k_q8_k,
        (GgmlType::Q6K, true) => gemm_q6_k_q8_k_dp,
        (GgmlType::Q6K, false) => gemm_q6_k_q8_k,
        (GgmlType::F32, _) => gemm_f32_f32,
        (GgmlType::F16, _) => gemm_f16_f32,
        (GgmlType::BF16, _) => gemm_bf16_f32,
        _ => return None,
    };
    Some(f)
}

// ---- float weights ---------------------------------------------------------

/// Float weight formats: 8 elements to two f32x4, one element to f32.
pub(crate) trait FloatWeights {
    const BYTES: usize;
    unsafe fn load8(p: *const u8) -> (float32x4_t, float32x4_t);
    unsafe fn load1(p: *const u8) -> f32;
}

pub(crate) struct F32W;
pub(crate) struct F16W;
pub(crate) struct BF16W;

impl FloatWeights for F32W {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> (float32x4_t, float32x4_t) {
        (
            vld1q_f32(p as *const f32),
            vld1q_f32((p as *const f32).add(4)),
        )
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f32_at(p)
    }
}

impl FloatWeights for F16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> (float32x4_t, float32x4_t) {
        load_f16x8(p)
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f16_at(p)
    }
}

impl FloatWeights for BF16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> (float32x4_t, float32x4_t) {
        let h = vld1q_u16(p as *const u16);
        (
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
        )
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
    }
}

/// RM float weight rows (`w + i * ws`) times RN f32 activation rows
/// (`x + j * xs`, bytes), `n` elements. Per pair, as the one-row kernel: 4 f32x4
/// accumulators over steps of 16 elements (accumulator k takes elements
/// 4k..4k+3 of each step), added as `(a0 + a1) + (a2 + a3)` and across
/// lanes, then the `n % 16` tail in element order. The activations of a
/// step are loaded once (4 x RN registers), the weight rows streamed.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_float<W: FloatWeights, const RM: usize, const RN: usize>(
    n: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
) -> [[f32; RM]; RN] {
    let mut acc = [[[vdupq_n_f32(0.0); 4]; RM]; RN];
    let mut e = 0;
    while e + 16 <= n {
        let mut xv = [[vdupq_n_f32(0.0); 4]; RN];
        for j in 0..RN {
            let xp = (x.add(j * xs) as *const f32).add(e);
            for k in 0..4 {
                xv[j][k] = vld1q_f32(xp.add(4 * k));
            }
        }
        for i in 0..RM {
            let wp = w.add(i * ws + W::BYTES * e);
            let (a0, a1) = W::load8(wp);
            let (a2, a3) = W::load8(wp.add(8 * W::BYTES));
            for j in 0..RN {
                let a = &mut acc[j][i];
                a[0] = vfmaq_f32(a[0], a0, xv[j][0]);
                a[1] = vfmaq_f32(a[1], a1, xv[j][1]);
                a[2] = vfmaq_f32(a[2], a2, xv[j][2]);
                a[3] = vfmaq_f32(a[3], a3, xv[j][3]);
            }
        }
        e += 16;
    }
    let mut out = [[0f32; RM]; RN];
    for j in 0..RN {
        for i in 0..RM {
            let a = &acc[j][i];
            let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
            let (wr, xr) = (w.add(i * ws), x.add(j * xs) as *const f32);
            for t in e..n {
                s += W::load1(wr.add(W::BYTES * t)) * xr.add(t).read_unaligned();
            }
            out[j][i] = s;
        }
    }
    out
}

/// [`crate::dot::GemmFn`] for float weights and f32 activations: 2 x 2 tiles
/// (4 x 1 for one token), 16 accumulators either way. Per 16 elements and
/// pair the one-row F16 kernel issues 4 `fmla`, 4 `fcvtl` and 6 loads; 2 x 2
/// shares the conversions and loads between 2 pairs, with 28 live registers
/// (16 accumulators, 8 weight, 4 activation). Executed instructions per pair
/// and 16 F16 elements: one-row 16.3, 2 x 2 9.0, 4 x 1 11.4.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_float<W: FloatWeights>(
    n: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    x: *const u8,
    xrb: usize,
    toks: usize,
    y: *mut f32,
    ys: usize,
) {
    let (rm_max, rn_max) = if toks == 1 { (4, 1) } else { (2, 2) };
    let mut r = 0;
    while r < rows {
        let rm = (rows - r).min(rm_max);
        let wr = w.add(r * wrb);
        let mut t = 0;
        while t < toks {
            let rn = (toks - t).min(rn_max);
            let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
            macro_rules! go {
                ($m:literal, $n:literal) => {
                    store_tile(tile_float::<W, $m, $n>(n, wr, wrb, xt, xrb), yt, ys)
                };
            }
            match (rm, rn) {
                (4, _) => go!(4, 1),
                (3, _) => go!(3, 1),
                (2, 2) => go!(2, 2),
                (2, _) => go!(2, 1),
                (_, 2) => go!(1, 2),
                _ => go!(1, 1),
            }
            t += rn;
        }
        r += rm;
    }
}

macro_rules! float_entries {
    ($($w:ty => $dot:ident, $gemm:ident;)*) => {$(
        pub(crate) unsafe fn $dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
            debug_assert!(w.len() >= <$w>::BYTES * n && x.len() >= 4 * n);
            tile_float::<$w, 1, 1>(n, w.as_ptr(), 0, x.as_ptr(), 0)[0][0]
        }
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $gemm(
            n: usize, w: *const u8, wrb: usize, rows: usize,
            x: *const u8, xrb: usize, toks: usize, y: *mut f32, ys: usize,
        ) {
            gemm_float::<$w>(n, w, wrb, rows, x, xrb, toks, y, ys)
        }
    )*};
}

float_entries! {
    F32W => dot_f32_f32, gemm_f32_f32;
    F16W => dot_f16_f32, gemm_f16_f32;
    BF16W => dot_bf16_f32, gemm_bf16_f32;
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

#[cfg(test)]
#[path = "neon_tests.rs"]
mod tests;
