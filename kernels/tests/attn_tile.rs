//! Flash-attention tile kernels of every family against f64 references:
//! tile scores (`Q K^T`), tile weighted sums (`O += P V`) and the shifted
//! exponential of the online softmax. Bounds in units of u = 2^-24.

mod common;
use common::*;
use meki_kernels::vec::*;
use meki_kernels::Isa;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// (rows, keys, head size, row stride): 1 to 5 rows (the AVX2 kernel pairs
/// rows for scores, groups of 4 for sums), key counts around its 4-key
/// passes, head sizes with and without whole 8- and 16-lane vectors.
const SHAPES: [(usize, usize, usize, usize); 9] = [
    (1, 1, 8, 8),
    (2, 4, 16, 24),
    (3, 5, 64, 64),
    (4, 7, 128, 256),
    (5, 32, 128, 128),
    (1, 33, 24, 40),
    (2, 3, 12, 12),
    (16, 32, 64, 64),
    (7, 9, 6, 10),
];

#[test]
fn tile_scores_match_f64() {
    let mut rng = Rng::new(11);
    for (r, n, d, stride) in SHAPES {
        let q = random_f32(&mut rng, r * d, 1.0);
        let keys = random_f32(&mut rng, (n - 1) * stride + d, 4.0);
        for isa in Isa::available() {
            let mut s = vec![f32::NAN; r * n];
            attn_tile_scores_with(isa, &q, d, &keys, stride, &mut s);
            for i in 0..r {
                for j in 0..n {
                    let terms = (0..d).map(|k| q[i * d + k] as f64 * keys[j * stride + k] as f64);
                    let want: f64 = terms.clone().sum();
                    let mag: f64 = terms.map(f64::abs).sum();
                    // d roundings of the products and partial sums.
                    let tol = (d as f64 + 2.0) * U * mag;
                    let got = s[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{isa} r={r} n={n} d={d}: s[{i},{j}] = {got}, want {want}, tol {tol:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn tile_accumulate_matches_f64() {
    let mut rng = Rng::new(12);
    for (r, n, d, stride) in SHAPES {
        let p: Vec<f32> = random_f32(&mut rng, r * n, 1.0)
            .iter()
            .map(|x| x.abs())
            .collect();
        let values = random_f32(&mut rng, (n - 1) * stride + d, 2.0);
        let o0 = random_f32(&mut rng, r * d, 3.0);
        for isa in Isa::available() {
            let mut o = o0.clone();
            attn_tile_accumulate_with(isa, &p, &values, stride, d, &mut o);
            for i in 0..r {
                for k in 0..d {
                    let terms = (0..n).map(|j| p[i * n + j] as f64 * values[j * stride + k] as f64);
                    let want = o0[i * d + k] as f64 + terms.clone().sum::<f64>();
                    let mag = (o0[i * d + k] as f64).abs() + terms.map(f64::abs).sum::<f64>();
                    let tol = (n as f64 + 2.0) * U * mag;
                    let got = o[i * d + k] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{isa} r={r} n={n} d={d}: o[{i},{k}] = {got}, want {want}, tol {tol:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn exp_shift_sum_matches_f64() {
    let mut rng = Rng::new(13);
    for n in [1, 3, 8, 9, 32, 100] {
        let x: Vec<f32> = random_f32(&mut rng, n, 20.0);
        let shift = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for isa in Isa::available() {
            let mut e = x.clone();
            let sum = exp_shift_sum_with(isa, &mut e, shift);
            let mut want_sum = 0f64;
            for k in 0..n {
                // From the f32 difference (its rounding is the caller's).
                let want = ((x[k] - shift) as f64).exp();
                want_sum += want;
                // The polynomial exp: a few ulp.
                assert!(
                    (e[k] as f64 - want).abs() <= 8.0 * U * want,
                    "{isa} n={n}: exp[{k}] = {}, want {want}",
                    e[k]
                );
            }
            assert!(
                (sum as f64 - want_sum).abs() <= (n as f64 + 8.0) * U * want_sum,
                "{isa} n={n}: sum {sum}, want {want_sum}"
            );
        }
    }
}

/// f16 rows of `n` values each (row `j` at element `j * stride`), as bytes
/// and as the f32 values they hold.
fn f16_rows(rng: &mut Rng, len: usize, scale: f32) -> (Vec<u8>, Vec<f32>) {
    let h: Vec<half::f16> = (0..len)
        .map(|_| half::f16::from_f32(rng.f32() * scale))
        .collect();
    let bytes = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    (bytes, h.iter().map(|x| x.to_f32()).collect())
}

#[test]
fn f16_tile_kernels_match_f64() {
    // The f16 kernels read the cache in place: the f64 reference uses the
    // values the f16 rows hold, with the bounds of the f32 kernels.
    let mut rng = Rng::new(14);
    for (r, n, d, stride) in SHAPES {
        let q = random_f32(&mut rng, r * d, 1.0);
        let (kb, kf) = f16_rows(&mut rng, (n - 1) * stride + d, 4.0);
        let (vb, vf) = f16_rows(&mut rng, (n - 1) * stride + d, 2.0);
        let p: Vec<f32> = random_f32(&mut rng, r * n, 1.0)
            .iter()
            .map(|x| x.abs())
            .collect();
        for isa in Isa::available() {
            let mut s = vec![f32::NAN; r * n];
            attn_tile_scores_f16_with(isa, &q, d, &kb, 2 * stride, &mut s);
            for i in 0..r {
                for j in 0..n {
                    let terms = (0..d).map(|k| q[i * d + k] as f64 * kf[j * stride + k] as f64);
                    let want: f64 = terms.clone().sum();
                    let tol = (d as f64 + 2.0) * U * terms.map(f64::abs).sum::<f64>();
                    let got = s[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{isa} f16 r={r} n={n} d={d}: s[{i},{j}] = {got}, want {want}"
                    );
                }
            }
            let mut o = vec![0.5f32; r * d];
            attn_tile_accumulate_f16_with(isa, &p, &vb, 2 * stride, d, &mut o);
            for i in 0..r {
                for k in 0..d {
                    let terms = (0..n).map(|j| p[i * n + j] as f64 * vf[j * stride + k] as f64);
                    let want = 0.5 + terms.clone().sum::<f64>();
                    let tol = (n as f64 + 2.0) * U * (0.5 + terms.map(f64::abs).sum::<f64>());
                    let got = o[i * d + k] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{isa} f16 r={r} n={n} d={d}: o[{i},{k}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}
