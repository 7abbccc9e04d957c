//! Float-weight (F32/F16/BF16) matrix products through every tile path:
//! one token (decode tiles), a few tokens (tiles converting as they load),
//! and from the blocking threshold on: F32/BF16 rows of at most 4096
//! elements converted to f32 by row groups (4 x 3 tiles), longer rows and F16
//! rows of any length through the cache-blocked product (blocks of 48 tokens
//! and 64 rows, rows walked in stretches of 512 elements, F16/BF16 stretches
//! converted to f32, 4 x 3 tiles in assembly carrying their accumulators from
//! stretch to stretch).
//! Every element equals the single-row dot of the same family bit for bit,
//! and lies within the f32-accumulation bound of an f64 reference.
#![allow(clippy::needless_range_loop)] // index loops read clearer in reference checks

mod common;
use common::*;
use meki_kernels::formats::GgmlType;
use meki_kernels::matmul::{matmul_quantized, matmul_with};
use meki_kernels::{vec_dot, Isa, ThreadPool};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Checks `matmul_with` (and `matmul_quantized` on the same f32 bytes) for
/// one shape against the row dots (bits) and the f64 reference (bound).
fn check(
    rng: &mut Rng,
    pools: &[ThreadPool],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    toks: &[usize],
) {
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let w = random_weights(rng, ty, rows * cols);
    // Odd offsets: rows start at unaligned addresses.
    let (wbuf, wr) = at_offset(&w, 3);
    let w1 = &wbuf[wr];
    for &n_tok in toks {
        let xs = random_f32(rng, n_tok * cols, 2.0);
        for isa in Isa::available() {
            let mut want = vec![0f32; n_tok * rows];
            for t in 0..n_tok {
                let x: &[u8] = bytemuck::cast_slice(&xs[t * cols..(t + 1) * cols]);
                for r in 0..rows {
                    let wr = &w[r * rb..(r + 1) * rb];
                    let d = vec_dot(isa, ty, cols, wr, x).unwrap();
                    let (exact, mag) = exact_dot(ty, wr, x, cols);
                    let bound = 2.0 * (cols as f64 + 1.0) * U * mag;
                    assert!(
                        (d as f64 - exact).abs() <= bound,
                        "{ty} {isa} cols={cols}: dot {d} exact {exact} bound {bound}"
                    );
                    want[t * rows + r] = d;
                }
            }
            for pool in pools {
                let mut y = vec![f32::NAN; n_tok * rows];
                matmul_with(isa, pool, w1, ty, rows, cols, n_tok, &xs, &mut y).unwrap();
                let mut yq = vec![f32::NAN; n_tok * rows];
                let xb: &[u8] = bytemuck::cast_slice(&xs);
                let (xbuf, xr) = at_offset(xb, 1);
                matmul_quantized(isa, pool, w1, ty, rows, cols, n_tok, &xbuf[xr], &mut yq).unwrap();
                assert_eq!(bits(&y), bits(&yq), "{ty} {isa} unaligned activations");
                for (k, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{ty} {isa} rows={rows} cols={cols} tokens={n_tok} threads={} at {k}: {a} vs {b}",
                        pool.n_threads()
                    );
                }
            }
        }
    }
}

/// Short rows: every token count around the conversion threshold (5, 6, 7),
/// 1 and 2 tokens, token counts leaving 1 or 2 tokens after the 3-token
/// groups, and row counts leaving 1-3 rows after the 4-row tiles.
#[test]
fn float_products_equal_row_dots_short_rows() {
    let mut rng = Rng::new(41);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for (rows, cols) in [(1usize, 1usize), (5, 8), (18, 37), (33, 64), (47, 131)] {
            check(
                &mut rng,
                &pools,
                ty,
                rows,
                cols,
                &[1, 2, 5, 6, 7, 8, 10, 31],
            );
        }
    }
}

/// Long rows: the longest that are converted whole (4096, and 4093 with a
/// scalar tail) and a longer one (5003), which takes the blocked product.
#[test]
fn float_products_equal_row_dots_long_rows() {
    let mut rng = Rng::new(43);
    let pools: Vec<ThreadPool> = [1, 2].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        for cols in [4093, 4096, 5003] {
            check(&mut rng, &pools, ty, 37, cols, &[1, 7, 9]);
        }
    }
}

/// The blocked product's edges: work items of two 64-row blocks and an odd
/// remainder (1-row tiles), tokens past one and two 48-token blocks with
/// partial 3-token groups, and rows of nine full stretches, a partial one
/// and a 4-element tail. (x86 only: the blocked product is the AVX2 one, and
/// the shape is slow under the emulator that runs the aarch64 tests.)
#[cfg(target_arch = "x86_64")]
#[test]
fn float_products_equal_row_dots_across_blocks() {
    let mut rng = Rng::new(47);
    let pools: Vec<ThreadPool> = [1, 2].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        check(&mut rng, &pools, ty, 267, 4700, &[6, 50, 97]);
    }
}
