//! AVX2 decode products of short rows: Q4_0 matrices whose rows hold at
//! most [`MAX_BLOCKS`] blocks (the MeKi output projection is `d x d_mem`,
//! rows of `d_mem / 32` = 2..16 blocks; repacked by default, plain with
//! MEKI_REPACK=0 or a row count that is not a multiple of 8) times one Q8_0
//! activation row.
//!
//! The plain Q4_0 tiles (`avx2::tile_q4_0`) finish every row with a
//! horizontal sum of its accumulator (7 shuffles and adds, a scalar store)
//! and set up a 4-row tile per 4 rows; with 2..8 blocks per row that tail
//! costs about as much as the row's multiply-adds. Here 8 rows run together
//! and their 8 accumulators are reduced at once by a transposed sum into one
//! vector of 8 results ([`hsum8`]: 14 shuffles and 7 adds for 8 rows, one
//! store). (Q8_0 needs no such tile: its plain tile already folds 4 rows
//! into one accumulator.)
//!
//! Bit-identical to the plain tiles (and so to `dot_q4_0_q8_0` of the same
//! family): every row's accumulator lanes see the same integer sums, scales
//! and FMAs in the same order as in `avx2::tile_q4_0`, and [`hsum8`] adds
//! each row's lanes in `hsum_ps`'s order.

use super::avx2::{f16_at, gemm_q4_0_q8_0, lane8, prefetch_span};
use crate::formats::{GgmlType, QK};
use std::arch::x86_64::*;

const BQ4_0: usize = 18;
const BQ8_0: usize = 34;
/// Rows per short tile.
const ROWS: usize = 8;

/// Most blocks per row for which [`short_gemv`] is used (longer rows spend
/// little on their horizontal sums).
pub(crate) const MAX_BLOCKS: usize = 8;

/// A decode product of short rows: `rows` weight rows (`w`, `wrb` bytes
/// apart, `n` elements each) times the Q8_0 activation row `x`, into
/// `y[r]`.
///
/// # Safety (of calling it)
/// AVX2, FMA and F16C must be available; `n` a multiple of 32 with `n / 32
/// <= MAX_BLOCKS`; `w` readable for `rows` rows of `wrb >= row_bytes(n)`
/// bytes, `x` for one Q8_0 row of `n` elements, `y` writable for `rows`
/// values.
pub(crate) type ShortGemv =
    unsafe fn(n: usize, w: *const u8, wrb: usize, rows: usize, x: *const u8, y: *mut f32);

/// The short-row decode kernel of `ty` for rows of `n` elements, if any.
pub(crate) fn short_gemv(ty: GgmlType, n: usize) -> Option<ShortGemv> {
    if n == 0 || !n.is_multiple_of(QK) || n / QK > MAX_BLOCKS {
        return None;
    }
    match ty {
        GgmlType::Q4_0 => Some(gemv_short_q4_0),
        _ => None,
    }
}

/// The horizontal sums of 8 accumulators as the 8 lanes of one vector, each
/// added in `avx2::hsum_ps`'s order: `s_k = a_k + a_{k+4}`, then
/// `(s_0 + s_2) + (s_1 + s_3)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum8(a: &[__m256; ROWS]) -> __m256 {
    // p[i] = [s(a_i) | s(a_{i+4})]: low halves plus high halves.
    let p: [__m256; 4] = std::array::from_fn(|i| {
        let lo = _mm256_permute2f128_ps(a[i], a[i + 4], 0x20);
        let hi = _mm256_permute2f128_ps(a[i], a[i + 4], 0x31);
        _mm256_add_ps(lo, hi)
    });
    // Per half: [s0+s2 of rows i, i+1; s1+s3 of rows i, i+1].
    let q01 = _mm256_add_ps(
        _mm256_unpacklo_ps(p[0], p[1]),
        _mm256_unpackhi_ps(p[0], p[1]),
    );
    let q23 = _mm256_add_ps(
        _mm256_unpacklo_ps(p[2], p[3]),
        _mm256_unpackhi_ps(p[2], p[3]),
    );
    // (s0+s2) of rows 0..4 (4..8 in the high half) plus (s1+s3).
    let a02 = _mm256_shuffle_ps::<0x44>(q01, q23);
    let a13 = _mm256_shuffle_ps::<0xEE>(q01, q23);
    _mm256_add_ps(a02, a13)
}

/// The f16 scales of the blocks at `p + i * stride` for `i` in `0..4` as
/// the low 64 bits, `4..8` as the high (exact conversions).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_bits(p: *const u8, stride: usize, first: usize) -> u64 {
    let mut bits = 0u64;
    for i in 0..4 {
        bits |= ((p.add((first + i) * stride) as *const u16).read_unaligned() as u64) << (16 * i);
    }
    bits
}

/// Blocks `l` and, if `TWO`, `l + 1` of 8 Q4_0 rows: `q4_0_step::<8, 1,
/// TWO>`'s per-row operations (low halves block `l`, high halves `l + 1`,
/// zeros when not `TWO`), rows `4h..4h + 4` taking their scales from `dw[h]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn step8_q4_0<const TWO: bool>(
    l: usize,
    w: *const u8,
    ws: usize,
    x: *const u8,
    acc: &mut [__m256; ROWS],
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let eight = _mm256_set1_epi8(8);
    let ones = _mm256_set1_epi16(1);
    let wl = w.add(l * BQ4_0);
    let xb = x.add(l * BQ8_0);
    let (ylo, yhi, dx, dx1) = if TWO {
        (
            _mm256_loadu2_m128i(
                xb.add(BQ8_0 + 2) as *const __m128i,
                xb.add(2) as *const __m128i,
            ),
            _mm256_loadu2_m128i(
                xb.add(BQ8_0 + 18) as *const __m128i,
                xb.add(18) as *const __m128i,
            ),
            f16_at(xb),
            f16_at(xb.add(BQ8_0)),
        )
    } else {
        (
            _mm256_zextsi128_si256(_mm_loadu_si128(xb.add(2) as *const __m128i)),
            _mm256_zextsi128_si256(_mm_loadu_si128(xb.add(18) as *const __m128i)),
            f16_at(xb),
            0.0,
        )
    };
    let dxv = _mm256_set_m128(_mm_set1_ps(dx1), _mm_set1_ps(dx));
    let offs = _mm256_add_epi16(
        _mm256_maddubs_epi16(eight, ylo),
        _mm256_maddubs_epi16(eight, yhi),
    );
    for h in 0..2 {
        let b0 = scale_bits(wl, ws, 4 * h);
        let b1 = if TWO {
            scale_bits(wl.add(BQ4_0), ws, 4 * h)
        } else {
            0
        };
        let dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm_set_epi64x(b1 as i64, b0 as i64)), dxv);
        for k in 0..4 {
            let i = 4 * h + k;
            let wb = wl.add(i * ws + 2);
            let raw = if TWO {
                _mm256_loadu2_m128i(wb.add(BQ4_0) as *const __m128i, wb as *const __m128i)
            } else {
                _mm256_zextsi128_si256(_mm_loadu_si128(wb as *const __m128i))
            };
            let lo = _mm256_and_si256(raw, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            let p16 = _mm256_sub_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi)),
                offs,
            );
            let p = _mm256_madd_epi16(p16, ones);
            acc[i] = _mm256_fmadd_ps(lane8(dd, k), _mm256_cvtepi32_ps(p), acc[i]);
        }
    }
}

/// 8 Q4_0 rows times one Q8_0 row: `tile_q4_0::<8, 1>` reduced by [`hsum8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile8_q4_0(nb: usize, w: *const u8, ws: usize, x: *const u8, pf: *const u8) -> __m256 {
    let mut acc = [_mm256_setzero_ps(); ROWS];
    let mut l = 0;
    while l + 2 <= nb {
        if !pf.is_null() {
            prefetch_span(pf.wrapping_add(l * ROWS * BQ4_0), 2 * ROWS * BQ4_0);
        }
        step8_q4_0::<true>(l, w, ws, x, &mut acc);
        l += 2;
    }
    if l < nb {
        step8_q4_0::<false>(l, w, ws, x, &mut acc);
    }
    hsum8(&acc)
}

/// Defines a [`ShortGemv`]: 8-row tiles, the last `rows % 8` rows through
/// the plain tiles. Consecutive rows (`wrb` = the row's bytes) prefetch the
/// next tile while computing one.
macro_rules! short_gemv_fn {
    ($name:ident, $tile:ident, $bytes:expr, $plain:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(
            n: usize,
            w: *const u8,
            wrb: usize,
            rows: usize,
            x: *const u8,
            y: *mut f32,
        ) {
            let nb = n / QK;
            let contiguous = wrb == nb * $bytes;
            let mut r = 0;
            while r + ROWS <= rows {
                let wr = w.add(r * wrb);
                let pf = if contiguous {
                    wr.wrapping_add(ROWS * wrb)
                } else {
                    std::ptr::null()
                };
                _mm256_storeu_ps(y.add(r), $tile(nb, wr, wrb, x, pf));
                r += ROWS;
            }
            if r < rows {
                $plain(n, w.add(r * wrb), wrb, rows - r, x, 0, 1, y.add(r), 0);
            }
        }
    };
}

short_gemv_fn!(gemv_short_q4_0, tile8_q4_0, BQ4_0, gemm_q4_0_q8_0);
