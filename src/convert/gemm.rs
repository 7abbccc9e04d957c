//! Cache-blocked f32 matrix multiplication `C = A · Bᵀ` for the fold, where
//! `B` is a torch `Linear` weight (`[out, in]`, row-major).
//!
//! `B` is packed once into panels of [`NR`] output columns (`k` rows of `NR`
//! contiguous values each) and A, per `KC`-deep slice, into `MR`-row blocks
//! stored k-major, so the micro-kernel streams both while holding an
//! `MR x NR` = 6 x 16 block of `C` in 12 AVX2 registers (two B loads and six
//! broadcasts feed twelve FMAs: FMA-bound, like BLAS's Haswell kernels). The inner loops are plain
//! fixed-size array arithmetic that LLVM vectorizes; on x86-64 the same code
//! is also compiled with AVX2+FMA and picked at run time.

/// Output columns per packed panel.
pub const NR: usize = 16;
/// Rows of A per micro-kernel call.
const MR: usize = 6;

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

/// Depth of one pass over a panel: `KC x NR` of B (16 KiB) stays in L1
/// while every `MR`-row block of A streams past it.
const KC: usize = 256;

#[inline(always)]
fn kernel_body<const FMA: bool>(a: &[f32], m: usize, k: usize, b: &PackedB, c: &mut [f32]) {
    let n = b.n;
    // A's current `MR x KC` blocks, packed k-major (`apack[kk * MR + r]`) so
    // the micro-kernel's broadcasts read one contiguous stream; rows past m
    // are zeros.
    let row_blocks = m.div_ceil(MR);
    let mut apack = vec![0f32; row_blocks * KC * MR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for (ib, blk) in apack.chunks_exact_mut(KC * MR).enumerate() {
            for r in 0..MR {
                let i = ib * MR + r;
                if i < m {
                    for (kk, &v) in a[i * k + k0..][..kc].iter().enumerate() {
                        blk[kk * MR + r] = v;
                    }
                } else {
                    for kk in 0..kc {
                        blk[kk * MR + r] = 0.0;
                    }
                }
            }
        }
        for (p, panel) in b.data.chunks_exact(k * NR).enumerate() {
            let bp = &panel[k0 * NR..(k0 + kc) * NR];
            let j0 = p * NR;
            let nc = NR.min(n - j0);
            for (ib, ap) in apack.chunks_exact(KC * MR).enumerate() {
                let i0 = ib * MR;
                let mr = MR.min(m - i0);
                let mut acc = [[0f32; NR]; MR];
                if k0 > 0 {
                    for (r, acc_r) in acc.iter_mut().enumerate().take(mr) {
                        acc_r[..nc].copy_from_slice(&c[(i0 + r) * n + j0..][..nc]);
                    }
                }
                micro::<FMA>(&mut acc, &ap[..kc * MR], bp, kc);
                for (r, acc_r) in acc.iter().enumerate().take(mr) {
                    c[(i0 + r) * n + j0..][..nc].copy_from_slice(&acc_r[..nc]);
                }
            }
        }
    }
}

/// `acc[r] += ap[kk * MR + r] * bp[kk]` over `kk < kc`, accumulators in
/// registers (`MR x NR` = 12 AVX2 registers).
#[inline(always)]
fn micro<const FMA: bool>(acc: &mut [[f32; NR]; MR], ap: &[f32], bp: &[f32], kc: usize) {
    let ap = &ap[..kc * MR];
    let bp = &bp[..kc * NR];
    let mut c = *acc;
    for (av, bv) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
        let av: &[f32; MR] = av.try_into().expect("MR values");
        let bv: &[f32; NR] = bv.try_into().expect("NR values");
        for r in 0..MR {
            let x = av[r];
            for j in 0..NR {
                if FMA {
                    c[r][j] = x.mul_add(bv[j], c[r][j]);
                } else {
                    c[r][j] += x * bv[j];
                }
            }
        }
    }
    *acc = c;
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
