//! x86-64 AVX2 + FMA + F16C dot products and activation quantizers.
//!
//! Every function here is `unsafe` with `#[target_feature]`: callers must have
//! checked [`crate::Isa::Avx2`] is available, and pass slices holding `n`
//! elements of their format (`n` a multiple of the block size). Rows may start
//! at any address: all loads are unaligned.
//!
//! Integer sums per block are exact (i8 x i8 products through `maddubs`, which
//! cannot saturate for quants in [-127,127] times activations in [-127,127],
//! nor for weight value -128 since the weight is the sign source), then scaled
//! and accumulated in f32 lanes with FMA — the same per-block terms as the
//! scalar reference, summed in a different order.

use crate::formats::*;
use crate::FloatDecode;
use std::arch::x86_64::*;

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

/// Calls `$go!(M, N)` with the const-generic tile of `$rm` rows (1..=4) x
/// `$rn` tokens (1..=3): the edges of a 4x3 tiling.
macro_rules! tile_up_to_4x3 {
    ($rm:expr, $rn:expr, $go:ident) => {
        match ($rm, $rn) {
            (4, 3) => $go!(4, 3),
            (4, 2) => $go!(4, 2),
            (4, _) => $go!(4, 1),
            (3, 3) => $go!(3, 3),
            (3, 2) => $go!(3, 2),
            (3, _) => $go!(3, 1),
            (2, 3) => $go!(2, 3),
            (2, 2) => $go!(2, 2),
            (2, _) => $go!(2, 1),
            (_, 3) => $go!(1, 3),
            (_, 2) => $go!(1, 2),
            _ => $go!(1, 1),
        }
    };
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned() as u32;
    let r: __m128;
    // Written as asm because LLVM otherwise merges the half into whatever
    // register it likes (`vpinsrw`), often the loop's accumulator, which
    // chains every block's scale conversion behind the previous FMA (3x
    // slower Q4_0). `vmovd` zeroes the rest of the register: no dependency.
    std::arch::asm!(
        "vmovd {r}, {h:e}",
        "vcvtph2ps {r}, {r}",
        h = in(reg) h,
        r = out(xmm_reg) r,
        options(pure, nomem, nostack, preserves_flags)
    );
    _mm_cvtss_f32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_ps(v: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let r = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
    let r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0b01));
    _mm_cvtsi128_si32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hmax_ps(v: __m256) -> f32 {
    let r = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_max_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// 16 bytes of nibbles -> 32 bytes 0..15: low nibbles then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    let b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// 32 bits -> 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_32(p: *const u8) -> __m256i {
    let x = (p as *const u32).read_unaligned();
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    // Byte k of each 8 has every bit but bit k set: OR gives all-ones iff bit k is set.
    let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

/// Unsigned bytes `u` (< 128) times signed bytes `y`, as 8 i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_u8i8(u: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ4_0 && x.len() >= n / QK * BQ8_0);
    tile_q4_0::<1, 1>(n / QK, w.as_ptr(), 0, x.as_ptr(), 0, std::ptr::null())[0][0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1_q8_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ4_1 && x.len() >= n / QK * BQ8_1);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ4_1), xp.add(i * BQ8_1));
        let d = _mm256_set1_ps(f16_at(wb) * f16_at(xb));
        summs += f16_at(wb.add(2)) * f16_at(xb.add(2));
        let p = dot_u8i8(nibbles_32(wb.add(4)), load256(xb.add(4)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_0_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ5_0 && x.len() >= n / QK * BQ8_0);
    tile_q8::<Q5_0W, 1, 1>(n / QK, w.as_ptr(), 0, x.as_ptr(), 0, std::ptr::null())[0][0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_1_q8_1(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ5_1 && x.len() >= n / QK * BQ8_1);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in 0..n / QK {
        let (wb, xb) = (wp.add(i * BQ5_1), xp.add(i * BQ8_1));
        let d = _mm256_set1_ps(f16_at(wb) * f16_at(xb));
        summs += f16_at(wb.add(2)) * f16_at(xb.add(2));
        let hi = _mm256_and_si256(bits_32(wb.add(4)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles_32(wb.add(8)), hi);
        let p = dot_u8i8(q, load256(xb.add(4)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_q8_0(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK * BQ8_0 && x.len() >= n / QK * BQ8_0);
    tile_q8_0::<1, 1>(n / QK, w.as_ptr(), 0, x.as_ptr(), 0, std::ptr::null())[0][0]
}

// ---- register tiles: RM weight rows x RN activation rows -------------------
//
// A tile keeps RM x RN accumulators in registers and loads each weight block
// and each activation block once per tile. Per (row, token) the operations and
// their order are those of the single-row kernel (which is the 1 x 1 tile), so
// every result is bit-identical to `dot_*` whatever the tiling.

/// Weight formats paired with Q8_0 activations: an f16 scale at offset 0 and
/// 32 quants. `quants` returns them unsigned (0..32) when `OFFSET` is not 0
/// (the signed value is `q - OFFSET`), else as signed bytes.
pub(crate) trait Q8Weights {
    const BYTES: usize;
    const OFFSET: i8;
    /// Tokens per prefill tile (4 rows x this many).
    const TOKENS: usize = 2;
    unsafe fn quants(b: *const u8) -> __m256i;
    /// The RM x RN tile of this format (a format may override the generic one).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const RM: usize, const RN: usize>(
        nb: usize,
        w: *const u8,
        ws: usize,
        x: *const u8,
        xs: usize,
        pf: *const u8,
    ) -> [[f32; RM]; RN]
    where
        Self: Sized,
    {
        tile_q8::<Self, RM, RN>(nb, w, ws, x, xs, pf)
    }
}

pub(crate) struct Q4_0W;
pub(crate) struct Q5_0W;
pub(crate) struct Q8_0W;

impl Q8Weights for Q4_0W {
    const BYTES: usize = BQ4_0;
    const OFFSET: i8 = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: *const u8) -> __m256i {
        nibbles_32(b.add(2))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const RM: usize, const RN: usize>(
        nb: usize,
        w: *const u8,
        ws: usize,
        x: *const u8,
        xs: usize,
        pf: *const u8,
    ) -> [[f32; RM]; RN] {
        tile_q4_0::<RM, RN>(nb, w, ws, x, xs, pf)
    }
}

impl Q8Weights for Q5_0W {
    const BYTES: usize = BQ5_0;
    const OFFSET: i8 = 16;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: *const u8) -> __m256i {
        let hi = _mm256_and_si256(bits_32(b.add(2)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles_32(b.add(6)), hi)
    }
}

impl Q8Weights for Q8_0W {
    const BYTES: usize = BQ8_0;
    const OFFSET: i8 = 0;
    const TOKENS: usize = 3;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: *const u8) -> __m256i {
        load256(b.add(2))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const RM: usize, const RN: usize>(
        nb: usize,
        w: *const u8,
        ws: usize,
        x: *const u8,
        xs: usize,
        pf: *const u8,
    ) -> [[f32; RM]; RN] {
        tile_q8_0::<RM, RN>(nb, w, ws, x, xs, pf)
    }
}

/// The f16 scales at offset 0 of the blocks `p + i * stride` (i < RM <= 4) as
/// f32 lanes (one conversion for all rows; lanes >= RM are 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_f16<const RM: usize>(p: *const u8, stride: usize) -> __m128 {
    let mut bits = 0u64;
    for i in 0..RM {
        bits |= ((p.add(i * stride) as *const u16).read_unaligned() as u64) << (16 * i);
    }
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// `*p` in all 8 lanes, as one load. Written as asm because LLVM otherwise
/// forwards the value from the store that wrote it and broadcasts it with
/// two shuffles (ALU work where a load port is free).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn broadcast_load(p: *const f32) -> __m256 {
    let r: __m256;
    std::arch::asm!(
        "vbroadcastss {r}, dword ptr [{p}]",
        p = in(reg) p,
        r = out(ymm_reg) r,
        options(pure, readonly, nostack, preserves_flags)
    );
    r
}

/// Dot products of RM weight rows (`w + i * ws`) with RN Q8_0 activation
/// rows (`x + j * xs`), `nb` blocks each: `[token][row]`.
///
/// Integer lanes: with an offset, `maddubs(u, y) - maddubs(OFFSET, y)` (the
/// second term once per activation block, shared by the RM rows); without,
/// `maddubs(|q|, sign(y, q))`. Both give the exact sums of 4 products
/// `q * y` per lane (no i16 saturation: |u| <= 31, |y| <= 127).
#[inline]
#[allow(clippy::needless_range_loop)] // (row, token) indices read clearer here
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_q8<W: Q8Weights, const RM: usize, const RN: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [[f32; RM]; RN] {
    let mut acc = [[_mm256_setzero_ps(); RM]; RN];
    // The RM x RN block scales, read back as broadcast loads.
    let mut dd = [[0f32; 4]; RN];
    let ones = _mm256_set1_epi16(1);
    for l in 0..nb {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(l * RM * W::BYTES), RM * W::BYTES);
        }
        let wb = w.add(l * W::BYTES);
        let dw = scales_f16::<RM>(wb, ws);
        let mut ys = [_mm256_setzero_si256(); RN];
        let mut offs = [_mm256_setzero_si256(); RN];
        for j in 0..RN {
            let xb = x.add(j * xs + l * BQ8_0);
            _mm_storeu_ps(dd[j].as_mut_ptr(), _mm_mul_ps(dw, _mm_set1_ps(f16_at(xb))));
            ys[j] = load256(xb.add(2));
            if W::OFFSET != 0 {
                offs[j] = _mm256_maddubs_epi16(_mm256_set1_epi8(W::OFFSET), ys[j]);
            }
        }
        for i in 0..RM {
            let q = W::quants(wb.add(i * ws));
            let aq = if W::OFFSET != 0 {
                q
            } else {
                _mm256_sign_epi8(q, q)
            };
            for j in 0..RN {
                let p16 = if W::OFFSET != 0 {
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q, ys[j]), offs[j])
                } else {
                    _mm256_maddubs_epi16(aq, _mm256_sign_epi8(ys[j], q))
                };
                let p = _mm256_madd_epi16(p16, ones);
                let d = broadcast_load(dd[j].as_ptr().add(i));
                acc[j][i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[j][i]);
            }
        }
    }
    hsum_tile(&acc)
}

/// [`tile_q8`] for Q8_0: per token, the RM <= 4 rows' integer block sums
/// (`maddubs(|q|, sign(y, q))` widened to 8 i32 lanes) are folded by three
/// horizontal adds into one vector, row `i` in lanes `i` (the sum of its
/// lanes 0..4) and `i + 4` (of lanes 4..8), so that one convert and one FMA
/// (scales `d_w[i] * d_y` in the same lanes) serve the RM rows. Per row x
/// token x block that is 3 multiply-port µops (sign, maddubs, madd) plus a
/// quarter of (3 horizontal adds, mostly shuffle-port work, convert,
/// multiply, FMA), where one accumulator per row took 5 multiply-port µops
/// and a broadcast: Intel cores have only 2 ports for all of these, and
/// left the shuffle port idle. The integer lane sums are exact whatever
/// the pairing, so each row's two f32 lanes see the same terms in every
/// tile shape (the 1 x 1 tile is [`dot_q8_0_q8_0`]); the result is lane `i`
/// plus lane `i + 4`. Lanes of rows >= RM have zero scales and are unused.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_q8_0<const RM: usize, const RN: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [[f32; RM]; RN] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); RN];
    // The RN token scales of the block, read back as broadcast loads.
    let mut dx = [0f32; 4];
    for l in 0..nb {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(l * RM * BQ8_0), RM * BQ8_0);
        }
        let wb = w.add(l * BQ8_0);
        let dw = scales_f16::<RM>(wb, ws);
        let dw = _mm256_set_m128(dw, dw);
        _mm_storeu_ps(dx.as_mut_ptr(), scales_f16::<RN>(x.add(l * BQ8_0), xs));
        let mut q = [_mm256_setzero_si256(); RM];
        let mut aq = [_mm256_setzero_si256(); RM];
        for i in 0..RM {
            q[i] = load256(wb.add(i * ws + 2));
            aq[i] = _mm256_sign_epi8(q[i], q[i]);
        }
        for j in 0..RN {
            let y = load256(x.add(j * xs + l * BQ8_0 + 2));
            let mut p = [_mm256_setzero_si256(); RM];
            for i in 0..RM {
                let p16 = _mm256_maddubs_epi16(aq[i], _mm256_sign_epi8(y, q[i]));
                p[i] = _mm256_madd_epi16(p16, ones);
            }
            // Rows >= RM repeat others' sums in lanes whose scales are 0.
            let h01 = _mm256_hadd_epi32(p[0], p[1.min(RM - 1)]);
            let h23 = if RM > 2 {
                _mm256_hadd_epi32(p[2], p[3.min(RM - 1)])
            } else {
                h01
            };
            let s = _mm256_hadd_epi32(h01, h23);
            let d = _mm256_mul_ps(dw, broadcast_load(dx.as_ptr().add(j)));
            acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[j]);
        }
    }
    let mut out = [[0f32; RM]; RN];
    for j in 0..RN {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[j]);
        for i in 0..RM {
            out[j][i] = lanes[i] + lanes[i + 4];
        }
    }
    out
}

/// Prefetches the cache lines of `bytes` bytes from `p` (all but possibly the
/// last line, which the next span's first prefetch covers when spans are
/// consecutive). Prefetches never fault, so `p` may be past the data.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch_span(p: *const u8, bytes: usize) {
    let mut o = 0;
    while o < bytes {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o) as *const i8);
        o += 64;
    }
}

/// Lane `i` (< 4) of each 128-bit half, broadcast over that half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn lane8(d: __m256, i: usize) -> __m256 {
    match i {
        0 => _mm256_permute_ps(d, 0x00),
        1 => _mm256_permute_ps(d, 0x55),
        2 => _mm256_permute_ps(d, 0xAA),
        _ => _mm256_permute_ps(d, 0xFF),
    }
}

/// Two 16-byte loads as one 32-byte register (`lo` in the low half).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load2x128(lo: *const u8, hi: *const u8) -> __m256i {
    _mm256_loadu2_m128i(hi as *const __m128i, lo as *const __m128i)
}

/// One step of [`tile_q4_0`]: blocks `l` and, if `TWO`, `l + 1` (else the
/// high halves are zero and add exact zeros).
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_step<const RM: usize, const RN: usize, const TWO: bool>(
    l: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    acc: &mut [[__m256; RM]; RN],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let eight = _mm256_set1_epi8(8);
    let (mut b0, mut b1) = (0u64, 0u64);
    for i in 0..RM {
        let wb = w.add(i * ws + l * BQ4_0);
        b0 |= ((wb as *const u16).read_unaligned() as u64) << (16 * i);
        if TWO {
            b1 |= ((wb.add(BQ4_0) as *const u16).read_unaligned() as u64) << (16 * i);
        }
    }
    // Lanes 0..4: the rows' scales of block l; lanes 4..8: of block l + 1.
    let dw = _mm256_cvtph_ps(_mm_set_epi64x(b1 as i64, b0 as i64));
    let mut dd = [_mm256_setzero_ps(); RN];
    let mut ylo = [_mm256_setzero_si256(); RN];
    let mut yhi = [_mm256_setzero_si256(); RN];
    let mut offs = [_mm256_setzero_si256(); RN];
    for j in 0..RN {
        let xb = x.add(j * xs + l * BQ8_0);
        let (dx, dx1) = if TWO {
            ylo[j] = load2x128(xb.add(2), xb.add(BQ8_0 + 2));
            yhi[j] = load2x128(xb.add(18), xb.add(BQ8_0 + 18));
            (f16_at(xb), f16_at(xb.add(BQ8_0)))
        } else {
            ylo[j] = _mm256_zextsi128_si256(_mm_loadu_si128(xb.add(2) as *const __m128i));
            yhi[j] = _mm256_zextsi128_si256(_mm_loadu_si128(xb.add(18) as *const __m128i));
            (f16_at(xb), 0.0)
        };
        dd[j] = _mm256_mul_ps(dw, _mm256_set_m128(_mm_set1_ps(dx1), _mm_set1_ps(dx)));
        offs[j] = _mm256_add_epi16(
            _mm256_maddubs_epi16(eight, ylo[j]),
            _mm256_maddubs_epi16(eight, yhi[j]),
        );
    }
    for i in 0..RM {
        let wb = w.add(i * ws + l * BQ4_0 + 2);
        let raw = if TWO {
            load2x128(wb, wb.add(BQ4_0))
        } else {
            _mm256_zextsi128_si256(_mm_loadu_si128(wb as *const __m128i))
        };
        let lo = _mm256_and_si256(raw, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        for j in 0..RN {
            let p16 = _mm256_sub_epi16(
                _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, ylo[j]),
                    _mm256_maddubs_epi16(hi, yhi[j]),
                ),
                offs[j],
            );
            let p = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
            acc[j][i] = _mm256_fmadd_ps(lane8(dd[j], i), _mm256_cvtepi32_ps(p), acc[j][i]);
        }
    }
}

/// [`tile_q8`] for Q4_0, two blocks per step: the low halves of a register
/// hold block `l`, the high halves block `l + 1`, so one load, mask and shift
/// decode 64 weights and one convert + FMA scales two blocks. Lane `k` of a
/// block sums the products of elements `4k..4k+4` and `16+4k..16+4k+4`
/// (`u * y` in i16 pairs, minus `8 * y`, exact: |sum| < 2^14).
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_q4_0<const RM: usize, const RN: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [[f32; RM]; RN] {
    let mut acc = [[_mm256_setzero_ps(); RM]; RN];
    let mut l = 0;
    while l + 2 <= nb {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(l * RM * BQ4_0), 2 * RM * BQ4_0);
        }
        q4_0_step::<RM, RN, true>(l, w, ws, x, xs, &mut acc);
        l += 2;
    }
    if l < nb {
        q4_0_step::<RM, RN, false>(l, w, ws, x, xs, &mut acc);
    }
    hsum_tile(&acc)
}

/// The horizontal sums of a tile of accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_tile<const RM: usize, const RN: usize>(acc: &[[__m256; RM]; RN]) -> [[f32; RM]; RN] {
    let mut out = [[0f32; RM]; RN];
    for (o, a) in out.iter_mut().zip(acc) {
        for (e, v) in o.iter_mut().zip(a) {
            *e = hsum_ps(*v);
        }
    }
    out
}

/// Writes the tile results to `y[t * ys + r]`.
#[inline]
unsafe fn store_tile<const RM: usize, const RN: usize>(v: [[f32; RM]; RN], y: *mut f32, ys: usize) {
    for (j, row) in v.iter().enumerate() {
        for (i, &e) in row.iter().enumerate() {
            *y.add(j * ys + i) = e;
        }
    }
}

/// Decode tiles of at most this many weight bytes prefetch the next tile
/// (spread over their blocks); longer ones (4 rows of 14336 Q8_0 = 61 KB)
/// would prefetch too far ahead for L1.
const SHORT_TILE_BYTES: usize = 16384;

/// Products of `rows` weight rows (`w`, `wrb` bytes apart) with `toks` Q8_0
/// activation rows (`x`, `xrb` bytes apart), `n` elements each, into
/// `y[t * ys + r]`: 4 x [`Q8Weights::TOKENS`] register tiles (4 x 1 for one
/// token), smaller at the edges.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_q8<W: Q8Weights>(
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
    let mut r = 0;
    while r < rows {
        let rm = (rows - r).min(4);
        let wr = w.add(r * wrb);
        // Short rows (e.g. the 151936 x 1024 output head): a 4-row tile
        // reads 4 short interleaved streams that the hardware prefetcher
        // does not pick up in time, so the tile prefetches the next tile (the
        // rows are consecutive), spread over its block loop so that few
        // misses are outstanding at a time.
        let pf = if toks == 1 && rm == 4 && 4 * wrb <= SHORT_TILE_BYTES && wrb == nb * W::BYTES {
            wr.wrapping_add(4 * wrb)
        } else {
            std::ptr::null()
        };
        let mut t = 0;
        while t < toks {
            let rn = (toks - t).min(W::TOKENS);
            let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
            macro_rules! go {
                ($m:literal, $n:literal) => {
                    store_tile(W::tile::<$m, $n>(nb, wr, wrb, xt, xrb, pf), yt, ys)
                };
            }
            tile_up_to_4x3!(rm, rn, go);
            t += rn;
        }
        r += rm;
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_q4_0_q8_0(
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
    gemm_q8::<Q4_0W>(n, w, wrb, rows, x, xrb, toks, y, ys)
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_q5_0_q8_0(
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
    gemm_q8::<Q5_0W>(n, w, wrb, rows, x, xrb, toks, y, ys)
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_q8_0_q8_0(
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
    gemm_q8::<Q8_0W>(n, w, wrb, rows, x, xrb, toks, y, ys)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_q8_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ4K && x.len() >= n / QK_K * BQ8K);
    tile_q4_k::<1>(n / QK_K, w.as_ptr(), x.as_ptr(), 0, std::ptr::null())[0]
}

/// `vpshufb`, kept one instruction: LLVM turns a byte shuffle by a constant
/// mask that moves whole i16 lanes into `vpshuflw`/`vpshufhw` + `vpshufd`,
/// two vector-pipe µops where one does. The one-token Q6_K rows are bound
/// by those pipes (llvm-mca, znver3: ~24 cycles of vector µops per
/// super-block), so 8 fewer per super-block: EPYC, 1 thread,
/// `meki-bench kernels --formats q6_K`, one token, medians of 8 alternated
/// runs 25.2 -> 25.9 GB/s (1024x1024), 28.0 -> 28.6 (2048x6144).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn shuffle_bytes(a: __m256i, mask: __m256i) -> __m256i {
    let r: __m256i;
    // SAFETY: one register-only AVX2 instruction (no memory, stack or
    // flags); AVX2 is this function's target feature.
    std::arch::asm!(
        "vpshufb {r}, {a}, {m}",
        r = lateout(ymm_reg) r,
        a = in(ymm_reg) a,
        m = in(ymm_reg) mask,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

/// `vpshufb` masks that broadcast i16 element `k` over each 128-bit half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i16_lane_mask(k: usize) -> __m256i {
    _mm256_set1_epi16((2 * k as i16) | ((2 * k as i16 + 1) << 8))
}

/// One Q4_K weight row against RN Q8_K activation rows (`x + j * xs`), `nb`
/// super-blocks. Per super-block and token: the integer sum of
/// `scale_s * (q . y)_s` over the 8 sub-blocks (exact i32, in 8 lanes) times
/// `d * d_y`, then `-dmin * d_y` times the sum of `min_s * bsum_s` (exact, 4
/// lanes), both FMAed into one f32 accumulator per token.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_q4_k<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [f32; RN] {
    tile_q45_k::<false, RN>(nb, w, x, xs, pf)
}

/// [`tile_q4_k`] for Q5_K: the same with the fifth bit of every quant.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_q5_k<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [f32; RN] {
    tile_q45_k::<true, RN>(nb, w, x, xs, pf)
}

/// Q4_K (`FIVE` false) or Q5_K (true) tile, see [`tile_q4_k`].
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q45_k<const FIVE: bool, const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [f32; RN] {
    let mut acc = [_mm256_setzero_ps(); RN];
    q45_k_blocks::<FIVE, RN>(0, nb, w, x, xs, pf, &mut acc);
    hsum_col(&acc)
}

/// The 8 six-bit scales and 8 mins of the k-quant super-block at `wb`
/// (`d`, `dmin`, then the 12 packed scale bytes, Q4_K and Q5_K), unpacked
/// with vector operations from one 16-byte load (the scalar unpacking and
/// its moves to a vector register cost twice the µops): bytes 0..8 are
/// scales 0..7, bytes 8..16 mins 0..7.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_mins_k4(wb: *const u8) -> __m128i {
    // Dwords u0, u1, u2 of the scale bytes (the fourth is quants, unused).
    let v = _mm_loadu_si128(wb.add(4) as *const __m128i);
    // Scales 0..3 = u0 & 0x3f.., mins 0..3 = u1 & 0x3f..
    let low = _mm_and_si128(v, _mm_set1_epi32(0x3f3f3f3f));
    // Scales 4..7 = (u2 & 0x0f..) | ((u0 >> 2) & 0x30..), mins 4..7 =
    // ((u2 >> 4) & 0x0f..) | ((u1 >> 2) & 0x30..): the four terms in the
    // dwords of t, then OR'ed pairwise.
    let w = _mm_shuffle_epi32(v, 0b01_00_10_10); // u2, u2, u0, u1
    let t = _mm_and_si128(
        _mm_srlv_epi32(w, _mm_setr_epi32(0, 4, 2, 2)),
        _mm_setr_epi32(0x0f0f0f0f, 0x0f0f0f0f, 0x30303030, 0x30303030),
    );
    let high = _mm_or_si128(t, _mm_shuffle_epi32(t, 0b11_10_11_10));
    _mm_unpacklo_epi32(low, high)
}

/// `vpshufb` masks: `[s]` (s < 8) zero-extends byte `s` of each 128-bit
/// half (scale `s` of [`scales_mins_k4`]) into every i16, `[8]` bytes
/// 8..16 (the mins) into the 8 i16 of each half. Hidden from the optimizer,
/// which turns a constant splat `vpshufb` into a shift and a
/// `vpbroadcastw`: two µops (the broadcast on Intel's port 5 alone)
/// instead of one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_masks_k4() -> [__m256i; 9] {
    let splat = |s: i16| _mm256_set1_epi16(s | (0x80 << 8));
    let mins = _mm_setr_epi8(
        8, -128, 9, -128, 10, -128, 11, -128, 12, -128, 13, -128, 14, -128, 15, -128,
    );
    std::hint::black_box([
        splat(0),
        splat(1),
        splat(2),
        splat(3),
        splat(4),
        splat(5),
        splat(6),
        splat(7),
        _mm256_broadcastsi128_si256(mins),
    ])
}

/// Super-blocks `i0..i1` of [`tile_q45_k`], accumulated into `acc` (see
/// [`q6_k_blocks`]).
#[inline]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45_k_blocks<const FIVE: bool, const RN: usize>(
    i0: usize,
    i1: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
    acc: &mut [__m256; RN],
) {
    let mut a = *acc;
    let bytes = if FIVE { BQ5K } else { BQ4K };
    let m4 = _mm256_set1_epi8(0x0F);
    let masks = scale_masks_k4();
    for i in i0..i1 {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(i * bytes), bytes);
        }
        let wb = w.add(i * bytes);
        let sm = scales_mins_k4(wb);
        let mins = _mm_shuffle_epi8(sm, _mm256_castsi256_si128(masks[8]));
        let sm = _mm256_broadcastsi128_si256(sm);
        // (d, dmin) in every lane pair: times d_y gives d * d_y and
        // dmin * d_y (the product the scalar code negates; the FNMA below
        // subtracts it instead, the same single rounding).
        let dpair = _mm256_cvtph_ps(_mm_set1_epi32((wb as *const i32).read_unaligned()));
        let (dw, dmw) = (
            _mm256_permute_ps(dpair, 0x00),
            _mm256_permute_ps(dpair, 0x55),
        );
        let mut sumi = [_mm256_setzero_si256(); RN];
        let (q4, mut hbits) = if FIVE {
            (wb.add(48), load256(wb.add(16)))
        } else {
            (wb.add(16), _mm256_setzero_si256())
        };
        for k in 0..QK_K / 64 {
            let bits = load256(q4.add(32 * k));
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if FIVE {
                // Bit 2k of each hbits byte is the fifth bit of the low
                // nibbles of chunk k, bit 2k+1 of the high nibbles.
                // (`hbits` is shifted right by 2 after each chunk; bits that
                // cross a byte in the 16-bit shifts are masked off.)
                let b16 = _mm256_set1_epi8(0x10);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hbits, 4), b16));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hbits, 3), b16));
                hbits = _mm256_srli_epi16(hbits, 2);
            }
            let sl = _mm256_shuffle_epi8(sm, masks[2 * k]);
            let sh = _mm256_shuffle_epi8(sm, masks[2 * k + 1]);
            for j in 0..RN {
                let q8 = x.add(j * xs + i * BQ8K + 4 + 64 * k);
                let pl = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(lo, load256(q8)));
                let ph = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(hi, load256(q8.add(32))));
                sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(pl, ph));
            }
        }
        for j in 0..RN {
            let xb = x.add(j * xs + i * BQ8K);
            // Pairs of 16-quant sums: the 32-quant sums of the sub-blocks.
            let bs = xb.add(4 + QK_K);
            let pairs = _mm_hadd_epi16(
                _mm_loadu_si128(bs as *const __m128i),
                _mm_loadu_si128(bs.add(16) as *const __m128i),
            );
            let prod_m = _mm256_zextsi128_si256(_mm_madd_epi16(mins, pairs));
            let dy = _mm256_set1_ps(f32_at(xb));
            let (d, dm) = if RN == 1 {
                let dd = _mm256_mul_ps(dpair, dy);
                (_mm256_permute_ps(dd, 0x00), _mm256_permute_ps(dd, 0x55))
            } else {
                // d and dmin broadcast once per super-block, not per token.
                (_mm256_mul_ps(dw, dy), _mm256_mul_ps(dmw, dy))
            };
            a[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[j]), a[j]);
            a[j] = _mm256_fnmadd_ps(dm, _mm256_cvtepi32_ps(prod_m), a[j]);
        }
    }
    *acc = a;
}

/// The horizontal sums of one accumulator per token.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_col<const RN: usize>(acc: &[__m256; RN]) -> [f32; RN] {
    let mut out = [0f32; RN];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = hsum_ps(*a);
    }
    out
}

/// Defines a [`crate::dot::GemmFn`] from a one-row k-quant tile
/// (`tile::<RN>(nb, w, x, xs)`): each weight row against up to `$rn` (<= 8)
/// tokens at a time (8 measured ~10% faster than 4 for Q4_K/Q5_K prefill:
/// the row's decode and scales are shared by more tokens).
macro_rules! gemm_row_x4 {
    ($name:ident, $tile:ident, $blocks:ident, $rn:literal) => {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name(
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
            if toks > 1 && nb >= 2 * K_PIECE {
                // Prefill in pieces of K (see `K_PIECE`): for each piece,
                // every row against every token group, the accumulators
                // kept in memory between pieces (the same operations per
                // lane as in one pass, so the results are bit-identical).
                let groups = toks.div_ceil($rn);
                let mut acc = vec![[_mm256_setzero_ps(); $rn]; rows * groups];
                let pf = std::ptr::null();
                let mut i0 = 0;
                while i0 < nb {
                    let i1 = (i0 + K_PIECE).min(nb);
                    for (r, ar) in acc.chunks_exact_mut(groups).enumerate() {
                        let wr = w.add(r * wrb);
                        for (g, a) in ar.iter_mut().enumerate() {
                            let t = g * $rn;
                            let xt = x.add(t * xrb);
                            macro_rules! go {
                                ($n:literal) => {{
                                    let mut v = [_mm256_setzero_ps(); $n];
                                    v.copy_from_slice(&a[..$n]);
                                    $blocks::<$n>(i0, i1, wr, xt, xrb, pf, &mut v);
                                    a[..$n].copy_from_slice(&v);
                                }};
                            }
                            match (toks - t).min($rn) {
                                8 => go!(8),
                                7 => go!(7),
                                6 => go!(6),
                                5 => go!(5),
                                4 => go!(4),
                                3 => go!(3),
                                2 => go!(2),
                                _ => go!(1),
                            }
                        }
                    }
                    i0 = i1;
                }
                for (r, ar) in acc.chunks_exact(groups).enumerate() {
                    for t in 0..toks {
                        *y.add(t * ys + r) = hsum_ps(ar[t / $rn][t % $rn]);
                    }
                }
                return;
            }
            // Decode: prefetch the row at least DECODE_ROW_PREFETCH_BYTES
            // ahead, spread over this one's blocks (see `gemm_q8`). One row
            // at a time is a single stream that the hardware prefetcher
            // alone leaves ~30% below the bandwidth (4096 x 14336 Q4_K: 8.5
            // -> 12 GB/s). (`max(1)`: rows of no columns prefetch nothing.)
            let pf_ahead = (toks == 1 && wrb <= SHORT_TILE_BYTES)
                .then(|| DECODE_ROW_PREFETCH_BYTES.div_ceil(wrb.max(1)) * wrb);
            // And two streams: the call's first and second halves of rows
            // side by side (row i, then row half + i), two sequential runs
            // of misses in flight where one row after the other left the
            // core waiting on its single stream (as the packed decode
            // kernels found, `avx2_repack_decode.rs`). EPYC, 1 thread, the
            // 151936x1024 head: Q6_K 13.3-14.0 -> 14.9-16.0 GB/s, Q4_K
            // 10.4-11.7 -> 13.1-14.1; 0.6B tg64 Q4_0 (its Q6_K head)
            // 1.06x, Q4_K_M 1.11x. Same rows, same operations: the same
            // bits.
            for r in decode_row_order(rows, toks) {
                let wr = w.add(r * wrb);
                let pf = match pf_ahead {
                    Some(ahead) => wr.wrapping_add(ahead),
                    None => std::ptr::null(),
                };
                let mut t = 0;
                while t < toks {
                    let rn = (toks - t).min($rn);
                    let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
                    match rn {
                        8 => store_col($tile::<8>(nb, wr, xt, xrb, pf), yt, ys),
                        7 => store_col($tile::<7>(nb, wr, xt, xrb, pf), yt, ys),
                        6 => store_col($tile::<6>(nb, wr, xt, xrb, pf), yt, ys),
                        5 => store_col($tile::<5>(nb, wr, xt, xrb, pf), yt, ys),
                        4 => store_col($tile::<4>(nb, wr, xt, xrb, pf), yt, ys),
                        3 => store_col($tile::<3>(nb, wr, xt, xrb, pf), yt, ys),
                        2 => store_col($tile::<2>(nb, wr, xt, xrb, pf), yt, ys),
                        _ => store_col($tile::<1>(nb, wr, xt, xrb, pf), yt, ys),
                    }
                    t += rn;
                }
            }
        }
    };
}

gemm_row_x4!(gemm_q4_k_q8_k, tile_q4_k, q4_k_blocks, 8);
gemm_row_x4!(gemm_q5_k_q8_k, tile_q5_k, q5_k_blocks, 8);
gemm_row_x4!(gemm_q6_k_q8_k, tile_q6_k, q6_k_blocks, 8);

/// The order in which the row products visit `rows` rows: for one token
/// the two halves side by side (row i, then row half + i), two streams of
/// misses in flight; otherwise front to back.
fn decode_row_order(rows: usize, toks: usize) -> impl Iterator<Item = usize> {
    let half = if toks == 1 { rows.div_ceil(2) } else { rows };
    (0..half)
        .flat_map(move |i| [i, i + half])
        .filter(move |&r| r < rows)
}

/// How far ahead the k-quant decode rows prefetch (whole rows, at least
/// one): the next row alone is too close for short rows. An output head of
/// 1024 columns (Q6_K rows of 840 bytes) runs ~3 rows ahead: kernel bench
/// 151936x1024, one EPYC core, 13.4 -> 16.7 GB/s (means of 3 alternated
/// runs), 0.6B Q4_0 decode (its head is Q6_K) 1.04x (6 alternated rounds).
const DECODE_ROW_PREFETCH_BYTES: usize = 2048;

/// Super-blocks per piece of K in the k-quant prefill: 4 (1024 columns)
/// keep a 16-token tile's part of the activations (16 x 4 x 292 bytes =
/// 18.7 KB) in L1 while the chunk's rows pass over it, where whole rows
/// re-read 8 tokens' activations (131 KB for 14336 columns) from L2 for
/// every weight row.
const K_PIECE: usize = 4;

#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_blocks<const RN: usize>(
    i0: usize,
    i1: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
    acc: &mut [__m256; RN],
) {
    q45_k_blocks::<false, RN>(i0, i1, w, x, xs, pf, acc)
}

#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_blocks<const RN: usize>(
    i0: usize,
    i1: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
    acc: &mut [__m256; RN],
) {
    q45_k_blocks::<true, RN>(i0, i1, w, x, xs, pf, acc)
}

/// Writes one row's results for RN tokens to `y[t * ys]`.
#[inline]
unsafe fn store_col<const RN: usize>(v: [f32; RN], y: *mut f32, ys: usize) {
    for (j, &e) in v.iter().enumerate() {
        *y.add(j * ys) = e;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_k_q8_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ5K && x.len() >= n / QK_K * BQ8K);
    tile_q5_k::<1>(n / QK_K, w.as_ptr(), x.as_ptr(), 0, std::ptr::null())[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k_q8_k(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= n / QK_K * BQ6K && x.len() >= n / QK_K * BQ8K);
    tile_q6_k::<1>(n / QK_K, w.as_ptr(), x.as_ptr(), 0, std::ptr::null())[0]
}

/// One Q6_K weight row against RN Q8_K activation rows, `nb` super-blocks:
/// per super-block and token the exact i32 sum of `scale_g * (q . y)_g` over
/// the 16 groups (the -32 offset of every quant folded in once through the
/// activation block sums), times `d * d_y`.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_q6_k<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [f32; RN] {
    let mut acc = [_mm256_setzero_ps(); RN];
    q6_k_blocks::<RN>(0, nb, w, x, xs, pf, &mut acc);
    hsum_col(&acc)
}

/// Super-blocks `i0..i1` of [`tile_q6_k`], accumulated into `acc` (one
/// vector per token): a row can be taken in pieces of K with the same
/// operations in the same order per lane as in one pass.
#[inline]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_blocks<const RN: usize>(
    i0: usize,
    i1: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: *const u8,
    acc: &mut [__m256; RN],
) {
    let mut a = *acc;
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x30);
    let even_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let mut dd = [0f32; 8];
    for i in i0..i1 {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(i * BQ6K), BQ6K);
        }
        let wb = w.add(i * BQ6K);
        let raw = _mm_loadu_si128(wb.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(raw);
        // Even-numbered group scales in the low half, odd in the high half:
        // one shuffle then gives the scales of a 32-quant vector's two groups.
        let sc_eo = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(raw, even_odd));
        let wd = f16_at(wb.add(208));
        let mut sumi = [_mm256_setzero_si256(); RN];
        for j in 0..RN {
            let xb = x.add(j * xs + i * BQ8K);
            dd[j] = f32_at(xb) * wd;
            // 32 * sum_g scale_g * bsum_g: the -32 offset of every quant.
            let offs = _mm256_madd_epi16(sc16, load256(xb.add(4 + QK_K)));
            sumi[j] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offs, 5));
        }
        for h in 0..2 {
            let ql = wb.add(64 * h);
            let qh = load256(wb.add(128 + 32 * h));
            let b1 = load256(ql);
            let b2 = load256(ql.add(32));
            for k in 0..4 {
                let q = match k {
                    0 => _mm256_or_si256(
                        _mm256_and_si256(b1, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2),
                    ),
                    1 => _mm256_or_si256(
                        _mm256_and_si256(b2, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2),
                    ),
                    2 => _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                        _mm256_and_si256(qh, m2),
                    ),
                    _ => _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2),
                    ),
                };
                // One token: one `vpshufb` ([`shuffle_bytes`]); with more,
                // the compiler's two shuffles spare a register the tokens'
                // accumulators need (6144-column prefill ran ~0.85x).
                let mask = i16_lane_mask(4 * h + k);
                let s = if RN == 1 {
                    shuffle_bytes(sc_eo, mask)
                } else {
                    _mm256_shuffle_epi8(sc_eo, mask)
                };
                for j in 0..RN {
                    let y = load256(x.add(j * xs + i * BQ8K + 4 + 128 * h + 32 * k));
                    let p = _mm256_maddubs_epi16(q, y);
                    sumi[j] = _mm256_add_epi32(sumi[j], _mm256_madd_epi16(s, p));
                }
            }
        }
        for j in 0..RN {
            let d = broadcast_load(dd.as_ptr().add(j));
            a[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[j]), a[j]);
        }
    }
    *acc = a;
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16x8(p: *const u8) -> __m256 {
    let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
}

/// Float element formats: 8 elements to f32 lanes, one element to f32. The
/// weight formats (F32, F16, BF16), which also type the activations of the
/// float products (f32, or f16 where a path rounds them: `F16W`, and
/// [`F32AsF16`], f32 rounded as loaded).
pub(crate) trait FloatWeights {
    const TYPE: GgmlType;
    const BYTES: usize;
    unsafe fn load8(p: *const u8) -> __m256;
    unsafe fn load1(p: *const u8) -> f32;
}

pub(crate) struct F32W;
pub(crate) struct F16W;
pub(crate) struct BF16W;
/// f32 activations read as their f16 roundings (round to nearest even, as
/// F16C's `vcvtps2ph` and ggml's `fp32_to_fp16` round): the row dot of the
/// F16 rows decode, equal bit for bit to its product over the converted
/// activations ([`round_to_f16`]) without a buffer.
pub(crate) struct F32AsF16;

impl FloatWeights for F32W {
    const TYPE: GgmlType = GgmlType::F32;
    const BYTES: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load1(p: *const u8) -> f32 {
        f32_at(p)
    }
}

impl FloatWeights for F16W {
    const TYPE: GgmlType = GgmlType::F16;
    const BYTES: usize = 2;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        load_f16x8(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load1(p: *const u8) -> f32 {
        f16_at(p)
    }
}

impl FloatWeights for F32AsF16 {
    const TYPE: GgmlType = GgmlType::F32;
    const BYTES: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        let v = _mm256_loadu_ps(p as *const f32);
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load1(p: *const u8) -> f32 {
        let v = _mm_set_ss(f32_at(p));
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)))
    }
}

/// Whether the [`FloatDecode::Rows`] product of `W` rows of `n` elements
/// reads its activations rounded to f16
/// ([`crate::matmul::F16_DECODE_F32_ACTS_MAX_COLS`]).
#[inline]
fn f16_acts<W: FloatWeights>(n: usize) -> bool {
    W::TYPE == GgmlType::F16 && n > crate::matmul::F16_DECODE_F32_ACTS_MAX_COLS
}

/// `n` f32 values at `src` rounded to f16 (round to nearest even) into
/// `dst`: the loads of [`F32AsF16`], stored.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn round_to_f16(n: usize, src: *const u8, dst: *mut u16) {
    let mut k = 0;
    while k + 8 <= n {
        let v = _mm256_loadu_ps(src.add(4 * k) as *const f32);
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        _mm_storeu_si128(dst.add(k) as *mut __m128i, h);
        k += 8;
    }
    for e in k..n {
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(f32_at(src.add(4 * e))));
        *dst.add(e) = _mm_extract_epi16::<0>(h) as u16;
    }
}

impl FloatWeights for BF16W {
    const TYPE: GgmlType = GgmlType::BF16;
    const BYTES: usize = 2;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u8) -> __m256 {
        load_bf16x8(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load1(p: *const u8) -> f32 {
        f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
    }
}

/// Accumulators of a float row dot with [`FloatDecode::Rows`] (the order of
/// the row dots, decode and products of fewer than
/// [`crate::matmul::FLOAT_BLOCKED_MIN_TOKENS`] tokens; also attention's f16
/// dot): 8-element block `b` of a row goes into accumulator `b % 4`, in
/// element order; the dot is the horizontal sum of `(a0 + a1) + (a2 +
/// a3)`, plus the `n % 8` tail in scalar order. Four chains let one row be
/// read as one sequential stream at full speed (a single chain waits on
/// FMA latency): decode reads one row at a time, which on a Zen 4 core ran
/// 1.2-1.4x faster end to end than tiles of 4 rows interleaved (4 streams,
/// one chain each; F16, 1 thread), and 1.4-1.5x slower on a Xeon (see
/// [`FloatDecode`]). The blocked prefill keeps one
/// chain per output (its 4 x 3 register tile has no room for four; a pass
/// per chain measured ~15% slower), so its outputs can differ from these
/// in the last bits, as llama.cpp's batched and single-token products do.
const FLOAT_CHAINS: usize = 4;

/// The dot of one accumulator set: [`FLOAT_CHAINS`]' combination order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_chains(a: [__m256; FLOAT_CHAINS]) -> f32 {
    hsum_ps(_mm256_add_ps(
        _mm256_add_ps(a[0], a[1]),
        _mm256_add_ps(a[2], a[3]),
    ))
}

/// The row dot of a float matrix: the order of its decode
/// ([`crate::FloatDecode`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_float<W: FloatWeights>(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= W::BYTES * n && x.len() >= 4 * n);
    match crate::float_decode() {
        FloatDecode::Rows if f16_acts::<W>(n) => {
            row_float::<W, F32AsF16, 1>(n, w.as_ptr(), x.as_ptr(), 0)[0]
        }
        FloatDecode::Rows => row_float::<W, F32W, 1>(n, w.as_ptr(), x.as_ptr(), 0)[0],
        FloatDecode::Tiles => {
            tile_float::<W, 1, 1>(n, w.as_ptr(), 0, x.as_ptr(), 0, std::ptr::null())[0][0]
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    dot_float::<F32W>(n, w, x)
}

/// The F16 dot of [`crate::dot::dot_fn`] (matrix rows: the decode order).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_f32_matrix(n: usize, w: &[u8], x: &[u8]) -> f32 {
    dot_float::<F16W>(n, w, x)
}

/// The F16 dot of attention over the f16 key cache (rows used one at a
/// time: four chains, whatever the matrices' decode order).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && x.len() >= 4 * n);
    row_float::<F16W, F32W, 1>(n, w.as_ptr(), x.as_ptr(), 0)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    dot_float::<BF16W>(n, w, x)
}

/// One float weight row (`w`) times RN activation rows of type `X` (f32, or
/// f16 for long F16 rows: `x + j * xs`, bytes), `n` elements, in the order
/// of [`FLOAT_CHAINS`]: the row is read once, front to back (one stream),
/// for all RN tokens.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn row_float<W: FloatWeights, X: FloatWeights, const RN: usize>(
    n: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
) -> [f32; RN] {
    let mut acc = [[_mm256_setzero_ps(); FLOAT_CHAINS]; RN];
    let xv = |j: usize, k: usize| X::load8(x.add(j * xs + X::BYTES * k));
    let mut k = 0;
    while k + 8 * FLOAT_CHAINS <= n {
        let mut wv = [_mm256_setzero_ps(); FLOAT_CHAINS];
        for c in 0..FLOAT_CHAINS {
            wv[c] = W::load8(w.add(W::BYTES * (k + 8 * c)));
        }
        for j in 0..RN {
            for c in 0..FLOAT_CHAINS {
                acc[j][c] = _mm256_fmadd_ps(wv[c], xv(j, k + 8 * c), acc[j][c]);
            }
        }
        k += 8 * FLOAT_CHAINS;
    }
    let mut c = 0;
    while k + 8 <= n {
        let wv = W::load8(w.add(W::BYTES * k));
        for j in 0..RN {
            acc[j][c] = _mm256_fmadd_ps(wv, xv(j, k), acc[j][c]);
        }
        (c, k) = (c + 1, k + 8);
    }
    let mut out = [0f32; RN];
    for j in 0..RN {
        out[j] = sum_chains(acc[j]);
        let xr = x.add(j * xs);
        for e in k..n {
            out[j] += W::load1(w.add(W::BYTES * e)) * X::load1(xr.add(X::BYTES * e));
        }
    }
    out
}

/// RM float weight rows (`w + i * ws`) times RN f32 activation rows (`x + j *
/// xs`, bytes), `n` elements: one 8-lane FMA accumulator per pair, then the
/// `n % 8` tail in scalar order. A non-null `pf` is prefetched alongside, as
/// many bytes per step as the step reads from the RM rows (decode: the next
/// tile, when the rows are consecutive).
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_float<W: FloatWeights, const RM: usize, const RN: usize>(
    n: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    pf: *const u8,
) -> [[f32; RM]; RN] {
    let mut acc = [[_mm256_setzero_ps(); RM]; RN];
    let mut k = 0;
    let step = RM * 8 * W::BYTES;
    while k + 8 <= n {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(k / 8 * step), step);
        }
        let mut wv = [_mm256_setzero_ps(); RM];
        for i in 0..RM {
            wv[i] = W::load8(w.add(i * ws + W::BYTES * k));
        }
        for j in 0..RN {
            let xv = _mm256_loadu_ps(x.add(j * xs + 4 * k) as *const f32);
            for i in 0..RM {
                acc[j][i] = _mm256_fmadd_ps(wv[i], xv, acc[j][i]);
            }
        }
        k += 8;
    }
    let mut out = hsum_tile(&acc);
    for j in 0..RN {
        for i in 0..RM {
            let (a, b) = (w.add(i * ws), x.add(j * xs) as *const f32);
            for e in k..n {
                out[j][i] += W::load1(a.add(W::BYTES * e)) * b.add(e).read_unaligned();
            }
        }
    }
    out
}

/// RM f32 weight rows (`w + i * ws`) times RN f32 activation rows (`x + j *
/// xs`), `n` elements, in the prefill order (of every product of
/// [`crate::matmul::FLOAT_BLOCKED_MIN_TOKENS`] tokens or more): one 8-lane
/// FMA chain per output over the row in element order, its horizontal sum,
/// then the `n % 8` tail in scalar order; with the RN activation
/// vectors held in registers and each weight vector loaded once per step
/// (4 x 3: 12 accumulators + 3 + 1 registers, no spills).
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_f32_xreg<const RM: usize, const RN: usize>(
    n: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
) -> [[f32; RM]; RN] {
    let mut acc = [[_mm256_setzero_ps(); RM]; RN];
    let mut k = 0;
    while k + 8 <= n {
        let mut xv = [_mm256_setzero_ps(); RN];
        for j in 0..RN {
            xv[j] = _mm256_loadu_ps(x.add(j * xs + 4 * k) as *const f32);
        }
        for i in 0..RM {
            let wv = _mm256_loadu_ps(w.add(i * ws + 4 * k) as *const f32);
            for j in 0..RN {
                acc[j][i] = _mm256_fmadd_ps(wv, xv[j], acc[j][i]);
            }
        }
        k += 8;
    }
    let mut out = hsum_tile(&acc);
    for j in 0..RN {
        for i in 0..RM {
            let (a, b) = (w.add(i * ws) as *const f32, x.add(j * xs) as *const f32);
            for e in k..n {
                out[j][i] += a.add(e).read_unaligned() * b.add(e).read_unaligned();
            }
        }
    }
    out
}

/// f32 bytes of one converted row group: it stays in L2 while every token
/// streams past it.
const PACK_GROUP_BYTES: usize = 256 << 10;

thread_local! {
    /// Each thread's converted row group (reused across calls).
    static PACKED_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Prefill over f32 weight rows (`w`, `wrb` bytes apart): for each 3-token
/// group (in L1), every 4-row tile of the rows (streamed from L2), 4 x 3
/// register tiles, smaller at the edges.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_f32_rows(
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
    let mut t = 0;
    while t < toks {
        let rn = (toks - t).min(3);
        let xt = x.add(t * xrb);
        let mut r = 0;
        while r < rows {
            let rm = (rows - r).min(4);
            let (wr, yt) = (w.add(r * wrb), y.add(t * ys + r));
            macro_rules! go {
                ($m:literal, $n:literal) => {
                    store_tile(tile_f32_xreg::<$m, $n>(n, wr, wrb, xt, xrb), yt, ys)
                };
            }
            tile_up_to_4x3!(rm, rn, go);
            r += rm;
        }
        t += rn;
    }
}

/// Writes the `n` float weights at `src` to `dst` as f32 (exact for all
/// three formats).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn convert_row<W: FloatWeights>(src: *const u8, dst: *mut f32, n: usize) {
    let mut k = 0;
    while k + 8 <= n {
        _mm256_storeu_ps(dst.add(k), W::load8(src.add(W::BYTES * k)));
        k += 8;
    }
    while k < n {
        *dst.add(k) = W::load1(src.add(W::BYTES * k));
        k += 1;
    }
}

/// Prefill of F16/BF16 weights: groups of rows converted to f32 once
/// (exactly: both formats are subsets of f32) into a per-thread buffer, then
/// [`gemm_f32_rows`] over all tokens; the products are those of
/// [`tile_f32_xreg`] on the original rows, bit for bit.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_converted<W: FloatWeights>(
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
    // Rows 64-byte multiples apart, so that vector loads split no lines.
    let stride = n.next_multiple_of(16);
    let group = (PACK_GROUP_BYTES / (4 * stride)).clamp(4, rows.max(4)) / 4 * 4;
    PACKED_ROWS.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < group * stride {
            buf.resize(group * stride, 0.0);
        }
        let dst = buf.as_mut_ptr();
        let mut g0 = 0;
        while g0 < rows {
            let gr = (rows - g0).min(group);
            for i in 0..gr {
                convert_row::<W>(w.add((g0 + i) * wrb), dst.add(i * stride), n);
            }
            gemm_f32_rows(
                n,
                dst as *const u8,
                4 * stride,
                gr,
                x,
                xrb,
                toks,
                y.add(g0),
                ys,
            );
            g0 += gr;
        }
    });
}

/// Edge tiles of the blocked float product: RM weight rows of type `W`
/// (`w + i * ws`, bytes: the rows in place for F32 and for F16 with
/// [`crate::FloatPrefill::F16`], else the stretch converted to f32) times RN
/// activation rows of type `X` (f32, or f16 with [`crate::FloatPrefill::F16`]:
/// `x + j * xs`, bytes), `n` elements (a multiple of 8), continuing
/// the RM x RN 8-lane accumulators stored at `acc` (`acc[j * RM + i]`). Each
/// accumulator runs the FMA chain of [`tile_f32_xreg`] over this stretch of the
/// row, so a row split into stretches gives the same bits as one pass.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_float_stretch<W: FloatWeights, X: FloatWeights, const RM: usize, const RN: usize>(
    n: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    xs: usize,
    acc: *mut __m256,
) {
    let mut a = [[_mm256_setzero_ps(); RM]; RN];
    for j in 0..RN {
        for i in 0..RM {
            a[j][i] = _mm256_loadu_ps(acc.add(j * RM + i) as *const f32);
        }
    }
    let mut k = 0;
    while k < n {
        // The shorter side's vectors in registers, the other's loaded one
        // at a time (RM x RN accumulators + RM.min(RN) + 1 registers).
        if RM <= RN {
            let mut wv = [_mm256_setzero_ps(); RM];
            for i in 0..RM {
                wv[i] = W::load8(w.add(i * ws + W::BYTES * k));
            }
            for j in 0..RN {
                let xv = X::load8(x.add(j * xs + X::BYTES * k));
                for i in 0..RM {
                    a[j][i] = _mm256_fmadd_ps(wv[i], xv, a[j][i]);
                }
            }
        } else {
            let mut xv = [_mm256_setzero_ps(); RN];
            for j in 0..RN {
                xv[j] = X::load8(x.add(j * xs + X::BYTES * k));
            }
            for i in 0..RM {
                let wv = W::load8(w.add(i * ws + W::BYTES * k));
                for j in 0..RN {
                    a[j][i] = _mm256_fmadd_ps(wv, xv[j], a[j][i]);
                }
            }
        }
        k += 8;
    }
    for j in 0..RN {
        for i in 0..RM {
            _mm256_storeu_ps(acc.add(j * RM + i) as *mut f32, a[j][i]);
        }
    }
}

/// The 4 x 3 register tile of the blocked float product in assembly, over
/// weight and activation rows whose elements `$load` (`vmovups` for f32,
/// `vcvtph2ps` for f16) reads 8 at a time, `$size` bytes each.
macro_rules! stretch_4x3_asm {
    ($(#[$doc:meta])* $name:ident, $x:ty, $load:literal, $size:literal) => {
        $(#[$doc])*
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(
            n: usize,
            w: *const u8,
            ws: usize,
            x: *const $x,
            xs: usize,
            acc: *mut __m256,
            from_zero: bool,
        ) {
            debug_assert!(n > 0 && n.is_multiple_of(8));
            // SAFETY: the loop reads `n` elements of the 4 weight and 3
            // activation rows (the caller's contract) and 12 vectors at
            // `acc`, which it writes back; it touches no other memory and no
            // stack.
            unsafe {
                std::arch::asm!(
                    "test {z}, {z}",
                    "jz 3f",
                    "vxorps {a0}, {a0}, {a0}",
                    "vxorps {a1}, {a1}, {a1}",
                    "vxorps {a2}, {a2}, {a2}",
                    "vxorps {a3}, {a3}, {a3}",
                    "vxorps {a4}, {a4}, {a4}",
                    "vxorps {a5}, {a5}, {a5}",
                    "vxorps {a6}, {a6}, {a6}",
                    "vxorps {a7}, {a7}, {a7}",
                    "vxorps {a8}, {a8}, {a8}",
                    "vxorps {a9}, {a9}, {a9}",
                    "vxorps {a10}, {a10}, {a10}",
                    "vxorps {a11}, {a11}, {a11}",
                    "jmp 4f",
                    "3:",
                    "vmovups {a0}, [{acc}]",
                    "vmovups {a1}, [{acc} + 32]",
                    "vmovups {a2}, [{acc} + 64]",
                    "vmovups {a3}, [{acc} + 96]",
                    "vmovups {a4}, [{acc} + 128]",
                    "vmovups {a5}, [{acc} + 160]",
                    "vmovups {a6}, [{acc} + 192]",
                    "vmovups {a7}, [{acc} + 224]",
                    "vmovups {a8}, [{acc} + 256]",
                    "vmovups {a9}, [{acc} + 288]",
                    "vmovups {a10}, [{acc} + 320]",
                    "vmovups {a11}, [{acc} + 352]",
                    "4:",
                    "xor {k}, {k}",
                    "2:",
                    concat!($load, " {xa}, [{x0} + {k}*", $size, "]"),
                    concat!($load, " {xb}, [{x1} + {k}*", $size, "]"),
                    concat!($load, " {xc}, [{x2} + {k}*", $size, "]"),
                    concat!($load, " {t}, [{w0} + {k}*", $size, "]"),
                    "vfmadd231ps {a0}, {t}, {xa}",
                    "vfmadd231ps {a4}, {t}, {xb}",
                    "vfmadd231ps {a8}, {t}, {xc}",
                    concat!($load, " {t}, [{w1} + {k}*", $size, "]"),
                    "vfmadd231ps {a1}, {t}, {xa}",
                    "vfmadd231ps {a5}, {t}, {xb}",
                    "vfmadd231ps {a9}, {t}, {xc}",
                    concat!($load, " {t}, [{w2} + {k}*", $size, "]"),
                    "vfmadd231ps {a2}, {t}, {xa}",
                    "vfmadd231ps {a6}, {t}, {xb}",
                    "vfmadd231ps {a10}, {t}, {xc}",
                    concat!($load, " {t}, [{w3} + {k}*", $size, "]"),
                    "vfmadd231ps {a3}, {t}, {xa}",
                    "vfmadd231ps {a7}, {t}, {xb}",
                    "vfmadd231ps {a11}, {t}, {xc}",
                    "add {k}, 8",
                    "cmp {k}, {n}",
                    "jb 2b",
                    "vmovups [{acc}], {a0}",
                    "vmovups [{acc} + 32], {a1}",
                    "vmovups [{acc} + 64], {a2}",
                    "vmovups [{acc} + 96], {a3}",
                    "vmovups [{acc} + 128], {a4}",
                    "vmovups [{acc} + 160], {a5}",
                    "vmovups [{acc} + 192], {a6}",
                    "vmovups [{acc} + 224], {a7}",
                    "vmovups [{acc} + 256], {a8}",
                    "vmovups [{acc} + 288], {a9}",
                    "vmovups [{acc} + 320], {a10}",
                    "vmovups [{acc} + 352], {a11}",
                    n = in(reg) n,
                    z = in(reg) from_zero as usize,
                    acc = in(reg) acc,
                    w0 = in(reg) w,
                    w1 = in(reg) w.wrapping_add(ws),
                    w2 = in(reg) w.wrapping_add(2 * ws),
                    w3 = in(reg) w.wrapping_add(3 * ws),
                    x0 = in(reg) x,
                    x1 = in(reg) x.wrapping_add(xs),
                    x2 = in(reg) x.wrapping_add(2 * xs),
                    k = out(reg) _,
                    a0 = out(ymm_reg) _, a1 = out(ymm_reg) _, a2 = out(ymm_reg) _, a3 = out(ymm_reg) _,
                    a4 = out(ymm_reg) _, a5 = out(ymm_reg) _, a6 = out(ymm_reg) _, a7 = out(ymm_reg) _,
                    a8 = out(ymm_reg) _, a9 = out(ymm_reg) _, a10 = out(ymm_reg) _, a11 = out(ymm_reg) _,
                    xa = out(ymm_reg) _, xb = out(ymm_reg) _, xc = out(ymm_reg) _, t = out(ymm_reg) _,
                    options(nostack),
                );
            }
        }
    };
}

stretch_4x3_asm!(
    /// [`tile_float_stretch`]`::<4, 3>` in assembly. Sixteen registers: the 12 accumulators, the 3
    /// activation vectors of the step and one weight vector, which each of the 4
    /// rows loads into in turn (renaming keeps the loads independent). LLVM,
    /// given the same loop as intrinsics, keeps a second weight register and
    /// spills an accumulator, which puts a store and a reload on its FMA chain
    /// (measured: ~45 instead of ~105 GFLOP/s on one EPYC core, in L1).
    /// Each accumulator `acc[j * 4 + i]` runs `fma(w_i, x_j, acc)` over the
    /// stretch in element order: the chain of [`tile_f32_xreg`], from the
    /// values at `acc` or, `from_zero`, from zero (a row in one stretch:
    /// nothing to fill and load first).
    ///
    /// # Safety
    /// `n` a positive multiple of 8; rows `w + i * ws` (bytes) and `x + j *
    /// xs` (elements) readable for `n` elements; `acc` valid for 12
    /// unaligned `__m256` reads and writes.
    stretch_4x3_f32,
    f32,
    "vmovups",
    "4"
);

stretch_4x3_asm!(
    /// [`stretch_4x3_f32`] over f16 weight rows (`w + i * ws`, bytes) and
    /// f16 activation rows (`x + j * xs`, elements), both converted as
    /// loaded ([`crate::FloatPrefill::F16`]); the same accumulator chains.
    ///
    /// # Safety
    /// As [`stretch_4x3_f32`], the rows holding f16 elements.
    stretch_4x3_f16,
    u16,
    "vcvtph2ps",
    "2"
);

use crate::matmul::FLOAT_BLOCKED_MIN_TOKENS as BLOCKED_MIN_TOKENS;
/// Blocking of [`gemm_float_blocked`]: weight rows per block (one stretch
/// of them, BLOCK_ROWS x BLOCK_COLS f32 = 128 KiB, stays in L2 while the
/// block's tokens pass), row elements per stretch, tokens per block (their
/// rows stay in L3 while every row block passes).
const BLOCK_ROWS: usize = crate::matmul::FLOAT_BLOCK_ROWS;
const BLOCK_COLS: usize = 512;
const BLOCK_TOKENS: usize = 48;
/// Register tile: weight rows x tokens (12 accumulators, 3 activation
/// vectors and one weight vector: all 16 registers).
const TILE_ROWS: usize = 4;
const TILE_TOKENS: usize = 3;
/// f32 accumulators of one block's tiles.
const BLOCK_ACCS: usize = BLOCK_ROWS * BLOCK_TOKENS;

/// f32 between rows of a converted stretch (F16/BF16): rows 4 KiB apart
/// would share L1 sets.
const CONV_STRIDE: usize = BLOCK_COLS + 16;

/// A thread's tile accumulators and converted stretch.
type BlockBufs = (Vec<[f32; 8]>, Vec<[f32; 8]>);

thread_local! {
    /// Each thread's [`BlockBufs`] (reused across calls).
    static BLOCK_BUFS: std::cell::RefCell<BlockBufs> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Prefill over float weight rows, cache-blocked: for each block of
/// [`BLOCK_TOKENS`] tokens (their rows stay in L3), each block of
/// [`BLOCK_ROWS`] rows is walked in stretches of [`BLOCK_COLS`] elements;
/// each 3-token group's stretches (6 KiB of f32) stay in L1 while the row
/// block's 4-row tiles pass ([`stretch_4x3_f32`]; F16/BF16 stretches are
/// first converted to f32, once for all the block's tokens), and every tile
/// continues its accumulators from the previous stretch. Activations `X`
/// are f32, or f16 (F16 weights only, [`crate::FloatPrefill::F16`]: the
/// tiles then read the weight rows in place, [`stretch_4x3_f16`], each in
/// one stretch of the whole row). Then each
/// accumulator's horizontal sum plus the `n % 8` tail in scalar order, as
/// [`tile_f32_xreg`] does, so with f32 activations every output equals the
/// row dot of [`FloatDecode::Tiles`] bit for bit.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_float_blocked<W: FloatWeights, X: FloatWeights>(
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
    BLOCK_BUFS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (accs, conv) = &mut *bufs;
        if accs.len() < BLOCK_ACCS {
            accs.resize(BLOCK_ACCS, [0.0; 8]);
        }
        if W::BYTES != 4 && X::BYTES == 4 && conv.len() < BLOCK_ROWS * CONV_STRIDE / 8 {
            conv.resize(BLOCK_ROWS * CONV_STRIDE / 8, [0.0; 8]);
        }
        // A closure does not inherit `target_feature`: the work is a call
        // to a function that has it (so that the tiles inline).
        // SAFETY: the caller's contract, and the buffer just sized.
        unsafe {
            blocks::<W, X>(
                n,
                w,
                wrb,
                rows,
                x,
                xrb,
                toks,
                y,
                ys,
                accs.as_mut_ptr() as *mut __m256,
                conv.as_mut_ptr() as *mut f32,
            )
        }
    });
}

/// [`crate::dot::GemmFn`] of the F16 prefill with [`crate::FloatPrefill::F16`]:
/// F16 weights times f16 activation rows (`xrb` bytes apart, rounded by the
/// caller: [`round_to_f16`]) through the blocked product, the tiles
/// converting both as they load; at least [`BLOCKED_MIN_TOKENS`] tokens.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_f16_f16(
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
    gemm_float_blocked::<F16W, F16W>(n, w, wrb, rows, x, xrb, toks, y, ys);
}

/// Prefetches (into L1) the cache lines `first..first + count` of a stretch
/// of `rows` rows `rb` bytes apart from `p`, `lpr` lines per row, stopping
/// at the stretch's end.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_lines(
    p: *const u8,
    rb: usize,
    rows: usize,
    lpr: usize,
    first: usize,
    count: usize,
) {
    for line in first..(first + count).min(rows * lpr) {
        let a = p.wrapping_add(line / lpr * rb + line % lpr * 64);
        _mm_prefetch::<_MM_HINT_T0>(a as *const i8);
    }
}

/// The loops of [`gemm_float_blocked`], with its [`BLOCK_ACCS`]
/// accumulators at `acc`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks<W: FloatWeights, X: FloatWeights>(
    n: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    x: *const u8,
    xrb: usize,
    toks: usize,
    y: *mut f32,
    ys: usize,
    acc: *mut __m256,
    conv: *mut f32,
) {
    let n8 = n / 8 * 8;
    let row_tiles = BLOCK_ROWS / TILE_ROWS;
    // f16 activations come with F16 weights, which the tiles then read in
    // place ([`crate::FloatPrefill::F16`]); f32 ones with F32 weights in place or
    // F16/BF16 stretches converted to f32.
    debug_assert!(X::BYTES == 4 || W::TYPE == GgmlType::F16);
    let in_place = W::BYTES == 4 || X::BYTES == 2;
    let xs = xrb / X::BYTES;
    // The accumulators of the tile of row tile `rt`, token group `tg`.
    let tile_acc = |rt: usize, tg: usize| acc.add((tg * row_tiles + rt) * TILE_ROWS * TILE_TOKENS);
    // Elements per stretch. With f16 activations the whole row: no
    // stretches, each tile runs its full dot product in one pass, as
    // tinyBLAS's do (measured on the EPYC, 1 thread, 510 tokens: 6144x2048
    // 80 -> 94, 2048x2048 90 -> 97 GFLOP/s; end to end +5% prefill on the
    // 1.7B and 0.6B F16 shapes). 512-element stretches paid an accumulator
    // reload and store per 64 steps and kept the weights in L2 anyway.
    let stretch = if X::BYTES == 2 { n8.max(8) } else { BLOCK_COLS };
    for t0 in (0..toks).step_by(BLOCK_TOKENS) {
        let tb = (toks - t0).min(BLOCK_TOKENS);
        let xb = x.add(t0 * xrb);
        let groups = tb.div_ceil(TILE_TOKENS);
        for r0 in (0..rows).step_by(BLOCK_ROWS) {
            let rb = (rows - r0).min(BLOCK_ROWS);
            let wb = w.add(r0 * wrb);
            let quads = rb.div_ceil(TILE_ROWS);
            // Every tile starts from zero (bytes: `acc` is only f32-aligned):
            // set here when its row comes in several stretches, else by
            // the tile itself (one pass: no 96 KiB fill per block).
            let one_pass = n8 > 0 && n8 <= stretch;
            if !one_pass {
                std::ptr::write_bytes(acc as *mut u8, 0, BLOCK_ACCS * 32);
            }
            for k0 in (0..n8).step_by(stretch) {
                let kc = (n8 - k0).min(stretch);
                // The weights of the next stretch (or the next row block's
                // first, or this thread's first again for the next token
                // block), a few lines before each tile of this stretch's
                // pass: the first token group would otherwise wait on memory
                // for each row (measured ~88 -> ~91 GFLOP/s, F16, 1 thread).
                // Of a next row block at most its rows' first BLOCK_COLS
                // elements: whole rows (whole-row stretches) flooded L1
                // (4096x14336 ran ~70 instead of ~85 GFLOP/s on the EPYC).
                let (next, next_rows, next_cols) = if k0 + stretch < n8 {
                    (
                        wb.wrapping_add(W::BYTES * (k0 + stretch)),
                        rb,
                        (n8 - k0 - stretch).min(stretch),
                    )
                } else if r0 + BLOCK_ROWS < rows {
                    (
                        wb.wrapping_add(BLOCK_ROWS * wrb),
                        (rows - r0 - BLOCK_ROWS).min(BLOCK_ROWS),
                        n8.min(BLOCK_COLS),
                    )
                } else {
                    (w, rows.min(BLOCK_ROWS), n8.min(BLOCK_COLS))
                };
                let lpr = (next_cols * W::BYTES).div_ceil(64);
                let per_tile = (next_rows * lpr).div_ceil(groups * quads);
                let mut line = 0;
                // F16/BF16: the stretch converted to f32 once for all the
                // block's tokens. Converting in the tile loop instead (4
                // vcvtph2ps per 12 FMAs) ran ~10% slower on the Xeons
                // (measured end to end; conversions and FMAs share ports
                // there), ~5% faster on an EPYC.
                let (sw, sws) = if in_place {
                    (wb.add(W::BYTES * k0), wrb)
                } else {
                    for r in 0..rb {
                        let src = wb.add(r * wrb + W::BYTES * k0);
                        convert_row::<W>(src, conv.add(r * CONV_STRIDE), kc);
                    }
                    (conv as *const u8, 4 * CONV_STRIDE)
                };
                for tg in 0..groups {
                    let rn = (tb - tg * TILE_TOKENS).min(TILE_TOKENS);
                    let xt = xb.add(tg * TILE_TOKENS * xrb + X::BYTES * k0);
                    for rt in 0..quads {
                        let rm = (rb - rt * TILE_ROWS).min(TILE_ROWS);
                        let ct = sw.add(rt * TILE_ROWS * sws);
                        let a = tile_acc(rt, tg);
                        prefetch_lines(next, wrb, next_rows, lpr, line, per_tile);
                        line += per_tile;
                        if (rm, rn) == (TILE_ROWS, TILE_TOKENS) {
                            if X::BYTES == 2 {
                                stretch_4x3_f16(kc, ct, sws, xt as *const u16, xs, a, one_pass);
                            } else {
                                stretch_4x3_f32(kc, ct, sws, xt as *const f32, xs, a, one_pass);
                            }
                            continue;
                        }
                        if one_pass {
                            std::ptr::write_bytes(a as *mut u8, 0, rm * rn * 32);
                        }
                        // Edge tiles read the same rows (a converted
                        // stretch: the same bits as converting on load).
                        macro_rules! go {
                            ($m:literal, $n:literal) => {
                                if in_place {
                                    tile_float_stretch::<W, X, $m, $n>(kc, ct, sws, xt, xrb, a)
                                } else {
                                    tile_float_stretch::<F32W, X, $m, $n>(kc, ct, sws, xt, xrb, a)
                                }
                            };
                        }
                        tile_up_to_4x3!(rm, rn, go);
                    }
                }
            }
            // Horizontal sums, then the tail as `tile_f32_xreg` adds it.
            for t in 0..tb {
                let (tg, j) = (t / TILE_TOKENS, t % TILE_TOKENS);
                let xr = xb.add(t * xrb);
                for r in 0..rb {
                    let (rt, i) = (r / TILE_ROWS, r % TILE_ROWS);
                    let rm = (rb - rt * TILE_ROWS).min(TILE_ROWS);
                    let a = tile_acc(rt, tg).add(j * rm + i) as *const f32;
                    let mut s = hsum_ps(_mm256_loadu_ps(a));
                    let wr = wb.add(r * wrb);
                    for e in n8..n {
                        s += W::load1(wr.add(W::BYTES * e)) * X::load1(xr.add(X::BYTES * e));
                    }
                    *y.add((t0 + t) * ys + r0 + r) = s;
                }
            }
        }
    }
}

/// [`crate::dot::GemmFn`] for float weights and f32 activations: from
/// [`BLOCKED_MIN_TOKENS`] tokens on, F16 rows and rows longer than
/// [`crate::matmul::FLOAT_PACK_MAX_COLS`] through the cache-blocked product
/// ([`gemm_float_blocked`]), shorter F32/BF16 rows as 4 x 3 tiles over f32
/// rows (BF16 converted once per group), all in the prefill order of
/// [`tile_f32_xreg`]; fewer tokens (decode) as [`FloatDecode`] says: one
/// row at a time in the order of [`FLOAT_CHAINS`] ([`gemm_rows`]; long F16
/// rows over the activations rounded to f16), or 4 x 1 tiles in the prefill
/// order ([`gemm_float_tiles`]). (With [`crate::FloatPrefill::F16`] the
/// matmul runs the F16 prefill through [`gemm_f16_f16`] instead.)
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
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
    if crate::matmul::float_blocked(W::TYPE, n, toks) {
        gemm_float_blocked::<W, F32W>(n, w, wrb, rows, x, xrb, toks, y, ys);
        return;
    }
    if toks >= BLOCKED_MIN_TOKENS {
        if W::BYTES == 4 {
            gemm_f32_rows(n, w, wrb, rows, x, xrb, toks, y, ys);
        } else {
            gemm_converted::<W>(n, w, wrb, rows, x, xrb, toks, y, ys);
        }
        return;
    }
    if crate::float_decode() == FloatDecode::Tiles {
        gemm_float_tiles::<W>(n, w, wrb, rows, x, xrb, toks, y, ys);
        return;
    }
    if f16_acts::<W>(n) {
        // Long F16 rows read the activations rounded to f16
        // ([`crate::matmul::F16_DECODE_F32_ACTS_MAX_COLS`]): converted here,
        // per call (a few thousand elements against megabytes of weights).
        F16_ACTS.with_borrow_mut(|xh| {
            xh.clear();
            xh.resize(toks * n, 0);
            for t in 0..toks {
                round_to_f16(n, x.add(t * xrb), xh.as_mut_ptr().add(t * n));
            }
            gemm_rows::<W, F16W>(
                n,
                w,
                wrb,
                rows,
                xh.as_ptr() as *const u8,
                2 * n,
                toks,
                y,
                ys,
            );
        });
    } else {
        gemm_rows::<W, F32W>(n, w, wrb, rows, x, xrb, toks, y, ys);
    }
}

thread_local! {
    /// Each thread's f16 activations of the F16 rows decode (reused).
    static F16_ACTS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The decode of [`FloatDecode::Rows`]: each row read once, front to back,
/// for up to 3 tokens at a time ([`row_float`]); one token reads two rows'
/// streams in turn.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_rows<W: FloatWeights, X: FloatWeights>(
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
    // One token: the call's two halves of rows side by side (row i, then
    // row half + i), two sequential streams, as the k-quant decode rows
    // (`gemm_row_x4`): EPYC, 1 thread, the 151936x1024 F16 head 23.2-23.8
    // -> 27.3-29.2 GB/s; 0.6B F16 tg64 1.12x (1 thread), 1.02x (2).
    for r in decode_row_order(rows, toks) {
        let wr = w.add(r * wrb);
        let mut t = 0;
        while t < toks {
            let rn = (toks - t).min(3);
            let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
            macro_rules! go {
                ($n:literal) => {
                    for (j, v) in row_float::<W, X, $n>(n, wr, xt, xrb)
                        .into_iter()
                        .enumerate()
                    {
                        *yt.add(j * ys) = v;
                    }
                };
            }
            match rn {
                3 => go!(3),
                2 => go!(2),
                _ => go!(1),
            }
            t += rn;
        }
    }
}

/// The decode of [`FloatDecode::Tiles`]: 4 x 1 tiles (2 x 4 for a few
/// tokens) of [`tile_float`], the prefill order.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_float_tiles<W: FloatWeights>(
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
    let (rm_max, rn_max) = if toks == 1 { (4, 1) } else { (2, 4) };
    let mut r = 0;
    while r < rows {
        let rm = (rows - r).min(rm_max);
        let wr = w.add(r * wrb);
        // Decode of short consecutive rows (the output head, most of the
        // backbone): prefetch the next 4-row tile spread over this one's
        // loop, as `gemm_q8` does (longer tiles would evict this one from L1).
        let pf = if toks == 1 && rm == 4 && 4 * wrb <= SHORT_TILE_BYTES && wrb == n * W::BYTES {
            wr.wrapping_add(4 * wrb)
        } else {
            std::ptr::null()
        };
        let mut t = 0;
        while t < toks {
            let rn = (toks - t).min(rn_max);
            let (xt, yt) = (x.add(t * xrb), y.add(t * ys + r));
            macro_rules! go {
                ($m:literal, $n:literal) => {
                    store_tile(tile_float::<W, $m, $n>(n, wr, wrb, xt, xrb, pf), yt, ys)
                };
            }
            match (rm, rn) {
                (4, _) => go!(4, 1),
                (3, _) => go!(3, 1),
                (2, 4) => go!(2, 4),
                (2, 3) => go!(2, 3),
                (2, 2) => go!(2, 2),
                (2, _) => go!(2, 1),
                (_, 4) => go!(1, 4),
                (_, 3) => go!(1, 3),
                (_, 2) => go!(1, 2),
                _ => go!(1, 1),
            }
            t += rn;
        }
        r += rm;
    }
}

macro_rules! gemm_float_fn {
    ($name:ident, $w:ty) => {
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $name(
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
            gemm_float::<$w>(n, w, wrb, rows, x, xrb, toks, y, ys)
        }
    };
}

gemm_float_fn!(gemm_f32_f32, F32W);
gemm_float_fn!(gemm_f16_f32, F16W);
gemm_float_fn!(gemm_bf16_f32, BF16W);

// ---- activation quantizers -------------------------------------------------

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_ps(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// `roundf`: round half away from zero, exactly (t = trunc(v); v - t is exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let frac = abs_ps(_mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, _mm256_set1_ps(-0.0)));
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

/// Packs 4x8 i32 (each in i8 range) into 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_i32x32(i: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// One 32-block of Q8_0/Q8_1: returns (d, quants, sum of quants).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quant_block_32(x: *const f32, out: *mut u8) -> (f32, i32) {
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    let m = _mm256_max_ps(
        _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
        _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
    );
    let amax = hmax_ps(m);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let mut q = [_mm256_setzero_si256(); 4];
    for k in 0..4 {
        q[k] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[k], id)));
    }
    let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    _mm256_storeu_si256(out as *mut __m256i, pack_i32x32(q));
    (d, hsum_epi32(s))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_f16(p: *mut u8, v: f32) {
    let h = _mm_cvtsi128_si32(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT)) as u16;
    (p as *mut u16).write_unaligned(h);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK;
    debug_assert!(out.len() >= nb * BQ8_0);
    for i in 0..nb {
        let o = out.as_mut_ptr().add(i * BQ8_0);
        let (d, _) = quant_block_32(x.as_ptr().add(i * QK), o.add(2));
        store_f16(o, d);
    }
}

/// Q8_0 quantization straight into the repacked kernels' prepared blocks
/// ([`crate::repack::ACT_BLOCK`] bytes: f32 d rounded through f16 as the
/// Q8_0 block stores it, i32 `8 * sum(q)`, 32 quants): the same bytes as
/// `quantize_q8_0` then `repack::prepare_acts`, in one pass.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0_prepared(x: &[f32], out: &mut [u8]) {
    use crate::repack::ACT_BLOCK;
    let nb = x.len() / QK;
    debug_assert!(out.len() >= nb * ACT_BLOCK);
    for i in 0..nb {
        let o = out.as_mut_ptr().add(i * ACT_BLOCK);
        let (d, sum) = quant_block_32(x.as_ptr().add(i * QK), o.add(8));
        let d16 = _mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(d16));
        (o as *mut f32).write_unaligned(d);
        (o.add(4) as *mut i32).write_unaligned(8 * sum);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
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

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / QK_K;
    debug_assert!(out.len() >= nb * BQ8K);
    for i in 0..nb {
        let xb = x.as_ptr().add(i * QK_K);
        let o = out.as_mut_ptr().add(i * BQ8K);
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(xb.add(8 * k))));
        }
        let amax = hmax_ps(m);
        if amax == 0.0 {
            std::ptr::write_bytes(o, 0, BQ8K);
            continue;
        }
        // The reference keeps the sign of the first element of largest magnitude.
        let va = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..QK_K / 8 {
            let bits = _mm256_movemask_ps(_mm256_cmp_ps(
                abs_ps(_mm256_loadu_ps(xb.add(8 * k))),
                va,
                _CMP_EQ_OQ,
            ));
            if bits != 0 {
                max = *xb.add(8 * k + bits.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let vs = _mm256_set1_ps(iscale);
        let lim = _mm256_set1_epi32(127);
        let qs = o.add(4);
        let bsums = o.add(4 + QK_K) as *mut i16;
        for g in 0..QK_K / 32 {
            // cvtps rounds half to even (MXCSR default), like `nearest_int`.
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, qk) in q.iter_mut().enumerate() {
                let v = _mm256_mul_ps(vs, _mm256_loadu_ps(xb.add(32 * g + 8 * k)));
                *qk = _mm256_min_epi32(_mm256_cvtps_epi32(v), lim);
            }
            _mm256_storeu_si256(qs.add(32 * g) as *mut __m256i, pack_i32x32(q));
            bsums
                .add(2 * g)
                .write_unaligned(hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16);
            bsums
                .add(2 * g + 1)
                .write_unaligned(hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16);
        }
        (o as *mut f32).write_unaligned(1.0 / iscale);
    }
}
