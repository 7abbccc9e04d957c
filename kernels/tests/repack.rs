//! Repacked Q4_0 and Q8_0 (8-row groups): the layout round-trips, and every
//! product (AVX2 kernel and the plain fallback, 1..3 threads, token counts
//! that do not fill a 4-token tile, odd block counts, one group and many)
//! equals the scalar reference (`dot_q4_0_q8_0` / `dot_q8_0_q8_0`) on the
//! original rows bit for bit.
#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use meki_kernels::formats::{GgmlType, QK};
use meki_kernels::repack::{self, Packed, GROUP};
use meki_kernels::{quantize_activations, vec_dot, Isa, ThreadPool};

/// Scalar reference: every (token, row) as the scalar single-row dot of the
/// original rows with the Q8_0 activations.
fn reference(ty: GgmlType, w: &[u8], rows: usize, cols: usize, xq: &[u8], n: usize) -> Vec<f32> {
    let rb = cols / QK * ty.type_size();
    let ab = cols / QK * 34;
    let mut y = vec![0f32; n * rows];
    for t in 0..n {
        for r in 0..rows {
            y[t * rows + r] = vec_dot(
                Isa::Scalar,
                ty,
                cols,
                &w[r * rb..(r + 1) * rb],
                &xq[t * ab..(t + 1) * ab],
            )
            .unwrap();
        }
    }
    y
}

/// Random rows; Q8_0 quants include -128 and 127 (extremes of the
/// unsigned/sign trick).
fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, nb: usize) -> Vec<u8> {
    let mut w: Vec<u8> = (0..rows)
        .flat_map(|_| random_weights(rng, ty, nb))
        .collect();
    if ty == GgmlType::Q8_0 {
        for (k, blk) in w.chunks_exact_mut(34).enumerate() {
            blk[2 + k % 32] = 0x80;
            blk[2 + (k + 7) % 32] = 0x7f;
        }
    }
    w
}

const TYPES: [GgmlType; 2] = [GgmlType::Q4_0, GgmlType::Q8_0];

#[test]
fn layout_round_trips() {
    let mut rng = Rng::new(5);
    for ty in TYPES {
        let bs = ty.type_size();
        for (rows, nb) in [(8, 1), (16, 3), (24, 7), (64, 32)] {
            let w = random_matrix(&mut rng, ty, rows, nb);
            let p = Packed::new(ty, &w, rows, nb * QK).unwrap();
            assert_eq!(p.n_bytes(), w.len());
            for r in 0..rows {
                assert_eq!(p.row(r), &w[r * nb * bs..(r + 1) * nb * bs], "{ty} row {r}");
            }
        }
    }
}

#[test]
fn piecewise_fill_equals_whole() {
    let mut rng = Rng::new(9);
    for ty in TYPES {
        let (rows, nb) = (40, 5);
        let rb = nb * ty.type_size();
        let w = random_matrix(&mut rng, ty, rows, nb);
        let whole = Packed::new(ty, &w, rows, nb * QK).unwrap();
        let mut p = Packed::zeroed(ty, rows, nb * QK).unwrap();
        for (r0, r1) in [(16, 40), (0, 8), (8, 16)] {
            p.fill(r0, &w[r0 * rb..r1 * rb]).unwrap();
        }
        for r in 0..rows {
            assert_eq!(p.row(r), whole.row(r), "{ty} row {r}");
        }
        // Not whole groups, past the end, a partial row: errors.
        assert!(p.fill(4, &w[..8 * rb]).is_err());
        assert!(p.fill(0, &w[..4 * rb]).is_err());
        assert!(p.fill(40, &w[..8 * rb]).is_err());
        assert!(p.fill(0, &w[..8 * rb - 1]).is_err());
    }
}

#[test]
fn bad_shapes_are_errors() {
    let w = vec![0u8; 9 * 18];
    assert!(Packed::new(GgmlType::Q4_0, &w, 9, 32).is_err(), "rows % 8");
    assert!(Packed::new(GgmlType::Q4_0, &w, 8, 33).is_err(), "cols % 32");
    assert!(Packed::new(GgmlType::Q4K, &w, 8, 256).is_err(), "type");
    assert!(
        Packed::new(GgmlType::Q4_0, &w[..100], 8, 32).is_err(),
        "short"
    );
    let mut acts = Vec::new();
    assert!(repack::prepare_acts(&[0u8; 33], 1, 32, &mut acts).is_err());
    assert!(!Packed::supported(Isa::Avx2, GgmlType::Q4_0, 12, 64));
    assert!(!Packed::supported(Isa::Scalar, GgmlType::Q4_0, 16, 64));
    if Isa::Avx2.is_available() {
        assert!(Packed::preferred(Isa::Avx2, GgmlType::Q4_0, 16, 64));
        assert!(Packed::supported(Isa::Avx2, GgmlType::Q8_0, 16, 64));
        assert!(!Packed::preferred(Isa::Avx2, GgmlType::Q8_0, 16, 64));
    }
}

#[test]
fn products_equal_scalar_reference() {
    let mut rng = Rng::new(77);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    let isas: Vec<Isa> = [Isa::Scalar, Isa::Avx2]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    // (rows, blocks per row, tokens): one group, odd block counts, token
    // counts of every 4-token tile remainder, more groups than chunks.
    let cases = [
        (8, 1, 1),
        (8, 3, 5),
        (16, 7, 2),
        (24, 5, 3),
        (40, 9, 7),
        (64, 32, 4),
        (128, 33, 13),
        (256, 4, 70),
        (1024, 2, 1),
    ];
    for (ty, &(rows, nb, n)) in TYPES
        .iter()
        .flat_map(|&ty| cases.iter().map(move |c| (ty, c)))
    {
        let cols = nb * QK;
        let w = random_matrix(&mut rng, ty, rows, nb);
        // Activations through the Q8_0 quantizer, plus a row of extreme
        // quants (for Q4_0 -128 included: the i16 sums must still be exact;
        // the quantizer never writes -128, which Q8_0's sign trick needs).
        let mut xq = Vec::new();
        for t in 0..n {
            if t == 1 {
                let mut b = random_q8(&mut rng, GgmlType::Q8_0, nb);
                for blk in b.chunks_exact_mut(34) {
                    for (k, q) in blk[2..].iter_mut().enumerate() {
                        let lowest = if ty == GgmlType::Q4_0 { 0x80 } else { 0x81 };
                        *q = if k % 3 == 0 { lowest } else { 0x7f };
                    }
                }
                xq.extend(b);
                continue;
            }
            let x = random_f32(&mut rng, cols, 3.0);
            let mut q = vec![0u8; nb * 34];
            quantize_activations(Isa::Scalar, GgmlType::Q8_0, &x, &mut q).unwrap();
            xq.extend(q);
        }
        let want = reference(ty, &w, rows, cols, &xq, n);
        let p = Packed::new(ty, &w, rows, cols).unwrap();
        let mut acts = Vec::new();
        repack::prepare_acts(&xq, n, cols, &mut acts).unwrap();
        for &isa in &isas {
            for pool in &pools {
                let mut y = vec![f32::NAN; n * rows];
                repack::matmul(isa, pool, &p, n, &acts, &mut y).unwrap();
                for i in 0..y.len() {
                    assert_eq!(
                        y[i].to_bits(),
                        want[i].to_bits(),
                        "{ty} {isa} {} threads, {rows}x{cols}, {n} tokens: token {} row {}: {} vs {}",
                        pool.n_threads(),
                        i / rows,
                        i % rows,
                        y[i],
                        want[i]
                    );
                }
            }
        }
    }
    assert_eq!(GROUP, 8);
}

#[test]
fn short_buffers_are_errors() {
    let mut rng = Rng::new(3);
    let w = random_matrix(&mut rng, GgmlType::Q4_0, 8, 2);
    let p = Packed::new(GgmlType::Q4_0, &w, 8, 64).unwrap();
    let pool = ThreadPool::new(1);
    let acts = vec![0u8; repack::act_row_bytes(64) * 2];
    let mut y = vec![0f32; 16];
    assert!(repack::matmul(Isa::Scalar, &pool, &p, 3, &acts, &mut y).is_err());
    assert!(repack::matmul(Isa::Scalar, &pool, &p, 2, &acts, &mut y[..15]).is_err());
    assert!(repack::matmul(Isa::Scalar, &pool, &p, 2, &acts, &mut y).is_ok());
}

#[test]
fn prepare_input_equals_quantize_then_prepare() {
    let mut rng = Rng::new(11);
    let isas: Vec<Isa> = [Isa::Scalar, Isa::Avx2]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    for ty in TYPES {
        let (rows, nb, n) = (16, 5, 3);
        let cols = nb * QK;
        let p = Packed::new(ty, &random_matrix(&mut rng, ty, rows, nb), rows, cols).unwrap();
        assert_eq!(p.act_kind(), GgmlType::Q8_0);
        assert_eq!(p.act_row_bytes(), repack::act_row_bytes(cols));
        assert_eq!(p.n_groups(), rows / GROUP);
        assert_eq!(p.group_bytes() * p.n_groups(), p.n_bytes());
        let x = random_f32(&mut rng, n * cols, 2.0);
        let mut xq = vec![0u8; n * nb * 34];
        for (xr, q) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb * 34)) {
            quantize_activations(Isa::Scalar, GgmlType::Q8_0, xr, q).unwrap();
        }
        let mut want = Vec::new();
        repack::prepare_acts(&xq, n, cols, &mut want).unwrap();
        for &isa in &isas {
            let mut got = vec![7u8; 3];
            p.prepare_input(isa, &x, n, &mut got).unwrap();
            assert_eq!(got, want, "{ty} {isa}");
        }
        let mut out = vec![0u8; n * p.act_row_bytes()];
        assert!(p.prepare_rows(Isa::Scalar, &x[..cols], &mut out).is_err());
        assert!(p.prepare_rows(Isa::Scalar, &x, &mut out[1..]).is_err());
    }
}
