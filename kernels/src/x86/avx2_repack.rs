//! AVX2 products of repacked Q4_0 and Q8_0 weights ([`crate::repack`]: 8
//! rows per group, one f32 lane per row) with prepared Q8_0 activations.
//!
//! Per group, block and token: 8 `maddubs` of the unsigned nibbles (4 quants
//! of each of the 8 rows per register) with 4 activation quants broadcast to
//! every row, summed in i16 (exact, see [`tile_q4_0x8`]), one `madd` to i32
//! lanes (one per row), minus `8 * sum(y)` (the nibble offset), then
//! `acc += isum * (d_w * d_y)` with a separate multiply and add: the same
//! float operations in the same order as the scalar reference
//! `dot_q4_0_q8_0`, so every result equals it bit for bit.
//!
//! Q8_0 is the same with signed quants: `maddubs(|w|, sign(y, w))` per 4
//! quants of every row, summed in i32 (a pair of products can reach 32512,
//! so i16 sums of more than one `maddubs` could overflow).
//!
//! Callers must have checked [`crate::Isa::Avx2`] is available and pass
//! buffers holding the shapes they state (see [`gemm_q4_0x8`]).

use crate::formats::QK_K;
use crate::repack::{
    ACT_BLOCK, ACT_K_BLOCK, GROUP, Q4_0X8_BLOCK, Q4_KX8_BLOCK, Q6_KX8_BLOCK, Q8_0X8_BLOCK,
};
use std::arch::x86_64::*;

/// 8 rows (lanes) x RN tokens of one group over `nb` blocks: `w` is the
/// group's first block, `x + j * xs` token `j`'s prepared activation row.
///
/// i16 sums: a `maddubs` lane is `u0 * y0 + u1 * y1` with nibbles `u` in
/// 0..=15 and `|y| <= 128`, so at most 3840 in magnitude; 8 of them (the 32
/// quants of a block) stay within 30720 < 2^15. `madd` with ones then gives
/// each row's exact `sum u * y` in its i32 lane.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4_0x8<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: usize,
) -> [__m256; RN] {
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); RN];
    for b in 0..nb {
        let wb = w.add(b * Q4_0X8_BLOCK);
        prefetch_block::<Q4_0X8_BLOCK>(wb, pf);
        let mut p16 = [_mm256_setzero_si256(); RN];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(wb.add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(raw, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            for j in 0..RN {
                let q = x.add(j * xs + b * ACT_BLOCK + 8);
                let ylo = _mm256_set1_epi32((q.add(4 * c) as *const i32).read_unaligned());
                let yhi = _mm256_set1_epi32((q.add(16 + 4 * c) as *const i32).read_unaligned());
                let s =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
                p16[j] = _mm256_add_epi16(p16[j], s);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
        for j in 0..RN {
            let xb = x.add(j * xs + b * ACT_BLOCK);
            let off = _mm256_set1_epi32((xb.add(4) as *const i32).read_unaligned());
            let isum = _mm256_sub_epi32(_mm256_madd_epi16(p16[j], ones), off);
            let d = _mm256_mul_ps(dw, _mm256_set1_ps((xb as *const f32).read_unaligned()));
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_cvtepi32_ps(isum), d));
        }
    }
    acc
}

/// 8 rows (lanes) x RN tokens of one Q8_0 group over `nb` blocks (see
/// [`tile_q4_0x8`]). Exact: `|w| <= 128` and `|y| <= 127` (activations from
/// the Q8_0 quantizer never hold -128), so a `maddubs` pair is at most
/// 32512 and is widened to i32 at once.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q8_0x8<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: usize,
) -> [__m256; RN] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); RN];
    for b in 0..nb {
        let wb = w.add(b * Q8_0X8_BLOCK);
        prefetch_block::<Q8_0X8_BLOCK>(wb, pf);
        let mut s32 = [_mm256_setzero_si256(); RN];
        for c in 0..8 {
            let q = _mm256_loadu_si256(wb.add(16 + 32 * c) as *const __m256i);
            let aq = _mm256_sign_epi8(q, q);
            for j in 0..RN {
                let yp = x.add(j * xs + b * ACT_BLOCK + 8 + 4 * c);
                let y = _mm256_set1_epi32((yp as *const i32).read_unaligned());
                let p = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(y, q));
                s32[j] = _mm256_add_epi32(s32[j], _mm256_madd_epi16(p, ones));
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
        for j in 0..RN {
            let xb = x.add(j * xs + b * ACT_BLOCK);
            let d = _mm256_mul_ps(dw, _mm256_set1_ps((xb as *const f32).read_unaligned()));
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_cvtepi32_ps(s32[j]), d));
        }
    }
    acc
}

/// `pshufb` mask giving, in i32 lane `i'` of each 128-bit half, the bytes
/// `4i' + a` and `4i' + b` of a vector whose byte `4i + s` holds row `i`'s
/// value `s`, as the two i16 halves: zero-extended (the low byte of each
/// half) unless `HIGH`, else as the high bytes with zero low bytes (an
/// arithmetic shift right by 8 then sign-extends them).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pair_mask<const HIGH: bool>(a: i8, b: i8) -> __m256i {
    // One i16 half: the source byte `v` and a zeroing index (0x80).
    let half = |v: i8| {
        let v = v as u8 as u32;
        if HIGH {
            0x80 | (v << 8)
        } else {
            v | 0x8000
        }
    };
    let lane = |i: i8| half(4 * i + a) | (half(4 * i + b) << 16);
    let m = _mm_set_epi32(
        lane(3) as i32,
        lane(2) as i32,
        lane(1) as i32,
        lane(0) as i32,
    );
    _mm256_broadcastsi128_si256(m)
}

/// 8 rows (lanes) x RN tokens of one Q4_K group over `nb` super-blocks
/// (see [`tile_q4_0x8`]; prepared Q8_K activations, [`ACT_K_BLOCK`]).
///
/// Per super-block the 8 rows' 6-bit scales and mins are unpacked once
/// (shared by the tokens): byte `4i + s` of `s03`/`s47` is row `i`'s scale
/// `s`/`s + 4`, the same for the mins. Per sub-block (32 quants) and token:
/// 8 `maddubs` of the nibbles with 4 broadcast activation quants summed in
/// i16 (exact: at most 8 * 2 * 15 * 128 = 30720), one `madd` with the
/// sub-block's scale duplicated in each lane's i16 pair gives `scale *
/// sum` in i32 (at most 63 * 30720 * 2 per sub-block, 8 sub-blocks: < 2^31).
/// The mins: 8 `madd` of (min_j, min_j) with the token's pair of 16-quant
/// sums of sub-block `j`. Then `acc += (d * d_y) * sumi - (dmin * d_y) * summ` with separate
/// multiplies, subtract and add: `dot_q4_k_q8_k`'s operations, so results
/// equal it bit for bit.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4_kx8<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: usize,
) -> [__m256; RN] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m6 = _mm256_set1_epi8(0x3F);
    let m30 = _mm256_set1_epi8(0x30);
    let dup = [
        pair_mask::<false>(0, 0),
        pair_mask::<false>(1, 1),
        pair_mask::<false>(2, 2),
        pair_mask::<false>(3, 3),
    ];
    let mut acc = [_mm256_setzero_ps(); RN];
    for b in 0..nb {
        let wb = w.add(b * Q4_KX8_BLOCK);
        prefetch_block::<Q4_KX8_BLOCK>(wb, pf);
        let sa = _mm256_loadu_si256(wb.add(32) as *const __m256i);
        let sb = _mm256_loadu_si256(wb.add(64) as *const __m256i);
        let sc = _mm256_loadu_si256(wb.add(96) as *const __m256i);
        let s03 = _mm256_and_si256(sa, m6);
        let m03 = _mm256_and_si256(sb, m6);
        let s47 = _mm256_or_si256(
            _mm256_and_si256(sc, m4),
            _mm256_and_si256(_mm256_srli_epi16(sa, 2), m30),
        );
        let m47 = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(sc, 4), m4),
            _mm256_and_si256(_mm256_srli_epi16(sb, 2), m30),
        );
        let mut sumi = [_mm256_setzero_si256(); RN];
        for k in 0..4 {
            let (mut plo, mut phi) = ([_mm256_setzero_si256(); RN], [_mm256_setzero_si256(); RN]);
            for c in 0..8 {
                let raw = _mm256_loadu_si256(wb.add(128 + 256 * k + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(raw, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                for j in 0..RN {
                    let yp = x.add(j * xs + b * ACT_K_BLOCK + 4 + 64 * k + 4 * c);
                    let ylo = _mm256_set1_epi32((yp as *const i32).read_unaligned());
                    let yhi = _mm256_set1_epi32((yp.add(32) as *const i32).read_unaligned());
                    plo[j] = _mm256_add_epi16(plo[j], _mm256_maddubs_epi16(lo, ylo));
                    phi[j] = _mm256_add_epi16(phi[j], _mm256_maddubs_epi16(hi, yhi));
                }
            }
            let (src, d0, d1) = if k < 2 {
                (s03, dup[2 * k], dup[2 * k + 1])
            } else {
                (s47, dup[2 * k - 4], dup[2 * k - 3])
            };
            let (sl, sh) = (_mm256_shuffle_epi8(src, d0), _mm256_shuffle_epi8(src, d1));
            for j in 0..RN {
                let s =
                    _mm256_add_epi32(_mm256_madd_epi16(plo[j], sl), _mm256_madd_epi16(phi[j], sh));
                sumi[j] = _mm256_add_epi32(sumi[j], s);
            }
        }
        // (min_j, min_j) per lane: times (bsum_2j, bsum_2j+1) in one madd.
        let mins = [
            _mm256_shuffle_epi8(m03, dup[0]),
            _mm256_shuffle_epi8(m03, dup[1]),
            _mm256_shuffle_epi8(m03, dup[2]),
            _mm256_shuffle_epi8(m03, dup[3]),
            _mm256_shuffle_epi8(m47, dup[0]),
            _mm256_shuffle_epi8(m47, dup[1]),
            _mm256_shuffle_epi8(m47, dup[2]),
            _mm256_shuffle_epi8(m47, dup[3]),
        ];
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
        let dmw = _mm256_cvtph_ps(_mm_loadu_si128(wb.add(16) as *const __m128i));
        for j in 0..RN {
            let xb = x.add(j * xs + b * ACT_K_BLOCK);
            let mut summ = _mm256_setzero_si256();
            for (p, m) in mins.iter().enumerate() {
                let ys =
                    _mm256_set1_epi32((xb.add(4 + QK_K + 4 * p) as *const i32).read_unaligned());
                summ = _mm256_add_epi32(summ, _mm256_madd_epi16(*m, ys));
            }
            let dy = _mm256_set1_ps((xb as *const f32).read_unaligned());
            let t = _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(sumi[j]));
            let u = _mm256_mul_ps(_mm256_mul_ps(dmw, dy), _mm256_cvtepi32_ps(summ));
            acc[j] = _mm256_add_ps(acc[j], _mm256_sub_ps(t, u));
        }
    }
    acc
}

/// The 16 quants `u` (0..=63) of sub-block `j` of all 8 rows from the 96
/// plane bytes at `p` (`crate::repack`'s Q6_K layout): vector `m`, byte
/// `4i + e`, is row `i`'s quant `4m + e` of the sub-block. Three loads,
/// three `and`s for the planes' low 6 bits, 8 operations to gather the
/// fourth vector from their top bits (the 16-bit shifts move only bits
/// that the `and` with 0xC0 kept, so no byte leaks into its neighbour).
#[inline(always)]
pub(crate) unsafe fn q6_planes(p: *const u8) -> [__m256i; 4] {
    let (low, top) = (_mm256_set1_epi8(0x3F), _mm256_set1_epi8(0xC0u8 as i8));
    let v: [__m256i; 3] =
        std::array::from_fn(|k| _mm256_loadu_si256(p.add(32 * k) as *const __m256i));
    let t0 = _mm256_srli_epi16(_mm256_and_si256(v[0], top), 6);
    let t1 = _mm256_srli_epi16(_mm256_and_si256(v[1], top), 4);
    let t2 = _mm256_srli_epi16(_mm256_and_si256(v[2], top), 2);
    [
        _mm256_and_si256(v[0], low),
        _mm256_and_si256(v[1], low),
        _mm256_and_si256(v[2], low),
        _mm256_or_si256(_mm256_or_si256(t0, t1), t2),
    ]
}

/// The `pshufb` masks of [`q6_scale`]: mask `s` puts row `i`'s scale byte
/// `4i + s` in the high byte of both i16 halves of lane `i`.
#[inline(always)]
pub(crate) unsafe fn q6_scale_masks() -> [__m256i; 4] {
    std::array::from_fn(|s| pair_mask::<true>(s as i8, s as i8))
}

/// Scale `s` of the 4 in `sr` (row `i`'s in bytes `4i..4i+4`) of all 8 rows,
/// sign-extended into both i16 halves of each row's lane.
#[inline(always)]
pub(crate) unsafe fn q6_scale(sr: __m256i, dup: &[__m256i; 4], s: usize) -> __m256i {
    _mm256_srai_epi16(_mm256_shuffle_epi8(sr, dup[s]), 8)
}

/// `sumi` plus one token's sub-block: `scale * (u . y)` per row lane, `y`
/// the sub-block's 16 activation quants (4 broadcast per vector). Two
/// `maddubs` summed in i16 (at most 2 * 2 * 63 * 128 = 32256: exact), then
/// a `madd` with the scale into i32.
#[inline(always)]
pub(crate) unsafe fn q6_dot(
    u: &[__m256i; 4],
    scale: __m256i,
    y: *const u8,
    sumi: __m256i,
) -> __m256i {
    let yv = |m: usize| _mm256_set1_epi32((y.add(4 * m) as *const i32).read_unaligned());
    let p01 = _mm256_add_epi16(
        _mm256_maddubs_epi16(u[0], yv(0)),
        _mm256_maddubs_epi16(u[1], yv(1)),
    );
    let p23 = _mm256_add_epi16(
        _mm256_maddubs_epi16(u[2], yv(2)),
        _mm256_maddubs_epi16(u[3], yv(3)),
    );
    _mm256_add_epi32(
        sumi,
        _mm256_add_epi32(_mm256_madd_epi16(p01, scale), _mm256_madd_epi16(p23, scale)),
    )
}

/// `acc + (d * d_y) * (sumi - 32 * sum_j scale_j * bsum_j)` for one token's
/// Q8_K block `xb` (the -32 offset of every quant, folded in once: 8 `madd`
/// with the token's pairs of 16-quant sums), a separate multiply and add as
/// `dot_q6_k_q8_k` has them.
#[inline(always)]
pub(crate) unsafe fn q6_finish(
    wb: *const u8,
    sr: &[__m256i; 4],
    xb: *const u8,
    sumi: __m256i,
    acc: __m256,
) -> __m256 {
    let pairs = [pair_mask::<true>(0, 1), pair_mask::<true>(2, 3)];
    let mut offs = _mm256_setzero_si256();
    for p in 0..8 {
        let sp = _mm256_srai_epi16(_mm256_shuffle_epi8(sr[p / 2], pairs[p % 2]), 8);
        let ys = _mm256_set1_epi32((xb.add(4 + QK_K + 4 * p) as *const i32).read_unaligned());
        offs = _mm256_add_epi32(offs, _mm256_madd_epi16(sp, ys));
    }
    let isum = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offs, 5));
    let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
    let dy = _mm256_set1_ps((xb as *const f32).read_unaligned());
    let d = _mm256_mul_ps(dw, dy);
    _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)))
}

/// The 4 scale vectors of the packed Q6_K block `wb`: byte `4i + s` of
/// vector `w` is row `i`'s scale `4w + s`.
#[inline(always)]
pub(crate) unsafe fn q6_scales(wb: *const u8) -> [__m256i; 4] {
    std::array::from_fn(|w| _mm256_loadu_si256(wb.add(16 + 32 * w) as *const __m256i))
}

/// 8 rows (lanes) x RN tokens of one Q6_K group over `nb` super-blocks
/// (prepared Q8_K activations). Per sub-block the 8 rows' quants are taken
/// from their planes once ([`q6_planes`]) and shared by the tokens
/// ([`q6_dot`]); the offset and the float scale per super-block and token
/// ([`q6_finish`]). Bounds: `|sum scale * u * y| <= 16 * 128 * 16 * 63 *
/// 128 < 2^31`. The integer sum is exact and the float operations are
/// `dot_q6_k_q8_k`'s, so results equal it bit for bit.
#[inline]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q6_kx8<const RN: usize>(
    nb: usize,
    w: *const u8,
    x: *const u8,
    xs: usize,
    pf: usize,
) -> [__m256; RN] {
    let dup = q6_scale_masks();
    let mut acc = [_mm256_setzero_ps(); RN];
    for b in 0..nb {
        let wb = w.add(b * Q6_KX8_BLOCK);
        prefetch_block::<Q6_KX8_BLOCK>(wb, pf);
        let sr = q6_scales(wb);
        let mut sumi = [_mm256_setzero_si256(); RN];
        for (w, &srw) in sr.iter().enumerate() {
            for s in 0..4 {
                let j = 4 * w + s;
                let scale = q6_scale(srw, &dup, s);
                let u = q6_planes(wb.add(144 + 96 * j));
                for t in 0..RN {
                    let y = x.add(t * xs + b * ACT_K_BLOCK + 4 + 16 * j);
                    sumi[t] = q6_dot(&u, scale, y, sumi[t]);
                }
            }
        }
        for t in 0..RN {
            let xb = x.add(t * xs + b * ACT_K_BLOCK);
            acc[t] = q6_finish(wb, &sr, xb, sumi[t], acc[t]);
        }
    }
    acc
}

/// Prefetches the `BYTES` bytes at `wb + pf` (the same block of the next
/// group) unless `pf` is 0. Decode reads each weight once: the next group
/// is fetched while this one is computed (hardware prefetchers ramp up
/// too late on the short per-chunk streams).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_block<const BYTES: usize>(wb: *const u8, pf: usize) {
    if pf != 0 {
        let p = wb.wrapping_add(pf);
        let mut o = 0;
        while o < BYTES {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o) as *const i8);
            o += 64;
        }
    }
}

/// Defines the product of `groups` repacked groups (`w`, `nb` blocks of
/// `$bytes` per row group, groups contiguous) with `toks` prepared
/// activation rows (`x`, `xs` bytes apart) into `y[t * ys + 8 * g + i]`:
/// tiles of 8 rows x 4 tokens (fewer at the end). With one token
/// (decode) each tile prefetches the next group.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` must hold `groups * nb`
/// repacked blocks, `x` `toks` rows of `nb` prepared blocks, and `y` must be
/// writable at every index named above.
macro_rules! gemm_x8 {
    ($name:ident, $tile:ident, $bytes:expr, $rn:literal) => {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name(
            nb: usize,
            w: *const u8,
            groups: usize,
            x: *const u8,
            xs: usize,
            toks: usize,
            y: *mut f32,
            ys: usize,
        ) {
            let pf = if toks == 1 { nb * $bytes } else { 0 };
            for g in 0..groups {
                let wg = w.add(g * nb * $bytes);
                let mut t = 0;
                while t < toks {
                    let rn = (toks - t).min($rn);
                    let (xt, yt) = (x.add(t * xs), y.add(t * ys + g * GROUP));
                    macro_rules! go {
                        ($n:literal) => {{
                            let acc = $tile::<$n>(nb, wg, xt, xs, pf);
                            for (j, a) in acc.iter().enumerate() {
                                _mm256_storeu_ps(yt.add(j * ys), *a);
                            }
                        }};
                    }
                    match rn {
                        8 if $rn >= 8 => go!(8),
                        7 if $rn >= 7 => go!(7),
                        6 if $rn >= 6 => go!(6),
                        5 if $rn >= 5 => go!(5),
                        4 => go!(4),
                        3 => go!(3),
                        2 => go!(2),
                        _ => go!(1),
                    }
                    t += rn;
                }
            }
        }
    };
}

gemm_x8!(gemm_q4_0x8, tile_q4_0x8, Q4_0X8_BLOCK, 4);
gemm_x8!(gemm_q8_0x8, tile_q8_0x8, Q8_0X8_BLOCK, 4);
gemm_x8!(gemm_q4_kx8, tile_q4_kx8, Q4_KX8_BLOCK, 6);
gemm_x8!(gemm_q6_kx8, tile_q6_kx8, Q6_KX8_BLOCK, 4);
