//! Peak probes for benchmarks: a loop of independent FMAs that keeps every
//! FMA pipe busy, and a read of memory in one or more sequential streams.

use crate::dispatch::Isa;

/// Runs `iters` iterations of 12 independent vector FMAs on one thread and
/// returns the number of floating-point operations done (2 per lane per FMA).
pub fn fma_loop(isa: Isa, iters: usize) -> f64 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_available() => {
            // SAFETY: AVX2+FMA availability was just checked.
            let s = unsafe { fma_avx2(iters) };
            std::hint::black_box(s);
            (iters * 12 * 8 * 2) as f64
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonNoDotprod if isa.is_available() => {
            // SAFETY: NEON availability was just checked.
            let s = unsafe { fma_neon(iters) };
            std::hint::black_box(s);
            (iters * 12 * 4 * 2) as f64
        }
        _ => {
            let mut acc = [1f32; 12];
            let m = std::hint::black_box(0.999_999f32);
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = a.mul_add(m, 1e-7);
                }
            }
            std::hint::black_box(acc);
            (iters * 12 * 2) as f64
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let c = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    _mm256_cvtss_f32(s)
}

#[cfg(target_arch = "aarch64")]
unsafe fn fma_neon(iters: usize) -> f32 {
    use std::arch::aarch64::*;
    let m = vdupq_n_f32(std::hint::black_box(0.999_999));
    let c = vdupq_n_f32(1e-7);
    let mut acc = [vdupq_n_f32(1.0); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = vfmaq_f32(c, *a, m);
        }
    }
    let mut s = vdupq_n_f32(0.0);
    for a in acc {
        s = vaddq_f32(s, a);
    }
    vgetq_lane_f32::<0>(s)
}

/// Sums `bytes` as little-endian u64 words (wrapping; the bytes after the
/// last whole 64-byte line one by one), reading it in
/// `streams` equal parts side by side (any remainder after them too), with
/// `isa`'s vector loads where it has them: one pass of the memory-read
/// probe. One core keeps more lines in flight with two streams than with
/// one (the packed decode kernels read two for that reason): on the s19
/// EPYC (Zen 5) one thread read 41 GB/s in two streams, 39 GB/s in one with
/// AVX2 loads and 33-35 GB/s with scalar ones.
pub fn read_sum(isa: Isa, bytes: &[u8], streams: usize) -> u64 {
    let streams = streams.max(1);
    // Each stream's part: whole 128-byte steps.
    let part = bytes.len() / streams / 128 * 128;
    let (body, rest) = bytes.split_at(part * streams);
    let sum = match (isa, streams) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 1 | 2 | 4) if isa.is_available() => {
            let f = match streams {
                1 => read_avx2::<1>,
                2 => read_avx2::<2>,
                _ => read_avx2::<4>,
            };
            // SAFETY: AVX2 availability was just checked; `body` holds
            // `streams` parts of `part` bytes, a multiple of 128.
            unsafe { f(body.as_ptr(), part) }
        }
        _ => read_portable(body, streams, part),
    };
    let tail = rest.chunks_exact(64).remainder();
    tail.iter()
        .fold(sum, |a, &b| a.wrapping_add(b as u64))
        .wrapping_add(read_portable(rest, 1, rest.len() - tail.len()))
}

/// `read_sum` without vector intrinsics (LLVM vectorizes the word sums):
/// `streams` parts of `part` bytes (a multiple of 64) read side by side.
fn read_portable(bytes: &[u8], streams: usize, part: usize) -> u64 {
    let word =
        |c: &[u8], k: usize| u64::from_le_bytes(c[8 * k..8 * k + 8].try_into().unwrap_or_default());
    let mut acc = [0u64; 8];
    for step in (0..part).step_by(64) {
        for s in 0..streams {
            let at = s * part + step;
            let line = &bytes[at..at + 64];
            for (k, a) in acc.iter_mut().enumerate() {
                *a = a.wrapping_add(word(line, k));
            }
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// # Safety
/// AVX2 must be available and `p` must hold `S * part` readable bytes,
/// `part` a multiple of 128.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_avx2<const S: usize>(p: *const u8, part: usize) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_si256(); 2]; S];
    for step in (0..part).step_by(128) {
        for (s, a) in acc.iter_mut().enumerate() {
            let q = p.add(s * part + step) as *const __m256i;
            let x = _mm256_add_epi64(_mm256_loadu_si256(q), _mm256_loadu_si256(q.add(1)));
            let y = _mm256_add_epi64(_mm256_loadu_si256(q.add(2)), _mm256_loadu_si256(q.add(3)));
            a[0] = _mm256_add_epi64(a[0], x);
            a[1] = _mm256_add_epi64(a[1], y);
        }
    }
    let mut words = [0u64; 4];
    let mut total = 0u64;
    for a in acc {
        _mm256_storeu_si256(
            words.as_mut_ptr() as *mut __m256i,
            _mm256_add_epi64(a[0], a[1]),
        );
        total = words.iter().fold(total, |t, &w| t.wrapping_add(w));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_sum_is_the_wrapping_sum_of_the_words_whatever_the_streams() {
        // Lengths that leave remainders after whole 128-byte steps per
        // stream and after whole words.
        for len in [0usize, 7, 64, 1000, 4096 + 200, 3 * 128 * 5 + 77] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
            // Words of the whole 64-byte lines, then the bytes after them.
            let lines = bytes.chunks_exact(64);
            let want = lines
                .remainder()
                .iter()
                .fold(0u64, |a, &b| a.wrapping_add(b as u64));
            let want = lines.flat_map(|l| l.chunks_exact(8)).fold(want, |a, w| {
                a.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()))
            });
            for isa in [Isa::Scalar, Isa::detect()] {
                for streams in [1, 2, 3, 4] {
                    let got = read_sum(isa, &bytes, streams);
                    assert_eq!(got, want, "len {len} streams {streams} {isa:?}");
                }
            }
        }
    }
}
