//! Cache-blocked f32 matrix multiplication `C = A · Bᵀ` for the fold, where
//! `B` is a torch `Linear` weight (`[out, in]`, row-major).
//!
//! `B` is packed once into panels of [`NR`] = 16 output columns (`k` rows of
//! 16 contiguous values each) and A, per `KC`-deep slice, into `MR`-row
//! blocks stored k-major. One driver (`tiles`) walks the `MR x (NP * 16)`
//! tiles of `C` and does all edge handling in safe code: A's rows past `m`
//! are packed as zeros, B's columns past `n` are zeros in the last panel,
//! and a tile's `C` block goes through a full-size local array of which only
//! the valid `mr x nc` part is copied in and out. The micro-kernels therefore
//! only ever see whole tiles and hold them in registers while streaming
//! both packed operands. Three paths share that driver:
//!
//! - `generic`: 6 x 16 tiles, plain fixed-size array arithmetic that LLVM
//!   vectorizes for the baseline target (separate multiply and add on
//!   x86-64, fused on aarch64).
//! - `avx2`: the same code compiled with AVX2+FMA: 12 ymm accumulators, two
//!   B loads and six broadcasts feed twelve FMAs (FMA-bound, like BLAS's
//!   Haswell kernels).
//! - `avx512`: 12 x 32 tiles (two adjacent panels; an odd last panel runs as
//!   12 x 16) in 24 zmm accumulators, written with AVX-512F intrinsics: per
//!   k step two B loads and twelve broadcasts feed 24 FMAs. Its depth per
//!   pass is smaller ([`KC_AVX512`]) so the two B panels (`KC x 32`) stay in
//!   L1 next to the streamed A block.
//!
//! Every path sums each `C` element in the same order (`k` ascending, one
//! rounding per step), so `avx2` and `avx512` give bit-identical results;
//! `generic` on x86-64 differs only by the FMA's missing intermediate
//! rounding.
//!
//! The fastest path the CPU has is picked at run time; env `MEKI_GEMM` =
//! `generic` | `avx2` | `avx512` forces one (for tests and benchmarks; a path
//! the CPU lacks falls back to the best available with a warning), and env
//! `MEKI_GEMM_KC` overrides the avx512 path's depth per pass and
//! `MEKI_GEMM_PREFETCH=0` turns off its L2 prefetch of the next B panels
//! (tuning only: results do not depend on either). [`selected_path`] says
//! which path runs.

use std::sync::OnceLock;

/// Output columns per packed panel.
pub const NR: usize = 16;

/// `B` (`n x k`, row-major) packed into `ceil(n / NR)` panels of `k x NR`,
/// starting at a 64-byte boundary (`data[off..]`) so that no panel row (64
/// bytes) straddles two cache lines: whole-row vector loads never split.
pub struct PackedB {
    pub n: usize,
    pub k: usize,
    data: Vec<f32>,
    off: usize,
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
        let len = panels * k * NR;
        let mut data = vec![0f32; len + 15];
        // The buffer is never resized, so its address (and alignment) stays.
        let off = data.as_ptr().align_offset(64).min(15);
        for (p, panel) in data[off..off + len]
            .chunks_exact_mut((k * NR).max(1))
            .enumerate()
        {
            for c in 0..NR.min(n - p * NR) {
                let row = &b[(p * NR + c) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + c] = v;
                }
            }
        }
        PackedB { n, k, data, off }
    }

    /// Rows `k0..k0 + kc` of panel `p` (`kc x NR` values).
    fn panel_slice(&self, p: usize, k0: usize, kc: usize) -> &[f32] {
        &self.data[self.off + (p * self.k + k0) * NR..][..kc * NR]
    }
}

/// A GEMM implementation the CPU may or may not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    Generic,
    Avx2,
    Avx512,
}

impl GemmPath {
    pub const ALL: [GemmPath; 3] = [GemmPath::Generic, GemmPath::Avx2, GemmPath::Avx512];

    /// The name `MEKI_GEMM` takes.
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Generic => "generic",
            GemmPath::Avx2 => "avx2",
            GemmPath::Avx512 => "avx512",
        }
    }

    pub fn from_name(s: &str) -> Option<GemmPath> {
        GemmPath::ALL.into_iter().find(|p| p.name() == s.trim())
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            GemmPath::Generic => true,
            #[cfg(target_arch = "x86_64")]
            GemmPath::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            GemmPath::Avx512 => {
                GemmPath::Avx2.is_available() && std::is_x86_feature_detected!("avx512f")
            }
            #[cfg(not(target_arch = "x86_64"))]
            GemmPath::Avx2 | GemmPath::Avx512 => false,
        }
    }

    /// The fastest path this CPU has.
    pub fn best_available() -> GemmPath {
        [GemmPath::Avx512, GemmPath::Avx2]
            .into_iter()
            .find(|p| p.is_available())
            .unwrap_or(GemmPath::Generic)
    }
}

/// The path [`gemm_nt`] uses: env `MEKI_GEMM` if set to an available path,
/// else the best available one (decided once per process).
pub fn selected_path() -> GemmPath {
    static PATH: OnceLock<GemmPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        let best = GemmPath::best_available();
        let Ok(want) = std::env::var("MEKI_GEMM") else {
            return best;
        };
        match GemmPath::from_name(&want) {
            Some(p) if p.is_available() => p,
            Some(p) => {
                eprintln!(
                    "MEKI_GEMM={}: this CPU lacks it, using {}",
                    p.name(),
                    best.name()
                );
                best
            }
            None => {
                eprintln!(
                    "MEKI_GEMM={want:?} is not one of generic, avx2, avx512; using {}",
                    best.name()
                );
                best
            }
        }
    })
}

/// Depth of one pass of the generic and avx2 paths: `KC x NR` of B
/// (16 KiB) stays in L1 while every 6-row block of A streams past it.
const KC: usize = 256;

/// Depth of one pass of the avx512 path: its `KC x 32` of B (24 KiB) stays
/// in L1 (32-48 KiB on AVX-512 cores) next to the streamed `12 x KC` A block.
pub const KC_AVX512: usize = 192;

/// The avx512 path's knobs; the other paths ignore them. Results do not
/// depend on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512Tuning {
    /// Depth of one pass (clamped to 8..=4096).
    pub kc: usize,
    /// Prefetch the next B panels into L2 while a panel pair runs.
    pub prefetch: bool,
}

impl Avx512Tuning {
    /// From env `MEKI_GEMM_KC` (default [`KC_AVX512`]) and
    /// `MEKI_GEMM_PREFETCH` (0 = off, default on), read once.
    pub fn from_env() -> Avx512Tuning {
        static TUNING: OnceLock<Avx512Tuning> = OnceLock::new();
        *TUNING.get_or_init(|| Avx512Tuning {
            kc: std::env::var("MEKI_GEMM_KC")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(KC_AVX512),
            prefetch: crate::env_switch("MEKI_GEMM_PREFETCH"),
        })
    }
}

/// A register-blocked micro-kernel for whole `MR x (NP * NR)` tiles:
/// `acc[r][q][j] += ap[kk * MR + r] * bp[q][kk * NR + j]` for `kk < kc`, in
/// ascending `kk`, one fused multiply-add (or multiply then add) per step.
trait Micro<const MR: usize> {
    /// # Safety
    /// The CPU has the target features the implementation is compiled for.
    /// `ap` holds `kc * MR` values and every `bp[q]` `kc * NR` (checked).
    unsafe fn tile<const NP: usize>(
        acc: &mut [[[f32; NR]; NP]; MR],
        ap: &[f32],
        bp: [&[f32]; NP],
        kc: usize,
    );

    /// Hints that the cache line at `p` is read soon, by a later tile.
    ///
    /// # Safety
    /// As for `tile`.
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}
}

/// `C (m x n) = A (m x k) · Bᵀ` with `MR x (NP * NR)` tiles of micro-kernel
/// `K` (`NP_MAX` panels side by side, an odd last panel alone) and depth
/// `kc_max` per pass. All edges are handled here: see the module doc.
///
/// # Safety
/// The CPU has the target features `K` is compiled for.
#[inline(always)]
unsafe fn tiles<const MR: usize, const NP_MAX: usize, K: Micro<MR>>(
    kc_max: usize,
    prefetch: bool,
    a: &[f32],
    m: usize,
    b: &PackedB,
    c: &mut [f32],
) {
    const { assert!(NP_MAX == 1 || NP_MAX == 2) };
    let (n, k) = (b.n, b.k);
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let panels = n.div_ceil(NR);
    // A's current `MR x kc_max` blocks, packed k-major (`apack[kk * MR + r]`)
    // so the micro-kernel's broadcasts read one contiguous stream; rows past
    // m are zeros.
    let row_blocks = m.div_ceil(MR);
    let mut apack = vec![0f32; row_blocks * kc_max * MR];
    for k0 in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - k0);
        for (ib, blk) in apack.chunks_exact_mut(kc_max * MR).enumerate() {
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
        let pass = Pass {
            apack: &apack,
            kc_max,
            kc,
            k0,
            m,
        };
        // Panels in the group starting at `p`.
        let group = |p: usize| NP_MAX.min(panels - p);
        let mut p = 0;
        while p < panels {
            let np = group(p);
            let next = if prefetch && p + np < panels {
                group(p + np)
            } else {
                0
            };
            if np == 2 {
                // SAFETY: forwarded from this function's contract.
                unsafe { panel_group::<MR, 2, K>(&pass, b, p, next, c) };
            } else {
                // SAFETY: forwarded from this function's contract.
                unsafe { panel_group::<MR, 1, K>(&pass, b, p, next, c) };
            }
            p += np;
        }
    }
}

/// One depth slice `k0..k0 + kc` of a [`tiles`] call, A packed.
struct Pass<'a> {
    apack: &'a [f32],
    kc_max: usize,
    kc: usize,
    k0: usize,
    m: usize,
}

/// Panels `p..p + NP` (columns `p * NR..`) of one depth slice, over every
/// row block of A. Meanwhile the next `next` panels' slices are prefetched
/// into L2, a share per row block (B streams from L3 or memory once per
/// call, so without this the first row block would wait for it).
///
/// # Safety
/// The CPU has the target features `K` is compiled for.
#[inline(always)]
unsafe fn panel_group<const MR: usize, const NP: usize, K: Micro<MR>>(
    pass: &Pass,
    b: &PackedB,
    p: usize,
    next: usize,
    c: &mut [f32],
) {
    let Pass {
        apack,
        kc_max,
        kc,
        k0,
        m,
    } = *pass;
    let n = b.n;
    let j0 = p * NR;
    // Valid columns of this tile; the rest of it multiplies B's zero padding.
    let nc = (NP * NR).min(n - j0);
    let mut bp: [&[f32]; NP] = [&[]; NP];
    for (q, s) in bp.iter_mut().enumerate() {
        *s = b.panel_slice(p + q, k0, kc);
    }
    let row_blocks = apack.len() / (kc_max * MR);
    // Rows (of NR values = one 64-byte line) of each next panel to prefetch
    // per row block.
    let pf_share = kc.div_ceil(row_blocks.max(1));
    for (ib, ap) in apack.chunks_exact(kc_max * MR).enumerate() {
        let i0 = ib * MR;
        let mr = MR.min(m - i0);
        for q in 0..next {
            let s = b.panel_slice(p + NP + q, k0, kc);
            for kk in (ib * pf_share..kc).take(pf_share) {
                // SAFETY: forwarded from this function's contract; the
                // address is inside `s`, and a prefetch reads nothing.
                unsafe { K::prefetch(s[kk * NR..].as_ptr()) };
            }
        }
        let mut acc = [[[0f32; NR]; NP]; MR];
        // Full-width rows are copied with a constant length (inline vector
        // moves, not a memcpy call per row).
        let full = nc == NP * NR;
        if k0 > 0 {
            for (r, acc_r) in acc.iter_mut().enumerate().take(mr) {
                let src = &c[(i0 + r) * n + j0..];
                let dst = acc_r.as_flattened_mut();
                if full {
                    dst.copy_from_slice(&src[..NP * NR]);
                } else {
                    dst[..nc].copy_from_slice(&src[..nc]);
                }
            }
        }
        // SAFETY: forwarded from this function's contract; `ap` and `bp`
        // hold `kc` steps.
        unsafe { K::tile::<NP>(&mut acc, &ap[..kc * MR], bp, kc) };
        for (r, acc_r) in acc.iter().enumerate().take(mr) {
            let dst = &mut c[(i0 + r) * n + j0..];
            let src = acc_r.as_flattened();
            if full {
                dst[..NP * NR].copy_from_slice(src);
            } else {
                dst[..nc].copy_from_slice(&src[..nc]);
            }
        }
    }
}

/// The generic and avx2 micro-kernel: fixed-size array arithmetic that LLVM
/// vectorizes, fused multiply-add when `FMA`.
struct ArrayMicro<const FMA: bool>;

impl<const MR: usize, const FMA: bool> Micro<MR> for ArrayMicro<FMA> {
    #[inline(always)]
    unsafe fn tile<const NP: usize>(
        acc: &mut [[[f32; NR]; NP]; MR],
        ap: &[f32],
        bp: [&[f32]; NP],
        kc: usize,
    ) {
        const { assert!(NP == 1 || NP == 2) };
        let ap = &ap[..kc * MR];
        let b0 = &bp[0][..kc * NR];
        let mut c = *acc;
        if NP == 1 {
            for (av, bv) in ap.chunks_exact(MR).zip(b0.chunks_exact(NR)) {
                let av: &[f32; MR] = av.try_into().expect("MR values");
                let bv: &[f32; NR] = bv.try_into().expect("NR values");
                for r in 0..MR {
                    let x = av[r];
                    for j in 0..NR {
                        if FMA {
                            c[r][0][j] = x.mul_add(bv[j], c[r][0][j]);
                        } else {
                            c[r][0][j] += x * bv[j];
                        }
                    }
                }
            }
        } else {
            let b1 = &bp[NP - 1][..kc * NR];
            for ((av, bv0), bv1) in ap
                .chunks_exact(MR)
                .zip(b0.chunks_exact(NR))
                .zip(b1.chunks_exact(NR))
            {
                let av: &[f32; MR] = av.try_into().expect("MR values");
                for r in 0..MR {
                    let x = av[r];
                    for (q, bv) in [bv0, bv1].into_iter().enumerate() {
                        let bv: &[f32; NR] = bv.try_into().expect("NR values");
                        let c = &mut c[r][q.min(NP - 1)];
                        for j in 0..NR {
                            if FMA {
                                c[j] = x.mul_add(bv[j], c[j]);
                            } else {
                                c[j] += x * bv[j];
                            }
                        }
                    }
                }
            }
        }
        *acc = c;
    }
}

/// One SIMD register of 16 f32 lanes, for [`LanesMicro`].
#[cfg(any(test, target_arch = "x86_64"))]
trait Lanes16: Copy {
    /// # Safety (all methods)
    /// The CPU has the implementation's target features; pointers are valid
    /// for 16 values (`splat`: one).
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn splat(p: *const f32) -> Self;
    /// `a * b + c`, one rounding.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// Fetches the line at `p` into L2 (a hint; no-op by default).
    #[inline(always)]
    unsafe fn prefetch_l2(_p: *const f32) {}
}

/// The avx512 micro-kernel, written over [`Lanes16`] so the same code runs
/// (in tests) on a portable 16-lane type on CPUs without AVX-512.
#[cfg(any(test, target_arch = "x86_64"))]
struct LanesMicro<V>(std::marker::PhantomData<V>);

#[cfg(any(test, target_arch = "x86_64"))]
impl<const MR: usize, V: Lanes16> Micro<MR> for LanesMicro<V> {
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: forwarded from this function's contract.
        unsafe { V::prefetch_l2(p) }
    }

    #[inline(always)]
    unsafe fn tile<const NP: usize>(
        acc: &mut [[[f32; NR]; NP]; MR],
        ap: &[f32],
        bp: [&[f32]; NP],
        kc: usize,
    ) {
        assert!(ap.len() >= kc * MR && bp.iter().all(|s| s.len() >= kc * NR));
        // SAFETY: the caller guarantees the target features; every pointer
        // below stays inside `acc` (MR x NP x 16 values), `ap` (kc x MR) or
        // `bp[q]` (kc x 16), as the lengths were checked just above.
        unsafe {
            let mut c = [[V::zero(); NP]; MR];
            for r in 0..MR {
                for q in 0..NP {
                    c[r][q] = V::load(acc[r][q].as_ptr());
                }
            }
            let mut a = ap.as_ptr();
            let mut bq = [std::ptr::null::<f32>(); NP];
            for q in 0..NP {
                bq[q] = bp[q].as_ptr();
            }
            for _ in 0..kc {
                let mut bv = [V::zero(); NP];
                for q in 0..NP {
                    bv[q] = V::load(bq[q]);
                    bq[q] = bq[q].add(NR);
                }
                for (r, c_r) in c.iter_mut().enumerate() {
                    let x = V::splat(a.add(r));
                    for (c_rq, &b) in c_r.iter_mut().zip(&bv) {
                        *c_rq = V::fma(x, b, *c_rq);
                    }
                }
                a = a.add(MR);
            }
            for r in 0..MR {
                for q in 0..NP {
                    c[r][q].store(acc[r][q].as_mut_ptr());
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes16 for std::arch::x86_64::__m512 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { std::arch::x86_64::_mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees AVX-512F and 16 readable values.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable values.
        unsafe { std::arch::x86_64::_mm512_storeu_ps(p, self) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        // SAFETY: the caller guarantees AVX-512F and one readable value.
        unsafe { std::arch::x86_64::_mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const f32) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: a prefetch is a hint that never faults; SSE is baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p as *const i8) }
    }
}

/// Rows per tile of the generic and avx2 paths.
const MR_ARRAY: usize = 6;
/// Rows per tile of the avx512 path (x 32 columns: 24 zmm accumulators;
/// 96 = `fold::ROWS_PER_TASK` rows are 8 whole tiles).
#[cfg(any(target_arch = "x86_64", test))]
const MR_AVX512: usize = 12;

fn kernel_generic(a: &[f32], m: usize, b: &PackedB, c: &mut [f32]) {
    // aarch64's baseline has FMA; x86-64's does not.
    const FMA: bool = cfg!(target_arch = "aarch64");
    // SAFETY: `ArrayMicro` needs no target feature.
    unsafe { tiles::<MR_ARRAY, 1, ArrayMicro<FMA>>(KC, false, a, m, b, c) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(a: &[f32], m: usize, b: &PackedB, c: &mut [f32]) {
    // SAFETY: this function's features are the only requirement.
    unsafe { tiles::<MR_ARRAY, 1, ArrayMicro<true>>(KC, false, a, m, b, c) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel_avx512(a: &[f32], m: usize, b: &PackedB, c: &mut [f32], tuning: Avx512Tuning) {
    let (kc, prefetch) = (tuning.kc.clamp(8, 4096), tuning.prefetch);
    // SAFETY: this function's features are the ones `LanesMicro<__m512>`
    // is compiled for.
    unsafe {
        tiles::<MR_AVX512, 2, LanesMicro<std::arch::x86_64::__m512>>(kc, prefetch, a, m, b, c)
    }
}

/// `C (m x n) = A (m x k) · Bᵀ` on the calling thread with the
/// [`selected_path`]; callers split rows of A across threads.
pub fn gemm_nt(a: &[f32], m: usize, b: &PackedB, c: &mut [f32]) {
    gemm_nt_on(selected_path(), a, m, b, c)
        .expect("the selected GEMM path is available on this CPU");
}

/// [`gemm_nt`] on a given path; an error if this CPU lacks it.
pub fn gemm_nt_on(
    path: GemmPath,
    a: &[f32],
    m: usize,
    b: &PackedB,
    c: &mut [f32],
) -> Result<(), String> {
    gemm_nt_tuned(path, Avx512Tuning::from_env(), a, m, b, c)
}

/// [`gemm_nt_on`] with explicit avx512 knobs (for benchmarks).
pub fn gemm_nt_tuned(
    path: GemmPath,
    tuning: Avx512Tuning,
    a: &[f32],
    m: usize,
    b: &PackedB,
    c: &mut [f32],
) -> Result<(), String> {
    let (k, n) = (b.k, b.n);
    assert!(
        a.len() >= m * k && c.len() >= m * n,
        "gemm_nt: buffers too small"
    );
    if !path.is_available() {
        return Err(format!(
            "GEMM path {} is not available on this CPU",
            path.name()
        ));
    }
    match path {
        GemmPath::Generic => kernel_generic(a, m, b, c),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA (`is_available` above), the only
        // requirement of this `target_feature` function.
        GemmPath::Avx2 => unsafe { kernel_avx2(a, m, b, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA (`is_available` above).
        GemmPath::Avx512 => unsafe { kernel_avx512(a, m, b, c, tuning) },
        #[cfg(not(target_arch = "x86_64"))]
        GemmPath::Avx2 | GemmPath::Avx512 => {
            let _ = tuning;
            unreachable!("not available")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A portable stand-in for a zmm register, so the avx512 path's
    /// micro-kernel and tile walk run (and are tested) on any CPU.
    #[derive(Clone, Copy)]
    struct Portable([f32; NR]);

    impl Lanes16 for Portable {
        unsafe fn zero() -> Self {
            Portable([0.0; NR])
        }
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees 16 readable values.
            Portable(unsafe { *(p as *const [f32; NR]) })
        }
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees 16 writable values.
            unsafe { *(p as *mut [f32; NR]) = self.0 }
        }
        unsafe fn splat(p: *const f32) -> Self {
            // SAFETY: the caller guarantees one readable value.
            Portable([unsafe { *p }; NR])
        }
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Portable(std::array::from_fn(|j| a.0[j].mul_add(b.0[j], c.0[j])))
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// `c` against the f64 product, within the worst-case rounding bound of
    /// a k-term f32 dot product (k * eps * sum |a_t b_t|, with margin).
    fn check(c: &[f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, what: &str) {
        for i in 0..m {
            for j in 0..n {
                let (mut want, mut mag) = (0f64, 0f64);
                for t in 0..k {
                    let p = a[i * k + t] as f64 * b[j * k + t] as f64;
                    want += p;
                    mag += p.abs();
                }
                let tol = 1.01 * k as f64 * f32::EPSILON as f64 * mag + 1e-30;
                let got = c[i * n + j] as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{what} {m}x{n}x{k}: c[{i}][{j}] = {got} want {want} (tol {tol:e})"
                );
            }
        }
    }

    #[test]
    fn matches_naive_with_tails() {
        let (m, n, k) = (7, 37, 19);
        let a = values(m * k, 1);
        let b = values(n * k, 2);
        let mut c = vec![0f32; m * n];
        gemm_nt(&a, m, &PackedB::pack(&b, n, k), &mut c);
        check(&c, &a, &b, m, n, k, selected_path().name());
    }

    /// The avx512 path's tile walk and micro-kernel (12 x 32 tiles, odd last
    /// panel, several depth passes) on the portable lane type: matches the
    /// f64 product and, both being sequential FMAs, the avx2 path bit for bit.
    #[test]
    fn avx512_structure_on_portable_lanes() {
        for (m, n, k, kc) in [
            (1, 1, 1, 192),
            (13, 37, 200, 192),
            (25, 49, 500, 192),
            (24, 64, 384, 192),
            (96, 40, 77, 16),
            (5, 17, 1000, 256),
        ] {
            let a = values(m * k, m as u64);
            let b = values(n * k, n as u64 + 7);
            let pb = PackedB::pack(&b, n, k);
            let mut c = vec![f32::NAN; m * n];
            // SAFETY: `Portable` needs no target feature.
            unsafe { tiles::<MR_AVX512, 2, LanesMicro<Portable>>(kc, true, &a, m, &pb, &mut c) };
            check(&c, &a, &b, m, n, k, "portable avx512");
            // The array micro-kernel in the same 2-panel shape.
            let mut c2 = vec![f32::NAN; m * n];
            // SAFETY: `ArrayMicro` needs no target feature.
            unsafe { tiles::<MR_AVX512, 2, ArrayMicro<true>>(kc, false, &a, m, &pb, &mut c2) };
            assert!(c.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
            if GemmPath::Avx2.is_available() {
                let mut c3 = vec![f32::NAN; m * n];
                gemm_nt_on(GemmPath::Avx2, &a, m, &pb, &mut c3).unwrap();
                let same = c.iter().zip(&c3).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}x{n}x{k}: portable avx512 differs from avx2");
            }
        }
    }

    #[test]
    fn path_names_round_trip() {
        for p in GemmPath::ALL {
            assert_eq!(GemmPath::from_name(p.name()), Some(p));
        }
        assert_eq!(GemmPath::from_name("avx-512"), None);
        assert!(GemmPath::best_available().is_available());
        assert!(selected_path().is_available());
    }
}
