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
    isa, matmul, matvec, quantize_activations, set_float_decode, set_float_prefill, vec_dot,
    vec_dot_type, FloatDecode, FloatPrefill, Isa, ThreadPool,
};

/// Float products equal the row dots at every token count with the `Tiles`
/// decode and the `F32` prefill; with `Rows` the decode and prefill orders
/// differ by design, and with the `F16` prefill its activations are rounded
/// to f16 (float_tiles.rs checks each against its own order). Every test
/// here sets the same values, so the process-wide settings never race.
fn row_dot_settings() {
    set_float_decode(FloatDecode::Tiles);
    set_float_prefill(FloatPrefill::F32);
}

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
    row_dot_settings();
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
    row_dot_settings();
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
    row_dot_settings();
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
    // Rows of no columns: a result or an error, never a panic (the decode
    // rows size their prefetch distance by the row's bytes).
    for ty in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0, GgmlType::F16] {
        for i in [Isa::Scalar, isa()] {
            let mut y = vec![1f32; 3];
            if matmul_with(i, &pool, &[], ty, 3, 0, 1, &[], &mut y).is_ok() {
                assert_eq!(y, [0.0; 3], "{ty:?} {i:?}: an empty dot is 0");
            }
        }
    }
}

/// Float weights have no blocks: row lengths that are not a multiple of the
/// SIMD width take the scalar tail inside every tile shape.
#[test]
fn float_matmul_odd_lengths_equal_row_dots() {
    row_dot_settings();
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

/// The AVX2 Q4_K / Q5_K row kernels' arithmetic, lane by lane, in plain
/// code: per super-block the exact integer sum of lane `l` (quants `4l..4l+4`
/// of every 32-quant sub-block times its scale) and of lane `q < 4` (mins
/// `2q`, `2q+1` times their 32-quant activation sums), both FMAed into lane
/// `l` of an f32 accumulator (`d * d_y`, then `-(dmin * d_y)`), and the
/// accumulator summed as `hsum_ps` does. Pins the results of those kernels
/// bit for bit (decode and prefill, any tile), whatever their instructions.
fn q45_k_lane_model(ty: GgmlType, w: &[u8], x: &[u8], nb: usize) -> f32 {
    use meki_kernels::formats::{BlockQ4K, BlockQ5K};
    use meki_kernels::scalar::dot::{scale_min_k4, unpack_q4_k, unpack_q5_k};
    let (wbs, xbs) = (ty.type_size(), 292);
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let (wb, xb) = (&w[i * wbs..(i + 1) * wbs], &x[i * xbs..(i + 1) * xbs]);
        let f16_at = |o: usize| half::f16::from_le_bytes([wb[o], wb[o + 1]]).to_f32();
        let (d, dmin) = (f16_at(0), f16_at(2));
        let scales: [u8; 12] = wb[4..16].try_into().unwrap();
        let q: Vec<i32> = if ty == GgmlType::Q4K {
            unpack_q4_k(&bytemuck::pod_read_unaligned::<BlockQ4K>(wb))
                .iter()
                .map(|&v| v as i32)
                .collect()
        } else {
            unpack_q5_k(&bytemuck::pod_read_unaligned::<BlockQ5K>(wb))
                .iter()
                .map(|&v| v as i32)
                .collect()
        };
        let dy = f32::from_le_bytes(xb[..4].try_into().unwrap());
        let y = |e: usize| xb[4 + e] as i8 as i32;
        let bsum = |k: usize| i16::from_le_bytes([xb[260 + 2 * k], xb[261 + 2 * k]]) as i32;
        let mut sumi = [0i32; 8];
        let mut summ = [0i32; 8];
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &scales);
            for e in 0..32 {
                sumi[e / 4] += sc as i32 * q[32 * j + e] * y(32 * j + e);
            }
            summ[j / 2] += m as i32 * (bsum(2 * j) + bsum(2 * j + 1));
        }
        for l in 0..8 {
            acc[l] = (d * dy).mul_add(sumi[l] as f32, acc[l]);
            acc[l] = (-(dmin * dy)).mul_add(summ[l] as f32, acc[l]);
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// AVX2 Q4_K and Q5_K (the row kernels, every token tile of decode and
/// prefill, K-pieces, one and several threads, unaligned weights) equal
/// [`q45_k_lane_model`] bit for bit, on random blocks, blocks of all-63
/// scales and mins with all-15 quants, and extreme activations.
#[test]
fn avx2_k4_rows_equal_lane_model() {
    row_dot_settings();
    if !Isa::Avx2.is_available() {
        eprintln!("skipped: no AVX2");
        return;
    }
    let mut rng = Rng::new(45);
    let pools: Vec<ThreadPool> = [1, 2].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::Q4K, GgmlType::Q5K] {
        for (rows, nb) in [(3usize, 1usize), (5, 3), (4, 9), (2, 14)] {
            let cols = nb * 256;
            let rb = nb * ty.type_size();
            let mut w = random_weights(&mut rng, ty, rows * nb);
            for blk in w.chunks_exact_mut(ty.type_size()).step_by(3) {
                blk[4..].fill(0xFF);
            }
            let (wbuf, wr) = at_offset(&w, 5);
            for n_tok in [1usize, 2, 7, 8, 9, 17] {
                let mut xs = random_f32(&mut rng, n_tok * cols, 2.0);
                if n_tok > 1 {
                    // Token 1: -max and +max, quantized to -128 and 127.
                    for (e, v) in xs[cols..2 * cols].iter_mut().enumerate() {
                        *v = if (e / 32) % 3 == 1 { 1.0 } else { -1.0 };
                    }
                }
                let ab = nb * 292;
                let mut xq = vec![0u8; n_tok * ab];
                for (x, q) in xs.chunks_exact(cols).zip(xq.chunks_exact_mut(ab)) {
                    quantize_activations(Isa::Avx2, GgmlType::Q8K, x, q).unwrap();
                }
                let want: Vec<f32> = (0..n_tok * rows)
                    .map(|k| {
                        let (t, r) = (k / rows, k % rows);
                        let xr = &xq[t * ab..(t + 1) * ab];
                        q45_k_lane_model(ty, &w[r * rb..(r + 1) * rb], xr, nb)
                    })
                    .collect();
                for pool in &pools {
                    let mut y = vec![f32::NAN; n_tok * rows];
                    matmul_with(
                        Isa::Avx2,
                        pool,
                        &wbuf[wr.clone()],
                        ty,
                        rows,
                        cols,
                        n_tok,
                        &xs,
                        &mut y,
                    )
                    .unwrap();
                    assert_eq!(bits(&y), bits(&want), "{ty} {rows}x{cols} {n_tok} tokens");
                }
                let d = vec_dot(Isa::Avx2, ty, cols, &w[..rb], &xq[..ab]).unwrap();
                assert_eq!(d.to_bits(), want[0].to_bits(), "{ty} vec_dot {rows}x{cols}");
            }
        }
    }
}
