//! matvec_multi: a group of products in one dispatch gives, for every job,
//! exactly (bit for bit) what `matvec_quantized` (plain matrices) or
//! `repack::matmul` (repacked ones) gives for it alone, for mixed formats,
//! kinds and shapes, 1 to 3 threads and every available family; short rows
//! (the AVX2 8-row Q4_0 tiles) equal the family's single-row dot; bad jobs are
//! refused with an error.

mod common;
use common::*;
use meki_kernels::formats::GgmlType;
use meki_kernels::matmul::matvec_quantized;
use meki_kernels::multi::{matvec_multi, Job, MatvecJob, PackedJob, MAX_JOBS};
use meki_kernels::repack::{self, Packed};
use meki_kernels::{quantize_activations, vec_dot, vec_dot_type, Isa, ThreadPool};

fn quantized(i: Isa, ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let act = vec_dot_type(ty).unwrap();
    if act == GgmlType::F32 {
        return bytemuck::cast_slice(x).to_vec();
    }
    let mut q = vec![0u8; act.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_activations(i, act, x, &mut q).unwrap();
    q
}

#[test]
fn multi_equals_single_products() {
    let mut rng = Rng::new(77);
    // (type, rows, cols): a layer's FFN gate/up and a thin MeKi gate, a wide
    // down projection with a thin MeKi output, odd row counts.
    let groups: [&[(GgmlType, usize, usize)]; 3] = [
        &[
            (GgmlType::Q4_0, 96, 64),
            (GgmlType::Q4_0, 96, 64),
            (GgmlType::Q8_0, 32, 64),
        ],
        &[(GgmlType::Q6K, 37, 512), (GgmlType::Q8_0, 512, 32)],
        &[
            (GgmlType::Q4K, 70, 256),
            (GgmlType::F16, 5, 40),
            (GgmlType::F32, 33, 8),
            (GgmlType::Q5_0, 1, 32),
            (GgmlType::Q4_1, 19, 96),
        ],
    ];
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    for group in groups {
        let ws: Vec<Vec<u8>> = group
            .iter()
            .map(|&(ty, rows, cols)| {
                let rb = ty.row_bytes(cols as u64).unwrap() as usize;
                random_weights(&mut rng, ty, rows * rb / ty.type_size())
            })
            .collect();
        let xs: Vec<Vec<f32>> = group
            .iter()
            .map(|&(_, _, cols)| random_f32(&mut rng, cols, 2.0))
            .collect();
        for i in Isa::available() {
            let xq: Vec<Vec<u8>> = group
                .iter()
                .zip(&xs)
                .map(|(&(ty, _, _), x)| quantized(i, ty, x))
                .collect();
            let want: Vec<Vec<f32>> = group
                .iter()
                .enumerate()
                .map(|(j, &(ty, rows, cols))| {
                    let mut y = vec![0f32; rows];
                    matvec_quantized(i, &pools[0], &ws[j], ty, rows, cols, &xq[j], &mut y).unwrap();
                    y
                })
                .collect();
            for pool in &pools {
                let mut ys: Vec<Vec<f32>> = group
                    .iter()
                    .map(|&(_, rows, _)| vec![f32::NAN; rows])
                    .collect();
                let mut jobs: Vec<Job> = group
                    .iter()
                    .zip(ys.iter_mut())
                    .enumerate()
                    .map(|(j, (&(ty, rows, cols), y))| {
                        Job::from(MatvecJob {
                            w: &ws[j],
                            ty,
                            rows,
                            cols,
                            xq: &xq[j],
                            y,
                        })
                    })
                    .collect();
                matvec_multi(i, pool, &mut jobs).unwrap();
                for (j, (y, w)) in ys.iter().zip(&want).enumerate() {
                    assert_eq!(
                        bits(y),
                        bits(w),
                        "{i} job {j} ({}) threads={}",
                        group[j].0,
                        pool.n_threads()
                    );
                }
            }
        }
    }
}

fn q8_job<'a>(rows: usize, cols: usize, w: &'a [u8], xq: &'a [u8], y: &'a mut [f32]) -> Job<'a> {
    Job::from(MatvecJob {
        w,
        ty: GgmlType::Q8_0,
        rows,
        cols,
        xq,
        y,
    })
}

#[test]
fn multi_refuses_bad_jobs() {
    let mut rng = Rng::new(5);
    let pool = ThreadPool::new(2);
    let w = random_weights(&mut rng, GgmlType::Q8_0, 8);
    let xq = quantized(Isa::Scalar, GgmlType::Q8_0, &random_f32(&mut rng, 64, 1.0));
    let mut y = vec![0f32; 8];
    let run = |jobs: &mut [Job]| matvec_multi(Isa::Scalar, &pool, jobs);
    // Four rows of 64 are the 8 blocks given: fine. Five rows, 48 columns, a
    // short activation or a short output: refused.
    assert!(run(&mut [q8_job(4, 64, &w, &xq, &mut y)]).is_ok());
    assert!(run(&mut [q8_job(5, 64, &w, &xq, &mut y)]).is_err());
    assert!(run(&mut [q8_job(4, 48, &w, &xq, &mut y)]).is_err());
    assert!(run(&mut [q8_job(4, 64, &w, &xq[..34], &mut y)]).is_err());
    assert!(run(&mut [q8_job(4, 64, &w, &xq, &mut y[..3])]).is_err());
    let mut ys = vec![vec![0f32; 1]; MAX_JOBS + 1];
    let mut many: Vec<Job> = ys.iter_mut().map(|y| q8_job(1, 64, &w, &xq, y)).collect();
    assert!(run(&mut many).is_err());
}

/// Random Q4_0/Q8_0 rows; Q8_0 quants include -128 and 127.
fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let nb = cols / 32;
    let mut w = random_weights(rng, ty, rows * nb);
    if ty == GgmlType::Q8_0 {
        for (k, blk) in w.chunks_exact_mut(34).enumerate() {
            blk[2 + k % 32] = 0x80;
            blk[2 + (k + 7) % 32] = 0x7f;
        }
    }
    w
}

/// Plain and repacked jobs mixed in one group: each equals its product
/// alone (`matvec_quantized` / `repack::matmul`) bit for bit.
#[test]
fn multi_mixes_plain_and_packed_jobs() {
    let mut rng = Rng::new(31);
    // (packed?, type, rows, cols): a layer's repacked FFN gate/up with a
    // plain or repacked thin MeKi gate; repacked down with a thin output of
    // 4 blocks per row; a multi-chunk packed matrix, one group, odd blocks.
    let groups: [&[(bool, GgmlType, usize, usize)]; 4] = [
        &[
            (true, GgmlType::Q4_0, 96, 256),
            (true, GgmlType::Q4_0, 96, 256),
            (false, GgmlType::Q8_0, 40, 256),
        ],
        &[
            (true, GgmlType::Q4_0, 128, 384),
            (true, GgmlType::Q4_0, 256, 128),
        ],
        &[
            (true, GgmlType::Q8_0, 1032, 96),
            (false, GgmlType::Q4_0, 37, 64),
            (true, GgmlType::Q8_0, 8, 32),
            (false, GgmlType::Q6K, 9, 256),
        ],
        &[
            (true, GgmlType::Q4_0, 24, 224),
            (true, GgmlType::Q8_0, 16, 224),
        ],
    ];
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    for group in groups {
        let ws: Vec<Vec<u8>> = group
            .iter()
            .map(|&(_, ty, rows, cols)| random_matrix(&mut rng, ty, rows, cols))
            .collect();
        let packed: Vec<Option<Packed>> = group
            .iter()
            .zip(&ws)
            .map(|(&(p, ty, rows, cols), w)| p.then(|| Packed::new(ty, w, rows, cols).unwrap()))
            .collect();
        let xs: Vec<Vec<f32>> = group
            .iter()
            .map(|&(_, _, _, cols)| random_f32(&mut rng, cols, 2.0))
            .collect();
        for i in Isa::available() {
            // Each job's input in its kernel's format.
            let xq: Vec<Vec<u8>> = group
                .iter()
                .zip(&xs)
                .zip(&packed)
                .map(|((&(_, ty, _, _), x), p)| match p {
                    Some(p) => {
                        let mut a = Vec::new();
                        p.prepare_input(i, x, 1, &mut a).unwrap();
                        a
                    }
                    None => quantized(i, ty, x),
                })
                .collect();
            let want: Vec<Vec<f32>> = group
                .iter()
                .enumerate()
                .map(|(j, &(_, ty, rows, cols))| {
                    let mut y = vec![0f32; rows];
                    match &packed[j] {
                        Some(p) => repack::matmul(i, &pools[0], p, 1, &xq[j], &mut y).unwrap(),
                        None => {
                            matvec_quantized(i, &pools[0], &ws[j], ty, rows, cols, &xq[j], &mut y)
                                .unwrap()
                        }
                    }
                    y
                })
                .collect();
            for pool in &pools {
                let mut ys: Vec<Vec<f32>> = group
                    .iter()
                    .map(|&(_, _, rows, _)| vec![f32::NAN; rows])
                    .collect();
                let mut jobs: Vec<Job> = ys
                    .iter_mut()
                    .enumerate()
                    .map(|(j, y)| {
                        let (_, ty, rows, cols) = group[j];
                        match &packed[j] {
                            Some(p) => Job::from(PackedJob {
                                w: p,
                                acts: &xq[j],
                                y,
                            }),
                            None => Job::from(MatvecJob {
                                w: &ws[j],
                                ty,
                                rows,
                                cols,
                                xq: &xq[j],
                                y,
                            }),
                        }
                    })
                    .collect();
                matvec_multi(i, pool, &mut jobs).unwrap();
                for (j, (y, w)) in ys.iter().zip(&want).enumerate() {
                    assert_eq!(
                        bits(y),
                        bits(w),
                        "{i} job {j} ({:?}) threads={}",
                        group[j],
                        pool.n_threads()
                    );
                }
            }
        }
    }
}

/// Short rows (1..=8 blocks and one past the short tiles' limit; Q4_0 runs
/// on the AVX2 short-row tiles, Q8_0 on the plain ones), row counts that do
/// not fill an 8-row tile, unaligned weights and inputs:
/// every output equals the family's single-row dot bit for bit, and the
/// scalar dot within the rounding bound of `tests/dot.rs`.
#[test]
fn short_rows_equal_the_row_dot() {
    const U: f64 = f32::EPSILON as f64 / 2.0;
    let mut rng = Rng::new(8);
    let pools: Vec<ThreadPool> = [1, 3].into_iter().map(ThreadPool::new).collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        for nb in 1..=9 {
            let cols = nb * 32;
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            for rows in [1, 7, 8, 9, 16, 23, 40, 131] {
                let w = random_matrix(&mut rng, ty, rows, cols);
                let x = random_f32(&mut rng, cols, 3.0);
                for i in Isa::available() {
                    let xq = quantized(i, ty, &x);
                    for (wo, xo) in [(0, 0), (1, 3), (5, 2)] {
                        let (wbuf, wr) = at_offset(&w, wo);
                        let (xbuf, xr) = at_offset(&xq, xo);
                        for pool in &pools {
                            let mut y = vec![f32::NAN; rows];
                            let job = MatvecJob {
                                w: &wbuf[wr.clone()],
                                ty,
                                rows,
                                cols,
                                xq: &xbuf[xr.clone()],
                                y: &mut y,
                            };
                            matvec_multi(i, pool, &mut [job.into()]).unwrap();
                            for (r, &got) in y.iter().enumerate() {
                                let row = &w[r * rb..(r + 1) * rb];
                                let dot = vec_dot(i, ty, cols, row, &xq).unwrap();
                                assert_eq!(
                                    got.to_bits(),
                                    dot.to_bits(),
                                    "{i} {ty} nb={nb} rows={rows} row {r} offsets ({wo},{xo}) threads={}",
                                    pool.n_threads()
                                );
                                let scalar = vec_dot(Isa::Scalar, ty, cols, row, &xq).unwrap();
                                let (_, mag) = exact_dot(ty, row, &xq, cols);
                                let bound = 4.0 * (2.0 * nb as f64 + 3.0) * U * mag;
                                assert!(
                                    (got as f64 - scalar as f64).abs() <= bound,
                                    "{i} {ty} nb={nb} row {r}: {got} vs scalar {scalar}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Time per multiply-add of thin matrices (the MeKi projections: rows of
/// 2..8 blocks, or 128 rows) against a backbone-shaped one, in cache, one
/// thread: `matvec_quantized` (plain tiles) and `matvec_multi` (short-row
/// tiles where they apply), and the matrix repacked (`repack::matmul`).
/// `cargo test --release -p meki-kernels --test multi -- --ignored --nocapture`
#[test]
#[ignore]
fn thin_matrix_speed() {
    let mut rng = Rng::new(9);
    let pool = ThreadPool::new(1);
    let i = meki_kernels::isa();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
        for (rows, cols) in [(256, 1024), (1024, 128), (1024, 64), (384, 64), (128, 1024)] {
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let w = random_weights(&mut rng, ty, rows * rb / ty.type_size());
            let xq = quantized(i, ty, &random_f32(&mut rng, cols, 1.0));
            let mut y = vec![0f32; rows];
            let reps = (200_000_000 / (rows * cols)).max(10);
            let (mut single, mut multi) = (f64::MAX, f64::MAX);
            for _ in 0..7 {
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    matvec_quantized(i, &pool, &w, ty, rows, cols, &xq, &mut y).unwrap();
                }
                single = single.min(t0.elapsed().as_secs_f64() / reps as f64);
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    let job = MatvecJob {
                        w: &w,
                        ty,
                        rows,
                        cols,
                        xq: &xq,
                        y: &mut y,
                    };
                    matvec_multi(i, &pool, &mut [job.into()]).unwrap();
                }
                multi = multi.min(t0.elapsed().as_secs_f64() / reps as f64);
            }
            // The same matrix repacked (8-row groups, one lane per row).
            let p = Packed::new(ty, &w, rows, cols).unwrap();
            let mut acts = Vec::new();
            p.prepare_input(i, &random_f32(&mut rng, cols, 1.0), 1, &mut acts)
                .unwrap();
            let mut packed = f64::MAX;
            for _ in 0..7 {
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    repack::matmul(i, &pool, &p, 1, &acts, &mut y).unwrap();
                }
                packed = packed.min(t0.elapsed().as_secs_f64() / reps as f64);
            }
            let ps = |t: f64| t * 1e12 / (rows * cols) as f64;
            println!(
                "{ty} {rows}x{cols}: ps/MAC matvec_quantized {:.1}, matvec_multi {:.1}, repacked {:.1}",
                ps(single),
                ps(multi),
                ps(packed)
            );
        }
    }
}
