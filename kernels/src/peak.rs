//! A peak floating-point throughput probe for benchmarks: a loop of
//! independent FMAs that keeps every FMA pipe busy.

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
