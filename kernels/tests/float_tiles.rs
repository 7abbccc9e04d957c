//! Float-weight (F32/F16/BF16) matrix products through every tile path:
//! one token (decode tiles), a few tokens (tiles converting as they load),
//! and from the blocking threshold on: F32/BF16 rows of at most 4096
//! elements converted to f32 by row groups (4 x 3 tiles), longer rows and F16
//! rows of any length through the cache-blocked product (blocks of 48 tokens
//! and 64 rows, rows walked in stretches of 512 elements, F16/BF16 stretches
//! converted to f32, or with `FloatPrefill::F16` F16 rows and f16 activations
//! converted in the tile, 4 x 3 tiles in assembly carrying their accumulators
//! from stretch to stretch).
//! Every element lies within the f32-accumulation bound of an f64
//! reference and equals, bit for bit, the single-row dot of the same family
//! (scalar, NEON), or on AVX2 a scalar emulation of the documented order of
//! its path, for the settings `auto` picks on AMD (`FloatDecode::Rows`,
//! `FloatPrefill::F16`) and on Intel CPUs (`Tiles`, `F32`): the row dots,
//! decode and batches below the blocking threshold run four 8-lane FMA
//! chains (block `b` into chain `b % 4`) with `Rows`, one chain per output
//! with `Tiles` (and with `Rows`, F16 rows longer than
//! `F16_DECODE_F32_ACTS_MAX_COLS` take the activations rounded to f16); the
//! prefill from the threshold on one chain per output (with `F16`, F16
//! weights times the activations rounded to f16).
//! (The settings are process-wide: the tests here take turns.)
#![allow(clippy::needless_range_loop)] // index loops read clearer in reference checks

mod common;
use common::*;
use half::f16;
use meki_kernels::formats::GgmlType;
use meki_kernels::matmul::{
    matmul_quantized, matmul_with, F16_DECODE_F32_ACTS_MAX_COLS, FLOAT_BLOCKED_MIN_TOKENS,
};
use meki_kernels::{
    set_float_decode, set_float_prefill, vec_dot, FloatDecode, FloatPrefill, Isa, ThreadPool,
};
use std::sync::Mutex;

/// Held by each test while it sets the process-wide float decode.
static DECODE: Mutex<()> = Mutex::new(());

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The AVX2 float product of one row in scalar f32 arithmetic: 8-lane
/// accumulators (`chains` of them, 8-element block `b` into chain
/// `b % chains`, each step one fused multiply-add), the chains combined
/// pairwise (`(a0 + a1) + (a2 + a3)`), the 8 lanes summed as the kernel's
/// horizontal sum does (halves, then pairs, then the last two), then the
/// `n % 8` tail in element order.
fn emulated_dot(w: &[f32], x: &[f32], chains: usize) -> f32 {
    let n = w.len();
    let mut acc = vec![[0f32; 8]; chains];
    for b in 0..n / 8 {
        for l in 0..8 {
            let a = &mut acc[b % chains][l];
            *a = w[8 * b + l].mul_add(x[8 * b + l], *a);
        }
    }
    let lanes: [f32; 8] = match chains {
        1 => acc[0],
        4 => std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l])),
        _ => unreachable!(),
    };
    let h: [f32; 4] = std::array::from_fn(|l| lanes[l] + lanes[l + 4]);
    let mut s = (h[0] + h[2]) + (h[1] + h[3]);
    for e in n / 8 * 8..n {
        s += w[e] * x[e];
    }
    s
}

/// `x`, rounded to f16 (nearest even, by `half`) when `round`.
fn rounded_to_f16_if(round: bool, x: &[f32]) -> Vec<f32> {
    match round {
        true => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        false => x.to_vec(),
    }
}

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
        // AVX2: the settings `auto` picks on AMD and on Intel CPUs.
        let runs = Isa::available().into_iter().flat_map(|isa| {
            let settings: &[(FloatDecode, FloatPrefill)] = match isa {
                Isa::Avx2 => &[
                    (FloatDecode::Rows, FloatPrefill::F16),
                    (FloatDecode::Tiles, FloatPrefill::F32),
                ],
                _ => &[(FloatDecode::Tiles, FloatPrefill::F32)],
            };
            settings.iter().map(move |&(d, p)| (isa, d, p))
        });
        for (isa, decode, prefill) in runs {
            set_float_decode(decode);
            set_float_prefill(prefill);
            let mut want = vec![0f32; n_tok * rows];
            // The AVX2 Rows decode of long F16 rows reads the activations
            // rounded to f16 (round to nearest even, here by `half`).
            let f16_acts = isa == Isa::Avx2
                && decode == FloatDecode::Rows
                && ty == GgmlType::F16
                && cols > F16_DECODE_F32_ACTS_MAX_COLS;
            for t in 0..n_tok {
                let xt = &xs[t * cols..(t + 1) * cols];
                let xr = rounded_to_f16_if(f16_acts, xt);
                let x: &[u8] = bytemuck::cast_slice(&xr);
                for r in 0..rows {
                    let wr = &w[r * rb..(r + 1) * rb];
                    // (`x` rounded or not: rounding is idempotent)
                    let d = vec_dot(isa, ty, cols, wr, x).unwrap();
                    let (exact, mag) = exact_dot(ty, wr, x, cols);
                    let bound = 2.0 * (cols as f64 + 1.0) * U * mag;
                    assert!(
                        (d as f64 - exact).abs() <= bound,
                        "{ty} {isa} cols={cols}: dot {d} exact {exact} bound {bound}"
                    );
                    want[t * rows + r] = d;
                    if isa == Isa::Avx2 {
                        let wf: Vec<f32> = dequant_weights(ty, wr, cols)
                            .iter()
                            .map(|&(a, _)| a as f32)
                            .collect();
                        let chains = if decode == FloatDecode::Rows { 4 } else { 1 };
                        let row_order = emulated_dot(&wf, &xr, chains);
                        assert_eq!(
                            d.to_bits(),
                            row_order.to_bits(),
                            "{ty} avx2 {decode:?} row dot order"
                        );
                        if n_tok >= FLOAT_BLOCKED_MIN_TOKENS {
                            // The prefill: f32 activations, or with
                            // `FloatPrefill::F16` (F16 weights) rounded to f16.
                            let x16 = prefill == FloatPrefill::F16 && ty == GgmlType::F16;
                            let xp = rounded_to_f16_if(x16, xt);
                            want[t * rows + r] = emulated_dot(&wf, &xp, 1);
                        }
                    }
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
                        "{ty} {isa} {decode:?} {prefill:?} rows={rows} cols={cols} tokens={n_tok} threads={} at {k}: {a} vs {b}",
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
    let _turn = DECODE.lock().unwrap_or_else(|e| e.into_inner());
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
/// scalar tail) and a longer one (5003), which takes the blocked product
/// and, in the AVX2 Rows decode of F16, f16 activations.
#[test]
fn float_products_equal_row_dots_long_rows() {
    let _turn = DECODE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(43);
    let pools: Vec<ThreadPool> = [1, 2].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        for cols in [4093, 4096, 5003] {
            check(&mut rng, &pools, ty, 37, cols, &[1, 5, 7, 9]);
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
    let _turn = DECODE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(47);
    let pools: Vec<ThreadPool> = [1, 2].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        check(&mut rng, &pools, ty, 267, 4700, &[6, 50, 97]);
    }
}
