//! AVX2 one-token products of repacked weights (decode): the rows of
//! `groups` consecutive 8-row groups ([`crate::repack`]) times one prepared
//! activation row. Q8_0 ([`gemv_q8_0x8`]), Q4_K ([`gemv_q4_kx8`]), Q4_0
//! ([`gemv_q4_0x8`]) and Q6_K ([`gemv_q6_kx8`], in quant planes).
//!
//! Per block the operations are those of the prefill tiles
//! (`avx2_repack::tile_*x8` with one token), so every result equals the
//! scalar `dot_q8_0_q8_0` / `dot_q4_k_q8_k` / `dot_q4_0_q8_0` /
//! `dot_q6_k_q8_k` bit for bit:
//! Q8_0 `maddubs(|w|, sign(y, w))` per 4 quants of every row, widened to i32
//! at once, then `acc += isum * (d_w * d_y)`; Q4_K and Q4_0 see
//! `avx2_repack.rs`.
//!
//! What differs is the memory side: decode reads each weight byte once, and
//! a call's groups are one contiguous run of memory.
//! - Two streams: the groups are split into two halves that run side by
//!   side (block `b` of group `g` of each half in turn), so two independent
//!   runs of misses are in flight. One sequential stream left the core
//!   waiting on the next line as the plain tiles (4 rows read side by side)
//!   do not: the 0.6B-shape Q8_0 decode groups ran 1.35-1.75x faster from L3
//!   and 1.05-1.25x from DRAM (2 threads, EPYC; 4 streams was no better from
//!   L3 and worse from DRAM).
//! - Each stream prefetches about [`DECODE_PREFETCH_BLOCKS`] Q8_0 blocks
//!   ahead (per CPU: none on Zen 3 / Zen 4, where the hardware prefetchers
//!   alone read faster; 16, ~4 KiB, with one thread and 8 with more
//!   elsewhere) and stops at its end (the bytes after the call's groups
//!   are another chunk's); the lines of a block are prefetched a few at a
//!   time as it is computed. The prefill tiles' prefetch (the same block of
//!   the next group, 8.5 KiB ahead at 1024 columns, 25.5 KiB at 3072) ran
//!   too far ahead.
//!
//! [`DECODE_PREFETCH_BLOCKS`]: crate::repack::DECODE_PREFETCH_BLOCKS

use crate::formats::QK_K;
use crate::repack::{
    ACT_BLOCK, ACT_K_BLOCK, GROUP, Q4_0X8_BLOCK, Q4_KX8_BLOCK, Q6_KX8_BLOCK, Q8_0X8_BLOCK,
};
use std::arch::x86_64::*;

/// Streams run side by side.
const STREAMS: usize = 2;

/// A one-token kernel: `(nb, w, groups, x, y, pf_bytes)`, see [`gemv_x8`].
pub(crate) type Gemv = unsafe fn(usize, *const u8, usize, *const u8, *mut f32, usize);

/// Prefetches the `n` cache lines from `p` on (none if `p` is null).
#[inline(always)]
unsafe fn prefetch_lines(p: *const u8, n: usize) {
    if !p.is_null() {
        for l in 0..n {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l) as *const i8);
        }
    }
}

/// `acc` plus the 8 rows of the packed Q8_0 block `wb` times the prepared
/// block `xb` (one lane per row), prefetching the block's lines at `pf`
/// (null: none): 5 lines, which with blocks of 272 bytes (4.25 lines)
/// covers every line of a block except possibly the last, which holds the
/// next block's start and so its first prefetch.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q8_0<const S: usize>(
    wb: [*const u8; S],
    xb: *const u8,
    acc: [__m256; S],
    pf: [*const u8; S],
) -> [__m256; S] {
    std::array::from_fn(|s| block_q8_0_one(wb[s], xb, acc[s], pf[s]))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q8_0_one(wb: *const u8, xb: *const u8, acc: __m256, pf: *const u8) -> __m256 {
    prefetch_lines(pf, 5);
    let ones = _mm256_set1_epi16(1);
    let mut s32 = _mm256_setzero_si256();
    for c in 0..8 {
        let q = _mm256_loadu_si256(wb.add(16 + 32 * c) as *const __m256i);
        let y = _mm256_set1_epi32((xb.add(8 + 4 * c) as *const i32).read_unaligned());
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
        s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
    }
    let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb as *const __m128i));
    let d = _mm256_mul_ps(dw, _mm256_set1_ps((xb as *const f32).read_unaligned()));
    _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(s32), d))
}

/// `acc[s]` plus the 8 rows of the packed Q4_0 block `wb[s]` times the
/// prepared block `xb`, for `S` streams side by side (each activation
/// broadcast serves all): `avx2_repack::tile_q4_0x8`'s operations with one
/// token (nibbles times 4 broadcast quants, i16 sums, `madd` with ones,
/// minus `8 * sum(y)`, `acc += isum * (d_w * d_y)`). Prefetches the 3 lines
/// at `pf[s]` (blocks of 144 bytes: 2.25 lines).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_0<const S: usize>(
    wb: [*const u8; S],
    xb: *const u8,
    mut acc: [__m256; S],
    pf: [*const u8; S],
) -> [__m256; S] {
    for p in pf {
        prefetch_lines(p, 3);
    }
    let m4 = _mm256_set1_epi8(0x0F);
    let mut p16 = [_mm256_setzero_si256(); S];
    let q = xb.add(8);
    for c in 0..4 {
        let ylo = _mm256_set1_epi32((q.add(4 * c) as *const i32).read_unaligned());
        let yhi = _mm256_set1_epi32((q.add(16 + 4 * c) as *const i32).read_unaligned());
        for s in 0..S {
            let raw = _mm256_loadu_si256(wb[s].add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(raw, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            let t = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
            p16[s] = _mm256_add_epi16(p16[s], t);
        }
    }
    let off = _mm256_set1_epi32((xb.add(4) as *const i32).read_unaligned());
    let dy = _mm256_set1_ps((xb as *const f32).read_unaligned());
    for s in 0..S {
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb[s] as *const __m128i));
        let isum = _mm256_sub_epi32(_mm256_madd_epi16(p16[s], _mm256_set1_epi16(1)), off);
        let d = _mm256_mul_ps(dw, dy);
        acc[s] = _mm256_add_ps(acc[s], _mm256_mul_ps(_mm256_cvtepi32_ps(isum), d));
    }
    acc
}

/// `pshufb` masks giving, in each i32 lane `i` of a 128-bit half, byte `4i
/// + s` of the source zero-extended into both i16 halves (row `i`'s scale
/// `s` of a 4-byte run, duplicated for `madd`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dup_masks() -> [__m256i; 4] {
    let m = |s: i32| {
        let lane = |i: i32| {
            let b = 4 * i + s;
            b | (0x80 << 8) | (b << 16) | (0x80 << 24)
        };
        _mm256_broadcastsi128_si256(_mm_setr_epi32(lane(0), lane(1), lane(2), lane(3)))
    };
    [m(0), m(1), m(2), m(3)]
}

/// `acc[s]` plus the 8 rows of the packed Q4_K super-block `wb[s]` times
/// the Q8_K block `xb`, for `S` streams side by side (each activation
/// broadcast serves all; as separate calls the optimizer shared them
/// through 72 stack stores per block pair):
/// `avx2_repack::tile_q4_kx8`'s operations with one token (the same i16 and
/// i32 sums, `acc + ((d * d_y) * sumi - (dmin * d_y) * summ)`), so results
/// equal `dot_q4_k_q8_k` bit for bit. The 8 rows' scales and mins are
/// unpacked once per super-block. Prefetches the block's 18 lines at
/// `pf[s]` (null: none) 5 at a time, one batch per 64 quants.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_k<const S: usize>(
    wb: [*const u8; S],
    xb: *const u8,
    mut acc: [__m256; S],
    pf: [*const u8; S],
) -> [__m256; S] {
    let dup = dup_masks();
    let m4 = _mm256_set1_epi8(0x0F);
    let m6 = _mm256_set1_epi8(0x3F);
    let m30 = _mm256_set1_epi8(0x30);
    let scales = |wb: *const u8| {
        let sa = _mm256_loadu_si256(wb.add(32) as *const __m256i);
        let sc = _mm256_loadu_si256(wb.add(96) as *const __m256i);
        let s03 = _mm256_and_si256(sa, m6);
        let s47 = _mm256_or_si256(
            _mm256_and_si256(sc, m4),
            _mm256_and_si256(_mm256_srli_epi16(sa, 2), m30),
        );
        (s03, s47)
    };
    let mut sumi = [_mm256_setzero_si256(); S];
    for k in 0..4 {
        for p in pf {
            if !p.is_null() {
                // Lines 0..5, 5..10, 10..15, 13..18.
                prefetch_lines(p.wrapping_add(64 * (5 * k).min(13)), 5);
            }
        }
        let (mut plo, mut phi) = ([_mm256_setzero_si256(); S], [_mm256_setzero_si256(); S]);
        for c in 0..8 {
            let yp = xb.add(4 + 64 * k + 4 * c);
            let ylo = _mm256_set1_epi32((yp as *const i32).read_unaligned());
            let yhi = _mm256_set1_epi32((yp.add(32) as *const i32).read_unaligned());
            for s in 0..S {
                let raw = _mm256_loadu_si256(wb[s].add(128 + 256 * k + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(raw, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                plo[s] = _mm256_add_epi16(plo[s], _mm256_maddubs_epi16(lo, ylo));
                phi[s] = _mm256_add_epi16(phi[s], _mm256_maddubs_epi16(hi, yhi));
            }
        }
        for s in 0..S {
            let (s03, s47) = scales(wb[s]);
            let (src, d0, d1) = if k < 2 {
                (s03, dup[2 * k], dup[2 * k + 1])
            } else {
                (s47, dup[2 * k - 4], dup[2 * k - 3])
            };
            let (sl, sh) = (_mm256_shuffle_epi8(src, d0), _mm256_shuffle_epi8(src, d1));
            let t = _mm256_add_epi32(_mm256_madd_epi16(plo[s], sl), _mm256_madd_epi16(phi[s], sh));
            sumi[s] = _mm256_add_epi32(sumi[s], t);
        }
    }
    let dy = _mm256_set1_ps((xb as *const f32).read_unaligned());
    for s in 0..S {
        // Mins: (min_j, min_j) per lane times (bsum_2j, bsum_2j+1) in one
        // madd.
        let sb = _mm256_loadu_si256(wb[s].add(64) as *const __m256i);
        let sc = _mm256_loadu_si256(wb[s].add(96) as *const __m256i);
        let m03 = _mm256_and_si256(sb, m6);
        let m47 = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(sc, 4), m4),
            _mm256_and_si256(_mm256_srli_epi16(sb, 2), m30),
        );
        let mut summ = _mm256_setzero_si256();
        for p in 0..8 {
            let m = _mm256_shuffle_epi8(if p < 4 { m03 } else { m47 }, dup[p % 4]);
            let ys = _mm256_set1_epi32((xb.add(4 + QK_K + 4 * p) as *const i32).read_unaligned());
            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(m, ys));
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(wb[s] as *const __m128i));
        let dmw = _mm256_cvtph_ps(_mm_loadu_si128(wb[s].add(16) as *const __m128i));
        let t = _mm256_mul_ps(_mm256_mul_ps(dw, dy), _mm256_cvtepi32_ps(sumi[s]));
        let u = _mm256_mul_ps(_mm256_mul_ps(dmw, dy), _mm256_cvtepi32_ps(summ));
        acc[s] = _mm256_add_ps(acc[s], _mm256_sub_ps(t, u));
    }
    acc
}

/// `acc[s]` plus the 8 rows of the packed Q6_K super-block `wb[s]` times
/// the Q8_K block `xb`, for `S` streams one after the other (each keeps a
/// sub-block's 4 quant vectors, its scale and 3 plane loads live: two
/// streams interleaved would not fit the 16 registers): the prefill
/// tile's operations with one token (`avx2_repack::q6_planes`, `q6_dot`,
/// `q6_finish`), so results equal `dot_q6_k_q8_k` bit for bit.
///
/// No software prefetch (`pf` is ignored; the caller passes none): on the
/// Zen 4 EPYC, 1 thread, the 151936x1024 head read 29-32 GB/s with the
/// hardware prefetchers alone against 22-25 with the block's 27 lines
/// prefetched 3-5 blocks ahead in two bursts and 24-27 spread over its
/// sub-blocks (`meki-bench kernels`, and 0.6B Q4_0 decode's head stage
/// 29-32 vs 22 GB/s): at ~8 cycles per line of arithmetic, the prefetch
/// instructions only crowd the loads.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q6_k<const S: usize>(
    wb: [*const u8; S],
    xb: *const u8,
    acc: [__m256; S],
    _pf: [*const u8; S],
) -> [__m256; S] {
    let dup = crate::x86::avx2_repack::q6_scale_masks();
    std::array::from_fn(|s| block_q6_k_one(wb[s], xb, acc[s], &dup))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q6_k_one(wb: *const u8, xb: *const u8, acc: __m256, dup: &[__m256i; 4]) -> __m256 {
    use crate::x86::avx2_repack::{q6_dot, q6_finish, q6_planes, q6_scale, q6_scales};
    let sr = q6_scales(wb);
    let mut sumi = _mm256_setzero_si256();
    for (w, &srw) in sr.iter().enumerate() {
        for s in 0..4 {
            let j = 4 * w + s;
            let u = q6_planes(wb.add(144 + 96 * j));
            sumi = q6_dot(&u, q6_scale(srw, dup, s), xb.add(4 + 16 * j), sumi);
        }
    }
    q6_finish(wb, &sr, xb, sumi, acc)
}

/// Defines `$name(nb, w, groups, x, y, pf_bytes)`: `y[8g + i] = row 8g + i
/// . x` for the `groups` groups at `w` (`nb` packed blocks of `$wbytes`
/// each, groups contiguous) and the prepared activation row `x` (`nb`
/// blocks of `$xbytes`), in [`STREAMS`] streams, each prefetching about
/// `pf_bytes` ahead (whole blocks, at least one if `pf_bytes` > 0; 0: no
/// prefetch). `$block::<S>(wb, xb, acc, pf)` adds one block of each of
/// `S` streams.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` must hold `groups * nb`
/// packed blocks, `x` `nb` prepared blocks, and `y` must be writable for
/// `8 * groups` values.
macro_rules! gemv_x8 {
    ($name:ident, $block:ident, $wbytes:expr, $xbytes:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name(
            nb: usize,
            w: *const u8,
            groups: usize,
            x: *const u8,
            y: *mut f32,
            pf_bytes: usize,
        ) {
            // Stream i: groups first[i] .. first[i] + q + (i < r), blocks
            // blocks[i] (the first streams take the odd groups).
            let (q, r) = (groups / STREAMS, groups % STREAMS);
            let first: [usize; STREAMS] = std::array::from_fn(|i| i * q + i.min(r));
            let blocks: [usize; STREAMS] = std::array::from_fn(|i| (q + (i < r) as usize) * nb);
            let pf_blocks = pf_bytes.div_ceil($wbytes);
            let pf = pf_blocks * $wbytes;
            let at = |i: usize, k: usize| w.add((first[i] * nb + k) * $wbytes);
            // The block `pf_blocks` ahead of block k of stream i, if the
            // stream has it.
            let ahead = |i: usize, k: usize| {
                if pf_blocks != 0 && k + pf_blocks < blocks[i] {
                    at(i, k).wrapping_add(pf)
                } else {
                    std::ptr::null()
                }
            };
            // The first blocks of each stream (later ones are prefetched as
            // the stream goes).
            for (i, &n) in blocks.iter().enumerate() {
                for k in 0..pf_blocks.min(n) {
                    prefetch_lines(at(i, k), $wbytes.div_ceil(64));
                }
            }
            for g in 0..q {
                let mut acc = [_mm256_setzero_ps(); STREAMS];
                for b in 0..nb {
                    let k = g * nb + b;
                    let xb = x.add(b * $xbytes);
                    let wb = std::array::from_fn(|i| at(i, k));
                    acc = $block(wb, xb, acc, std::array::from_fn(|i| ahead(i, k)));
                }
                for i in 0..STREAMS {
                    _mm256_storeu_ps(y.add((first[i] + g) * GROUP), acc[i]);
                }
            }
            // The streams' last, odd groups.
            for i in 0..r {
                let mut acc = [_mm256_setzero_ps()];
                for b in 0..nb {
                    let k = q * nb + b;
                    acc = $block([at(i, k)], x.add(b * $xbytes), acc, [ahead(i, k)]);
                }
                _mm256_storeu_ps(y.add((first[i] + q) * GROUP), acc[0]);
            }
        }
    };
}

gemv_x8!(gemv_q8_0x8, block_q8_0, Q8_0X8_BLOCK, ACT_BLOCK);
gemv_x8!(gemv_q4_0x8, block_q4_0, Q4_0X8_BLOCK, ACT_BLOCK);
gemv_x8!(gemv_q4_kx8, block_q4_k, Q4_KX8_BLOCK, ACT_K_BLOCK);
gemv_x8!(gemv_q6_kx8, block_q6_k, Q6_KX8_BLOCK, ACT_K_BLOCK);
