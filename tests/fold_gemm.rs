//! The fold GEMM (`meki::convert::gemm`) on every path this CPU has
//! (generic, avx2, avx512), against an f64 product; paths the CPU lacks are
//! reported as skipped on stderr. Shapes have `m`, `n`, `k` off the tile
//! sizes (6 or 12 rows, 16 or 32 columns), `k` deeper than a pass, odd and
//! even panel counts. On a CPU with AVX-512 (the avx512 path cannot be
//! emulated in CI) build once and run the binary there:
//!
//!     cargo test --release --test fold_gemm --no-run   # prints the binary
//!     <binary> --nocapture
//!
//! Env MEKI_REQUIRE_AVX512=1 makes a missing avx512 path a failure.

use meki::convert::gemm::{gemm_nt_on, selected_path, GemmPath, PackedB};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// (m, n, k): rows off 6 and 12, columns off 16 and 32 (1, 2 and 3 panels,
/// a partial last panel, an odd panel count), depth off and above one pass
/// (192 for avx512, 256 otherwise), and the fold's own blocks.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (1, 16, 3),
    (5, 15, 7),
    (7, 37, 19),
    (13, 33, 191),
    (12, 32, 192),
    (25, 49, 193),
    (11, 48, 257),
    (30, 80, 600),
    (96, 47, 1000),
    (96, 256, 1024),
    (17, 100, 2049),
];

/// Checks every element against the f64 product within the worst-case
/// rounding bound of a k-term f32 dot product in any order
/// (k * eps * sum |a_t b_t|; a wrong or missing term is far outside it).
fn check(path: GemmPath, c: &[f32], a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) {
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
                "{} {m}x{n}x{k}: c[{i}][{j}] = {got}, f64 product {want} (tol {tol:e})",
                path.name()
            );
        }
    }
}

fn run(path: GemmPath, a: &[f32], m: usize, b: &PackedB) -> Vec<f32> {
    // NaN-filled: every element must be written.
    let mut c = vec![f32::NAN; m * b.n];
    gemm_nt_on(path, a, m, b, &mut c).expect("path is available");
    c
}

fn test_path(path: GemmPath) {
    if !path.is_available() {
        let required = path == GemmPath::Avx512
            && std::env::var("MEKI_REQUIRE_AVX512").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "MEKI_REQUIRE_AVX512=1 but this CPU lacks avx512f"
        );
        eprintln!(
            "fold_gemm: SKIPPED path {}: not available on this CPU",
            path.name()
        );
        return;
    }
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let a = values(m * k, 2 * s as u64);
        let b = values(n * k, 2 * s as u64 + 1);
        let pb = PackedB::pack(&b, n, k);
        let c = run(path, &a, m, &pb);
        check(path, &c, &a, &b, (m, n, k));
        // Same operands, rows split like the fold's parallel tasks: each
        // row's result does not depend on the other rows.
        if m > 1 {
            let m1 = m / 2;
            let mut c2 = run(path, &a[..m1 * k], m1, &pb);
            c2.extend(run(path, &a[m1 * k..], m - m1, &pb));
            assert!(
                c.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{} {m}x{n}x{k}: result depends on the row split",
                path.name()
            );
        }
    }
    eprintln!(
        "fold_gemm: path {} ok on {} shapes",
        path.name(),
        SHAPES.len()
    );
}

#[test]
fn generic_path_matches_f64() {
    test_path(GemmPath::Generic);
}

#[test]
fn avx2_path_matches_f64() {
    test_path(GemmPath::Avx2);
}

#[test]
fn avx512_path_matches_f64() {
    test_path(GemmPath::Avx512);
}

/// avx2 and avx512 both sum each element with one FMA per step in
/// ascending k, so they must agree bit for bit.
#[test]
fn avx512_equals_avx2_bitwise() {
    if !(GemmPath::Avx512.is_available() && GemmPath::Avx2.is_available()) {
        eprintln!("fold_gemm: SKIPPED avx512 vs avx2: avx512 not available on this CPU");
        return;
    }
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let a = values(m * k, 100 + s as u64);
        let pb = PackedB::pack(&values(n * k, 200 + s as u64), n, k);
        let c512 = run(GemmPath::Avx512, &a, m, &pb);
        let c2 = run(GemmPath::Avx2, &a, m, &pb);
        if let Some(i) = (0..c2.len()).find(|&i| c512[i].to_bits() != c2[i].to_bits()) {
            panic!(
                "{m}x{n}x{k}: avx512 c[{}][{}] = {} but avx2 {}",
                i / n,
                i % n,
                c512[i],
                c2[i]
            );
        }
    }
}

#[test]
fn selected_path_is_available() {
    let p = selected_path();
    eprintln!(
        "fold_gemm: selected path {} (best available {})",
        p.name(),
        GemmPath::best_available().name()
    );
    assert!(p.is_available());
    if let Some(want) = std::env::var("MEKI_GEMM")
        .ok()
        .and_then(|v| GemmPath::from_name(&v))
    {
        if want.is_available() {
            assert_eq!(p, want, "MEKI_GEMM not honoured");
        }
    }
}
