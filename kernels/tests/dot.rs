//! Dot products: every kernel family against an f64 reference computed from
//! independently written dequantizers, and every SIMD family against scalar.
//!
//! Error bound: each kernel forms the same per-block terms (exact i32 sums
//! times f32 scales, at most 3 roundings each) and adds them in f32 in some
//! order, so |result - exact| <= (terms + 3) * 2^-24 * sum|terms| where
//! `terms` <= 2 * blocks. We check against 2x that (u = 2^-24 is the unit
//! roundoff; the factor 2 covers the 1+O(u) factors the first-order bound drops).
#![allow(clippy::needless_range_loop)] // index loops read clearer in reference checks

mod common;
use common::*;
use meki_kernels::formats::GgmlType;
use meki_kernels::{dot, vec_dot, vec_dot_type, Isa};

const QTYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];
const U: f64 = 1.0 / (1u64 << 24) as f64;

fn check_quant(ty: GgmlType, nb: usize, seed: u64, via_quantizer: bool) {
    let mut rng = Rng::new(seed);
    let n = nb * ty.block_size();
    let act = vec_dot_type(ty).unwrap();
    let w = random_weights(&mut rng, ty, nb);
    let x = if via_quantizer {
        let xf = random_f32(&mut rng, n, 3.0);
        let mut q = vec![0u8; act.row_bytes(n as u64).unwrap() as usize];
        meki_kernels::quantize_activations(Isa::Scalar, act, &xf, &mut q).unwrap();
        q
    } else {
        random_q8(&mut rng, act, nb)
    };
    let (exact, mag) = exact_dot(ty, &w, &x, n);
    let terms = (2 * nb) as f64;
    let bound = 2.0 * (terms + 3.0) * U * mag;
    let scalar = vec_dot(Isa::Scalar, ty, n, &w, &x).unwrap();
    assert!(
        (scalar as f64 - exact).abs() <= bound,
        "{ty} nb={nb} scalar {scalar} exact {exact} bound {bound}"
    );
    for isa in Isa::available() {
        for (wo, xo) in [(0, 0), (1, 3), (3, 1), (5, 2)] {
            let (wbuf, wr) = at_offset(&w, wo);
            let (xbuf, xr) = at_offset(&x, xo);
            let r = vec_dot(isa, ty, n, &wbuf[wr], &xbuf[xr]).unwrap();
            assert!(
                (r as f64 - exact).abs() <= bound,
                "{ty} {isa} nb={nb} offsets ({wo},{xo}): {r} exact {exact} bound {bound}"
            );
            assert!(
                (r as f64 - scalar as f64).abs() <= 2.0 * bound,
                "{ty} {isa} nb={nb}: {r} vs scalar {scalar}"
            );
        }
    }
}

#[test]
fn quantized_dots_match_reference() {
    for ty in QTYPES {
        for (k, nb) in [1usize, 2, 3, 7, 16, 33].into_iter().enumerate() {
            check_quant(ty, nb, 1000 + k as u64 * 17 + ty as u64, false);
            check_quant(ty, nb, 5000 + k as u64 * 31 + ty as u64, true);
        }
    }
}

/// Both NEON variants compute identical per-group integer sums and the same
/// float operations, so they must agree bit for bit.
#[test]
fn neon_variants_agree_exactly() {
    if !Isa::Neon.is_available() || !Isa::NeonNoDotprod.is_available() {
        eprintln!("skipping: this CPU does not run both NEON variants");
        return;
    }
    let mut rng = Rng::new(7);
    for ty in QTYPES {
        for nb in [1usize, 5, 12] {
            let n = nb * ty.block_size();
            let w = random_weights(&mut rng, ty, nb);
            let x = random_q8(&mut rng, vec_dot_type(ty).unwrap(), nb);
            let a = vec_dot(Isa::Neon, ty, n, &w, &x).unwrap();
            let b = vec_dot(Isa::NeonNoDotprod, ty, n, &w, &x).unwrap();
            assert_eq!(a.to_bits(), b.to_bits(), "{ty} nb={nb}: {a} vs {b}");
        }
    }
}

/// Q8_0 weights may hold -128 (ggml files from other quantizers can); the
/// kernels must still be exact.
#[test]
fn q8_0_weight_minus_128() {
    let mut rng = Rng::new(99);
    let nb = 4;
    let mut w = random_weights(&mut rng, GgmlType::Q8_0, nb);
    for b in w.chunks_exact_mut(34) {
        b[2..].iter_mut().for_each(|q| *q = 0x80);
    }
    let x = random_q8(&mut rng, GgmlType::Q8_0, nb);
    let (exact, mag) = exact_dot(GgmlType::Q8_0, &w, &x, nb * 32);
    for isa in Isa::available() {
        let r = vec_dot(isa, GgmlType::Q8_0, nb * 32, &w, &x).unwrap();
        assert!(
            (r as f64 - exact).abs() <= 2.0 * (2.0 * nb as f64 + 3.0) * U * mag,
            "{isa}: {r} vs {exact}"
        );
    }
}

#[test]
fn float_dots_match_reference() {
    let mut rng = Rng::new(3);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for n in [1usize, 7, 8, 15, 16, 31, 32, 33, 100, 1000, 4099] {
            let w = random_weights(&mut rng, ty, n);
            let xf = random_f32(&mut rng, n, 2.0);
            let x: &[u8] = bytemuck::cast_slice(&xf);
            let (exact, mag) = exact_dot(ty, &w, x, n);
            // Scalar accumulates in f64: one final rounding.
            let s = vec_dot(Isa::Scalar, ty, n, &w, x).unwrap();
            assert!(
                (s as f64 - exact).abs() <= exact.abs() * U + n as f64 * 1e-15 * mag,
                "{ty} n={n} scalar {s} exact {exact}"
            );
            // f32 accumulation in any order: at most n + 1 roundings.
            let bound = 2.0 * (n as f64 + 1.0) * U * mag;
            for isa in Isa::available() {
                for (wo, xo) in [(0, 0), (1, 2), (2, 1)] {
                    let (wbuf, wr) = at_offset(&w, wo);
                    let (xbuf, xr) = at_offset(x, xo);
                    let r = vec_dot(isa, ty, n, &wbuf[wr], &xbuf[xr]).unwrap();
                    assert!(
                        (r as f64 - exact).abs() <= bound,
                        "{ty} {isa} n={n}: {r} exact {exact} bound {bound}"
                    );
                }
            }
        }
    }
}

#[test]
fn checked_entry_rejects_bad_shapes() {
    let w = vec![0u8; 18 * 2];
    let x = vec![0u8; 34 * 2];
    assert!(matches!(
        vec_dot(Isa::Scalar, GgmlType::Q4_0, 48, &w, &x),
        Err(dot::KernelError::BadLength { .. })
    ));
    assert!(matches!(
        vec_dot(Isa::Scalar, GgmlType::Q4_0, 96, &w, &x),
        Err(dot::KernelError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        vec_dot(Isa::Scalar, GgmlType::Q8K, 256, &w, &x),
        Err(dot::KernelError::Unsupported(_))
    ));
    for isa in Isa::ALL {
        if !isa.is_available() {
            assert!(vec_dot(isa, GgmlType::Q4_0, 64, &w, &x).is_err());
        }
    }
}

/// The test-local f64 dequantizers agree with the `formats` reference
/// dequantizers (f32, so within a few roundings of |a| + |b|).
#[test]
fn test_dequantizers_agree_with_formats() {
    let mut rng = Rng::new(8);
    for ty in QTYPES {
        let nb = 3;
        let n = nb * ty.block_size();
        let w = random_weights(&mut rng, ty, nb);
        let mut y = vec![0f32; n];
        meki_kernels::formats::dequantize_row(ty, &w, &mut y).unwrap();
        for (k, &(a, b)) in dequant_weights(ty, &w, n).iter().enumerate() {
            let tol = 4.0 * U * (a.abs() + b.abs());
            assert!(
                (y[k] as f64 - (a - b)).abs() <= tol,
                "{ty} element {k}: {} vs {}",
                y[k],
                a - b
            );
        }
    }
}
