//! matvec_multi: a group of products in one dispatch gives, for every job,
//! exactly (bit for bit) what `matvec_quantized` gives for it alone, for
//! mixed formats and shapes, 1 to 3 threads and every available family;
//! bad jobs are refused with an error.

mod common;
use common::*;
use meki_kernels::formats::GgmlType;
use meki_kernels::matmul::matvec_quantized;
use meki_kernels::multi::{matvec_multi, MatvecJob, MAX_JOBS};
use meki_kernels::{quantize_activations, vec_dot_type, Isa, ThreadPool};

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
                let mut jobs: Vec<MatvecJob> = group
                    .iter()
                    .zip(ys.iter_mut())
                    .enumerate()
                    .map(|(j, (&(ty, rows, cols), y))| MatvecJob {
                        w: &ws[j],
                        ty,
                        rows,
                        cols,
                        xq: &xq[j],
                        y,
                    })
                    .collect();
                matvec_multi(i, pool, &mut jobs).unwrap();
                for (j, (y, w)) in ys.iter().zip(&want).enumerate() {
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
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

fn q8_job<'a>(
    rows: usize,
    cols: usize,
    w: &'a [u8],
    xq: &'a [u8],
    y: &'a mut [f32],
) -> MatvecJob<'a> {
    MatvecJob {
        w,
        ty: GgmlType::Q8_0,
        rows,
        cols,
        xq,
        y,
    }
}

#[test]
fn multi_refuses_bad_jobs() {
    let mut rng = Rng::new(5);
    let pool = ThreadPool::new(2);
    let w = random_weights(&mut rng, GgmlType::Q8_0, 8);
    let xq = quantized(Isa::Scalar, GgmlType::Q8_0, &random_f32(&mut rng, 64, 1.0));
    let mut y = vec![0f32; 8];
    let run = |jobs: &mut [MatvecJob]| matvec_multi(Isa::Scalar, &pool, jobs);
    // Four rows of 64 are the 8 blocks given: fine. Five rows, 48 columns, a
    // short activation or a short output: refused.
    assert!(run(&mut [q8_job(4, 64, &w, &xq, &mut y)]).is_ok());
    assert!(run(&mut [q8_job(5, 64, &w, &xq, &mut y)]).is_err());
    assert!(run(&mut [q8_job(4, 48, &w, &xq, &mut y)]).is_err());
    assert!(run(&mut [q8_job(4, 64, &w, &xq[..34], &mut y)]).is_err());
    assert!(run(&mut [q8_job(4, 64, &w, &xq, &mut y[..3])]).is_err());
    let mut ys = vec![vec![0f32; 1]; MAX_JOBS + 1];
    let mut many: Vec<MatvecJob> = ys.iter_mut().map(|y| q8_job(1, 64, &w, &xq, y)).collect();
    assert!(run(&mut many).is_err());
}
