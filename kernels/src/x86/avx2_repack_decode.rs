//! AVX2 one-token products of repacked Q8_0 weights (decode): the rows of
//! `groups` consecutive 8-row groups ([`crate::repack`]) times one prepared
//! Q8_0 activation row.
//!
//! Per block the operations are those of the prefill tile
//! (`avx2_repack::tile_q8_0x8` with one token): `maddubs(|w|, sign(y, w))`
//! per 4 quants of every row, widened to i32 at once, then `acc += isum *
//! (d_w * d_y)` with a separate multiply and add, so every result equals the
//! scalar `dot_q8_0_q8_0` bit for bit.
//!
//! What differs is the memory side: decode reads each weight byte once, and
//! a call's groups are one contiguous run of memory.
//! - Two streams: the groups are split into two halves that run side by
//!   side (block `b` of group `g` of each half in turn), so two independent
//!   runs of misses are in flight. One sequential stream left the core
//!   waiting on the next line as the plain tiles (4 rows read side by side)
//!   do not: the 0.6B-shape decode groups ran 1.35-1.75x faster from L3 and
//!   1.05-1.25x from DRAM (2 threads, EPYC; 4 streams was no better from L3
//!   and worse from DRAM).
//! - Each stream prefetches [`DECODE_PREFETCH_BLOCKS`] packed blocks (~1 KiB)
//!   ahead and stops at its end (the bytes after the call's groups are
//!   another chunk's). The prefill tile's prefetch (the same block of the
//!   next group, 8.5 KiB ahead at 1024 columns, 25.5 KiB at 3072) ran too
//!   far ahead.
//!
//! [`DECODE_PREFETCH_BLOCKS`]: crate::repack::DECODE_PREFETCH_BLOCKS

use crate::repack::{ACT_BLOCK, GROUP, Q8_0X8_BLOCK};
use std::arch::x86_64::*;

/// Streams run side by side.
const STREAMS: usize = 2;

/// Prefetches the 5 cache lines holding `p`, `p + 64`, .., `p + 256`: with
/// blocks of 272 bytes (4.25 lines) that covers every line of a block except
/// possibly the last, which holds the next block's start and so its first
/// prefetch (4 prefetches per block would leave a line out every fourth
/// block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_block(p: *const u8) {
    for o in [0, 64, 128, 192, 256] {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o) as *const i8);
    }
}

/// `acc` plus the 8 rows of the packed block `wb` times the prepared block
/// `xb` (one lane per row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block(wb: *const u8, xb: *const u8, acc: __m256) -> __m256 {
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

/// `y[8g + i] = row 8g + i . x` for the `groups` groups at `w` (`nb` packed
/// blocks each, groups contiguous) and the prepared activation row `x`,
/// prefetching `pf_blocks` blocks ahead in each stream.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` must hold `groups * nb`
/// packed Q8_0 blocks, `x` `nb` prepared blocks, and `y` must be writable
/// for `8 * groups` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_q8_0x8(
    nb: usize,
    w: *const u8,
    groups: usize,
    x: *const u8,
    y: *mut f32,
    pf_blocks: usize,
) {
    // Stream i: groups first[i] .. first[i] + q + (i < r), blocks
    // blocks[i] (the first streams take the odd groups).
    let (q, r) = (groups / STREAMS, groups % STREAMS);
    let first: [usize; STREAMS] = std::array::from_fn(|i| i * q + i.min(r));
    let blocks: [usize; STREAMS] = std::array::from_fn(|i| (q + (i < r) as usize) * nb);
    let pf = pf_blocks * Q8_0X8_BLOCK;
    let at = |i: usize, k: usize| w.add((first[i] * nb + k) * Q8_0X8_BLOCK);
    // The first blocks of each stream (later ones are prefetched as the
    // stream goes).
    for (i, &n) in blocks.iter().enumerate() {
        for k in 0..pf_blocks.min(n) {
            prefetch_block(at(i, k));
        }
    }
    for g in 0..q {
        let mut acc = [_mm256_setzero_ps(); STREAMS];
        for b in 0..nb {
            let k = g * nb + b;
            let xb = x.add(b * ACT_BLOCK);
            for i in 0..STREAMS {
                let wb = at(i, k);
                if k + pf_blocks < blocks[i] {
                    prefetch_block(wb.add(pf));
                }
                acc[i] = block(wb, xb, acc[i]);
            }
        }
        for i in 0..STREAMS {
            _mm256_storeu_ps(y.add((first[i] + g) * GROUP), acc[i]);
        }
    }
    // The streams' last, odd groups.
    for i in 0..r {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let k = q * nb + b;
            let wb = at(i, k);
            if k + pf_blocks < blocks[i] {
                prefetch_block(wb.add(pf));
            }
            acc = block(wb, x.add(b * ACT_BLOCK), acc);
        }
        _mm256_storeu_ps(y.add((first[i] + q) * GROUP), acc);
    }
}
