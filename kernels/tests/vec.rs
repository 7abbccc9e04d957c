//! Per-token vector kernels of every family against f64 references.
//! Bounds are stated per test in units of u = 2^-24 (f32 unit roundoff).
#![allow(clippy::needless_range_loop)] // index loops read clearer in reference checks

mod common;
use common::*;
use half::f16;
use meki_kernels::vec::*;
use meki_kernels::Isa;

const U: f64 = 1.0 / (1u64 << 24) as f64;
const LENS: [usize; 9] = [1, 3, 4, 8, 15, 16, 33, 100, 1027];

fn close(got: f32, want: f64, tol: f64, what: &str) {
    assert!(
        (got as f64 - want).abs() <= tol,
        "{what}: got {got}, want {want}, tol {tol:e}"
    );
}

#[test]
fn rms_norm_matches_f64() {
    let mut rng = Rng::new(1);
    for n in LENS.into_iter().chain([4096]) {
        let x = random_f32(&mut rng, n, 3.0);
        let w = random_f32(&mut rng, n, 2.0);
        let eps = 1e-6f32;
        let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        let scale = 1.0 / (ss / n as f64 + eps as f64).sqrt();
        for isa in Isa::available() {
            let mut out = vec![0f32; n];
            rms_norm_with(isa, &x, &w, eps, &mut out);
            for k in 0..n {
                let want = x[k] as f64 * scale * w[k] as f64;
                // Sum of squares: n roundings, halved by sqrt; then 4 more.
                close(
                    out[k],
                    want,
                    (n as f64 / 2.0 + 6.0) * U * want.abs(),
                    &format!("{isa} n={n} k={k}"),
                );
            }
        }
    }
}

#[test]
fn add_and_conversions_are_exact() {
    let mut rng = Rng::new(2);
    for n in LENS {
        let a = random_f32(&mut rng, n, 5.0);
        let b = random_f32(&mut rng, n, 5.0);
        let h: Vec<u8> = (0..n)
            .flat_map(|_| f16::from_f32(rng.f32() * 100.0).to_le_bytes())
            .collect();
        for isa in Isa::available() {
            let mut s = a.clone();
            add_with(isa, &mut s, &b);
            for k in 0..n {
                assert_eq!(s[k], a[k] + b[k], "{isa} add n={n}");
            }
            let (buf, r) = at_offset(&h, 1);
            let mut d = vec![0f32; n];
            f16_to_f32_with(isa, &buf[r], &mut d);
            for k in 0..n {
                let want = f16::from_le_bytes([h[2 * k], h[2 * k + 1]]).to_f32();
                assert_eq!(d[k].to_bits(), want.to_bits(), "{isa} f16 n={n} k={k}");
            }
        }
    }
    for nb in [1usize, 2, 7] {
        let q = random_q8(&mut rng, meki_kernels::formats::GgmlType::Q8_0, nb);
        let (want, _) = dequant_act(meki_kernels::formats::GgmlType::Q8_0, &q, 32 * nb);
        for isa in Isa::available() {
            let (buf, r) = at_offset(&q, 3);
            let mut d = vec![0f32; 32 * nb];
            q8_0_to_f32_with(isa, &buf[r], &mut d);
            for k in 0..32 * nb {
                // q * d is exact in f64 and rounded once in f32.
                assert_eq!(d[k], want[k] as f32, "{isa} q8_0 nb={nb} k={k}");
            }
        }
    }
}

fn exp_inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = random_f32(rng, n, 30.0);
    let special = [
        0.0, -0.0, 1e-8, -1e-8, 88.0, -88.0, -87.5, 87.5, -100.0, -103.0, 0.5, -20.0,
    ];
    for (v, s) in x.iter_mut().zip(special) {
        *v = s;
    }
    x
}

/// f32 -> f16 (the KV cache's stores) on every family: bit-equal to half's
/// software rounding (`from_f32_const`, round to nearest even) for ties at
/// f16 precision, f16 subnormals and underflow, overflow to infinity,
/// infinities, signed zeros, NaNs (quiet and signalling, with payloads) and
/// random values, at lengths that leave every tail.
#[test]
fn f32_to_f16_rounds_to_nearest_even() {
    let mut rng = Rng::new(12);
    let ulp = |e: i32| 2f32.powi(e);
    let specials = [
        0.0,
        -0.0,
        1.0 + ulp(-11),
        1.0 + 3.0 * ulp(-11),
        -(2.0 + ulp(-10)),
        65504.0,
        65519.0,
        65520.0,
        -70000.0,
        1e-5,
        6e-8,
        3e-8,
        2.9e-8,
        -5.96e-8,
        1e-9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc1_2345),
        f32::MIN_POSITIVE,
    ];
    for n in LENS.into_iter().chain([128, 200]) {
        let src: Vec<f32> = (0..n)
            .map(|k| {
                if k % 3 == 0 {
                    specials[(k / 3) % specials.len()]
                } else {
                    rng.f32() * 2f32.powi((k % 40) as i32 - 24)
                }
            })
            .collect();
        let want: Vec<u16> = src
            .iter()
            .map(|&v| f16::from_f32_const(v).to_bits())
            .collect();
        for isa in Isa::available() {
            let mut dst = vec![f16::from_bits(0x1234); n];
            f32_to_f16_with(isa, &src, &mut dst);
            for k in 0..n {
                assert_eq!(
                    dst[k].to_bits(),
                    want[k],
                    "{isa} n={n} k={k}: {} ({:#x})",
                    src[k],
                    src[k].to_bits()
                );
            }
        }
    }
}

#[test]
fn sigmoid_and_silu_match_f64() {
    let mut rng = Rng::new(3);
    for n in LENS {
        let x = exp_inputs(&mut rng, n);
        let u = random_f32(&mut rng, n, 2.0);
        for isa in Isa::available() {
            let mut s = x.clone();
            sigmoid_with(isa, &mut s);
            let mut o = vec![0f32; n];
            silu_mul_with(isa, &x, &u, &mut o);
            for k in 0..n {
                let sg = 1.0 / (1.0 + (-(x[k] as f64)).exp());
                // exp within 2 ulp, then an add and a divide: <= 8 u relative;
                // results below the normal f32 range (x < -87) may flush to 0.
                let tiny = f32::MIN_POSITIVE as f64;
                close(
                    s[k],
                    sg,
                    8.0 * U * sg.abs() + tiny,
                    &format!("{isa} sigmoid({})", x[k]),
                );
                let want = x[k] as f64 * sg * u[k] as f64;
                close(
                    o[k],
                    want,
                    10.0 * U * want.abs() + tiny,
                    &format!("{isa} silu({})", x[k]),
                );
            }
        }
    }
}

#[test]
fn softmax_matches_f64() {
    let mut rng = Rng::new(4);
    for n in LENS.into_iter().chain([4096]) {
        let mut x = random_f32(&mut rng, n, 20.0);
        if n > 4 {
            x[2] = -1000.0;
        }
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for isa in Isa::available() {
            let mut s = x.clone();
            softmax_with(isa, &mut s);
            for k in 0..n {
                let want = e[k] / sum;
                // x - max is rounded in f32 (absolute error u |x - max|, which
                // exp turns into that relative error); exp 2 ulp, a sum of n
                // terms, one divide and multiply; underflow below the normal range.
                let rel = (x[k] as f64 - max).abs() * U + (n as f64 + 10.0) * U;
                close(
                    s[k],
                    want,
                    rel * want + f32::MIN_POSITIVE as f64,
                    &format!("{isa} n={n} k={k}"),
                );
            }
        }
    }
}

fn f16_rows(rng: &mut Rng, n: usize, d: usize, stride: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * stride];
    for j in 0..n {
        for i in 0..d {
            let b = f16::from_f32(rng.f32() * 3.0).to_le_bytes();
            v[j * stride + 2 * i..j * stride + 2 * i + 2].copy_from_slice(&b);
        }
    }
    v
}

fn f16_at(v: &[u8], off: usize) -> f64 {
    f16::from_le_bytes([v[off], v[off + 1]]).to_f64()
}

#[test]
fn attention_loops_match_f64() {
    let mut rng = Rng::new(5);
    for d in [8usize, 64, 80, 128, 13] {
        for n in [1usize, 5, 67] {
            let stride = 2 * d + 6;
            let keys = f16_rows(&mut rng, n, d, stride);
            let q = random_f32(&mut rng, d, 1.0);
            let w = random_f32(&mut rng, n, 1.0);
            let scale = 1.0 / (d as f32).sqrt();
            for isa in Isa::available() {
                let (kb, kr) = at_offset(&keys, 1);
                let mut s = vec![0f32; n];
                attn_scores_with(isa, &q, &kb[kr.clone()], stride, scale, &mut s);
                for j in 0..n {
                    let (mut dot, mut mag) = (0f64, 0f64);
                    for i in 0..d {
                        let p = q[i] as f64 * f16_at(&keys, j * stride + 2 * i);
                        dot += p;
                        mag += p.abs();
                    }
                    let want = dot * scale as f64;
                    close(
                        s[j],
                        want,
                        (d as f64 + 2.0) * U * mag * scale as f64,
                        &format!("{isa} scores d={d} n={n}"),
                    );
                }
                let mut o = vec![0f32; d];
                attn_weighted_sum_with(isa, &w, &kb[kr], stride, &mut o);
                for i in 0..d {
                    let (mut acc, mut mag) = (0f64, 0f64);
                    for j in 0..n {
                        let p = w[j] as f64 * f16_at(&keys, j * stride + 2 * i);
                        acc += p;
                        mag += p.abs();
                    }
                    close(
                        o[i],
                        acc,
                        (n as f64 + 1.0) * U * mag,
                        &format!("{isa} wsum d={d} n={n}"),
                    );
                }
            }
        }
    }
}

#[test]
fn rope_matches_f64_rotation() {
    let mut rng = Rng::new(6);
    for (head_dim, n_rot) in [(64usize, 64usize), (128, 128), (128, 64), (24, 12), (16, 8)] {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let n_heads = 3;
            let x = random_f32(&mut rng, n_heads * head_dim, 2.0);
            let pos = 1234.0f32;
            let base = 1_000_000f32;
            let angles = rope_angles(pos, n_rot, base, 1.0);
            for isa in Isa::available() {
                let mut y = x.clone();
                rope_with(isa, &mut y, head_dim, &angles, mode);
                for h in 0..n_heads {
                    let xs = &x[h * head_dim..(h + 1) * head_dim];
                    let ys = &y[h * head_dim..(h + 1) * head_dim];
                    for i in 0..n_rot / 2 {
                        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
                        let (a, b) = match mode {
                            RopeMode::Normal => (2 * i, 2 * i + 1),
                            RopeMode::Neox => (i, i + n_rot / 2),
                        };
                        let (x0, x1) = (xs[a] as f64, xs[b] as f64);
                        let (c, s) = (theta.cos(), theta.sin());
                        // cos/sin rounded to f32 (u each), then <= 2 roundings.
                        let tol = 4.0 * U * (x0.abs() + x1.abs());
                        close(
                            ys[a],
                            x0 * c - x1 * s,
                            tol,
                            &format!("{isa} {mode:?} hd={head_dim} i={i}"),
                        );
                        close(
                            ys[b],
                            x0 * s + x1 * c,
                            tol,
                            &format!("{isa} {mode:?} hd={head_dim} i={i}"),
                        );
                    }
                    assert_eq!(
                        &ys[n_rot..],
                        &xs[n_rot..],
                        "{isa}: dims past n_rot must not change"
                    );
                }
            }
        }
    }
}
