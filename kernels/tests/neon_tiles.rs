//! NEON register tiles (`dot::gemm_fn` for `neon` and `neon-nodotprod`)
//! through the public matrix entry point, against the f64 reference built
//! from independently written dequantizers, with the error bounds of
//! `tests/dot.rs`, and against the scalar family: every tile shape and edge
//! (1..=9 rows, 1..=9 and 17 tokens), odd block counts, unaligned weights.
//! The bit-exact comparison with the one-row kernels is in the crate's unit
//! tests (`arm/neon_tests.rs`). Elsewhere than aarch64 this reports a skip.
#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use meki_kernels::dot::gemm_fn;
use meki_kernels::formats::GgmlType;
use meki_kernels::matmul::matmul_quantized;
use meki_kernels::{vec_dot, vec_dot_type, Isa, ThreadPool};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn neon_families() -> Vec<Isa> {
    let v: Vec<Isa> = [Isa::Neon, Isa::NeonNoDotprod]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    if v.is_empty() {
        eprintln!("skipping: no NEON family on this CPU");
    }
    v
}

/// `rows` x `toks` products of `ty` with `n` elements per row.
fn check(ty: GgmlType, n: usize, seed: u64) {
    let families = neon_families();
    if families.is_empty() {
        return;
    }
    let mut rng = Rng::new(seed);
    let act = vec_dot_type(ty).unwrap();
    let (max_rows, max_toks) = (9usize, 17usize);
    let rb = ty.row_bytes(n as u64).unwrap() as usize;
    let ab = act.row_bytes(n as u64).unwrap() as usize;
    let nb = n / ty.block_size();
    let w = random_weights(&mut rng, ty, max_rows * rb / ty.type_size());
    let x: Vec<u8> = if act == GgmlType::F32 {
        bytemuck::cast_slice(&random_f32(&mut rng, max_toks * n, 2.0)).to_vec()
    } else {
        (0..max_toks)
            .flat_map(|_| random_q8(&mut rng, act, nb))
            .collect()
    };
    // Quantized: per-block terms as in tests/dot.rs; floats: n + 1 roundings.
    let roundings = if act == GgmlType::F32 {
        n as f64 + 1.0
    } else {
        2.0 * nb as f64 + 3.0
    };
    let mut reference = vec![[0f64; 3]; max_toks * max_rows];
    for t in 0..max_toks {
        for r in 0..max_rows {
            let (wr, xr) = (&w[r * rb..(r + 1) * rb], &x[t * ab..(t + 1) * ab]);
            let (exact, mag) = exact_dot(ty, wr, xr, n);
            let scalar = vec_dot(Isa::Scalar, ty, n, wr, xr).unwrap() as f64;
            reference[t * max_rows + r] = [exact, 2.0 * roundings * U * mag, scalar];
        }
    }
    let (wbuf, wrange) = at_offset(&w, 1);
    let pool = ThreadPool::new(1);
    for isa in families {
        assert!(gemm_fn(isa, ty).is_some(), "{ty} {isa}: no tile");
        for rows in 1..=max_rows {
            for toks in (1..=9).chain([max_toks]) {
                let mut y = vec![f32::NAN; toks * rows];
                let ws = &wbuf[wrange.start..wrange.start + rows * rb];
                matmul_quantized(isa, &pool, ws, ty, rows, n, toks, &x[..toks * ab], &mut y)
                    .unwrap();
                for t in 0..toks {
                    for r in 0..rows {
                        let got = y[t * rows + r] as f64;
                        let [exact, bound, scalar] = reference[t * max_rows + r];
                        assert!(
                            (got - exact).abs() <= bound,
                            "{ty} {isa} n={n} {rows}x{toks} ({t},{r}): {got} exact {exact} bound {bound}"
                        );
                        assert!(
                            (got - scalar).abs() <= 2.0 * bound,
                            "{ty} {isa} n={n} {rows}x{toks} ({t},{r}): {got} scalar {scalar}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn q8_0_family_tiles_match_reference() {
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        for nb in [1usize, 3, 7] {
            check(ty, nb * 32, 100 + nb as u64 + ty as u64);
        }
    }
}

#[test]
fn k_quant_tiles_match_reference() {
    for ty in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        for nb in [1usize, 3] {
            check(ty, nb * 256, 200 + nb as u64 + ty as u64);
        }
    }
}

#[test]
fn float_tiles_match_reference() {
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for n in [5usize, 16, 37, 70] {
            check(ty, n, 300 + n as u64 + ty as u64);
        }
    }
}
