//! Cache-blocked f32 matrix multiplication `C = A · Bᵀ` for the fold, where
//! `B` is a torch `Linear` weight (`[out, in]`, row-major).
//!
//! `B` is packed once into panels of [`NR`] output columns (`k` rows of `NR`
//! contiguous values each), so the micro-kernel streams one panel while
//! holding an `MR x NR` block of `C` in registers. The inner loops are plain
//! fixed-size array arithmetic that LLVM vectorizes; on x86-64 the same code
//! is also compiled with AVX2+FMA and picked at run time.

/// Output columns per packed panel.
pub const NR: usize = 16;
/// Rows of A per micro-kernel call.
const MR: usize = 4;

/// `B` (`n x k`, row-major) packed into `ceil(n / NR)` panels of `k x NR`.
pub struct PackedB {
    pub n: usize,
    pub k: usize,
    data: Vec<f32>,
}

impl PackedB {
    pub fn pack(b: &[f32], n: usize, k: usize) -> PackedB {
        assert_eq!(
            b.len(),
            n * k,
            "PackedB::pack: {} values for {n} x {k}",
            b.len()
        );
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for (p, panel) in data.chunks_exact_mut(k * NR).enumerate() {
            for c in 0..NR.min(n - p * NR) {
                let row = &b[(p * NR + c) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + c] = v;
                }
            }
        }
        PackedB { n, k, data }
    }
}

#[inline(always)]
fn kernel_body<const FMA: bool>(a: &[f32], m: usize, k: usize, b: &PackedB, c: &mut [f32]) {
    let n = b.n;
    let mut pad: Vec<f32> = Vec::new();
    for i0 in (0..m).step_by(MR) {
        let mr = MR.min(m - i0);
        // The tail block reads zero rows past m.
        let a_blk: &[f32] = if mr == MR {
            &a[i0 * k..(i0 + MR) * k]
        } else {
            pad.clear();
            pad.extend_from_slice(&a[i0 * k..(i0 + mr) * k]);
            pad.resize(MR * k, 0.0);
            &pad
        };
        let (a0, rest) = a_blk.split_at(k);
        let (a1, rest) = rest.split_at(k);
        let (a2, a3) = rest.split_at(k);
        for (p, panel) in b.data.chunks_exact(k * NR).enumerate() {
            let mut acc = [[0f32; NR]; MR];
            for (kk, bv) in panel.chunks_exact(NR).enumerate() {
                let bv: &[f32; NR] = bv.try_into().expect("NR values");
                let av = [a0[kk], a1[kk], a2[kk], a3[kk]];
                for r in 0..MR {
                    for j in 0..NR {
                        acc[r][j] = if FMA {
                            av[r].mul_add(bv[j], acc[r][j])
                        } else {
                            acc[r][j] + av[r] * bv[j]
                        };
                    }
                }
            }
            let j0 = p * NR;
            let nc = NR.min(n - j0);
            for (r, acc_r) in acc.iter().enumerate().take(mr) {
                c[(i0 + r) * n + j0..][..nc].copy_from_slice(&acc_r[..nc]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(a: &[f32], m: usize, k: usize, b: &PackedB, c: &mut [f32]) {
    kernel_body::<true>(a, m, k, b, c)
}

/// `C (m x n) = A (m x k) · Bᵀ` on the calling thread; callers split rows
/// of A across threads.
pub fn gemm_nt(a: &[f32], m: usize, b: &PackedB, c: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    assert!(
        a.len() >= m * k && c.len() >= m * n,
        "gemm_nt: buffers too small"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), the
            // only requirement of calling a `target_feature` function; the
            // body itself is safe code.
            unsafe { kernel_avx2(a, m, k, b, c) };
            return;
        }
        kernel_body::<false>(a, m, k, b, c)
    }
    #[cfg(target_arch = "aarch64")]
    kernel_body::<true>(a, m, k, b, c);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    kernel_body::<false>(a, m, k, b, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_with_tails() {
        let (m, n, k) = (7, 37, 19);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let mut c = vec![0f32; m * n];
        gemm_nt(&a, m, &PackedB::pack(&b, n, k), &mut c);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|t| a[i * k + t] as f64 * b[j * k + t] as f64)
                    .sum();
                assert!(
                    (c[i * n + j] as f64 - want).abs() < 1e-5,
                    "c[{i}][{j}] = {} want {want}",
                    c[i * n + j]
                );
            }
        }
    }
}
