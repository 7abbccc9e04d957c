//! matvec / matmul: every element equals the single-row dot product of the
//! same kernel family on the same quantized activations (bit for bit), for
//! several thread counts, shapes that do not divide the row chunks, and
//! unaligned weight buffers; the active family (MEKI_KERNELS) is covered too.
#![allow(clippy::needless_range_loop)] // index loops read clearer in reference checks

mod common;
use common::*;
use meki_kernels::formats::GgmlType;
use meki_kernels::matmul::{matmul_with, matvec_quantized};
use meki_kernels::{
    isa, matmul, matvec, quantize_activations, vec_dot, vec_dot_type, Isa, ThreadPool,
};

const TYPES: [GgmlType; 11] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
];

fn expected(
    i: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    xs: &[f32],
    n_tok: usize,
) -> Vec<f32> {
    let act = vec_dot_type(ty).unwrap();
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut y = vec![0f32; n_tok * rows];
    for t in 0..n_tok {
        let x = &xs[t * cols..(t + 1) * cols];
        let xq: Vec<u8> = if act == GgmlType::F32 {
            bytemuck::cast_slice(x).to_vec()
        } else {
            let mut q = vec![0u8; act.row_bytes(cols as u64).unwrap() as usize];
            quantize_activations(i, act, x, &mut q).unwrap();
            q
        };
        for r in 0..rows {
            y[t * rows + r] = vec_dot(i, ty, cols, &w[r * rb..(r + 1) * rb], &xq).unwrap();
        }
    }
    y
}

#[test]
fn matmul_equals_row_dots() {
    let mut rng = Rng::new(21);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    for ty in TYPES {
        // nb = 9: k-quant prefill runs in pieces of K (4 super-blocks), the
        // last one partial.
        for (rows, nb) in [(1usize, 1usize), (17, 2), (40, 3), (5, 9)] {
            let cols = nb * ty.block_size().max(32);
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let w = random_weights(&mut rng, ty, rows * rb / ty.type_size());
            let (wbuf, wr) = at_offset(&w, 1);
            let w1 = &wbuf[wr];
            for n_tok in [1usize, 3, 70] {
                let xs = random_f32(&mut rng, n_tok * cols, 2.0);
                for i in Isa::available() {
                    let want = expected(i, ty, &w, rows, cols, &xs, n_tok);
                    for pool in &pools {
                        let mut y = vec![f32::NAN; n_tok * rows];
                        matmul_with(i, pool, w1, ty, rows, cols, n_tok, &xs, &mut y).unwrap();
                        for (k, (a, b)) in y.iter().zip(&want).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{ty} {i} rows={rows} cols={cols} tokens={n_tok} threads={} at {k}: {a} vs {b}",
                                pool.n_threads()
                            );
                        }
                    }
                }
                // The active family through the plain entry points.
                let want = expected(isa(), ty, &w, rows, cols, &xs, n_tok);
                let mut y = vec![0f32; n_tok * rows];
                if n_tok == 1 {
                    matvec(&pools[1], &w, ty, rows, cols, &xs, &mut y).unwrap();
                } else {
                    matmul(&pools[1], &w, ty, rows, cols, n_tok, &xs, &mut y).unwrap();
                }
                assert_eq!(y, want, "{ty} active {} tokens={n_tok}", isa());
            }
        }
    }
}

/// Decode (one token) of matrices large enough for several row chunks per
/// thread, with rows whose tiles prefetch the next tile / row while they run
/// (Q4_0/Q5_0/Q8_0 4-row tiles up to 16 KB, k-quant rows), row counts that
/// leave a partial last tile, and an unaligned buffer: bit-identical to the
/// row dots.
#[test]
fn decode_prefetching_tiles_equal_row_dots() {
    let mut rng = Rng::new(23);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    for ty in types {
        for (rows, cols) in [(203usize, 1024usize), (61, 3072), (13, 4352)] {
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let w = random_weights(&mut rng, ty, rows * rb / ty.type_size());
            let (wbuf, wr) = at_offset(&w, 3);
            let xs = random_f32(&mut rng, cols, 2.0);
            for i in Isa::available() {
                let want = expected(i, ty, &w, rows, cols, &xs, 1);
                for pool in &pools {
                    let mut y = vec![f32::NAN; rows];
                    matmul_with(i, pool, &wbuf[wr.clone()], ty, rows, cols, 1, &xs, &mut y)
                        .unwrap();
                    for (k, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{ty} {i} rows={rows} cols={cols} threads={} at {k}: {a} vs {b}",
                            pool.n_threads()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matvec_quantized_and_shape_errors() {
    let mut rng = Rng::new(4);
    let pool = ThreadPool::new(2);
    let (rows, cols) = (5, 64);
    let w = random_weights(&mut rng, GgmlType::Q4_0, rows * 2);
    let x = random_f32(&mut rng, cols, 1.0);
    let mut xq = vec![0u8; 68];
    quantize_activations(Isa::Scalar, GgmlType::Q8_0, &x, &mut xq).unwrap();
    let mut y = vec![0f32; rows];
    matvec_quantized(
        Isa::Scalar,
        &pool,
        &w,
        GgmlType::Q4_0,
        rows,
        cols,
        &xq,
        &mut y,
    )
    .unwrap();
    let want = expected(Isa::Scalar, GgmlType::Q4_0, &w, rows, cols, &x, 1);
    assert_eq!(y, want);
    assert!(matvec(&pool, &w, GgmlType::Q4_0, rows + 1, cols, &x, &mut y).is_err());
    assert!(matvec(&pool, &w, GgmlType::Q4_0, rows, 48, &x, &mut y).is_err());
    assert!(matvec(&pool, &w, GgmlType::Q4_0, rows, cols, &x[..32], &mut y).is_err());
    assert!(matvec(&pool, &w, GgmlType::Q4_0, rows, cols, &x, &mut y[..4]).is_err());
    assert!(matvec(&pool, &w, GgmlType::Q8K, 1, 256, &x, &mut y).is_err());
}

/// Float weights have no blocks: row lengths that are not a multiple of the
/// SIMD width take the scalar tail inside every tile shape.
#[test]
fn float_matmul_odd_lengths_equal_row_dots() {
    let mut rng = Rng::new(33);
    let pool = ThreadPool::new(2);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for (rows, cols) in [(7usize, 37usize), (18, 5), (9, 70)] {
            let w = random_weights(&mut rng, ty, rows * cols);
            for n_tok in [1usize, 2, 5, 9] {
                let xs = random_f32(&mut rng, n_tok * cols, 1.0);
                for i in Isa::available() {
                    let want = expected(i, ty, &w, rows, cols, &xs, n_tok);
                    let mut y = vec![f32::NAN; n_tok * rows];
                    matmul_with(i, &pool, &w, ty, rows, cols, n_tok, &xs, &mut y).unwrap();
                    for (k, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{ty} {i} rows={rows} cols={cols} tokens={n_tok} at {k}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
