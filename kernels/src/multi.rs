//! Several matrix-vector products in one dispatch of the thread pool.
//!
//! A decode step runs a handful of products per layer whose inputs are ready
//! at the same time (Q, K, V; FFN gate and up with the MeKi gate; FFN down
//! with the MeKi output projection). Each dispatch costs a wake-up and a
//! barrier where the threads wait for the slowest; a small matrix (the MeKi
//! projections are `d x d_mem`) cannot even keep two threads busy. Putting
//! the row chunks of all of them in one queue pays one barrier for the group
//! and lets the small jobs fill the gaps of the large ones.

use crate::dispatch::Isa;
use crate::dot::{act_row_bytes, dot_fn, gemm_fn, DotFn, GemmFn, KernelError};
use crate::formats::GgmlType;
use crate::matmul::chunk_rows;
use crate::pool::ThreadPool;

/// Most products one call can take (a layer needs at most three).
pub const MAX_JOBS: usize = 8;

/// One product `y = W x` of a group: the weight matrix (`rows x cols` of
/// `ty`, raw GGUF bytes) and its activation row already quantized with
/// [`crate::quantize_activations`] to [`crate::vec_dot_type`]`(ty)` (f32
/// bytes for float weights).
pub struct MatvecJob<'a> {
    pub w: &'a [u8],
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub xq: &'a [u8],
    pub y: &'a mut [f32],
}

#[derive(Clone, Copy)]
struct Prepared {
    w: *const u8,
    x: *const u8,
    y: *mut f32,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    act_bytes: usize,
    chunk: usize,
    dot: DotFn,
    gemm: Option<GemmFn>,
}

/// Raw pointers of checked jobs, shared by the pool's threads.
struct Shared([Option<Prepared>; MAX_JOBS]);
// SAFETY: the pointers are read-only for `w` and `x`; every output row chunk
// of `y` is written by the one thread that takes that chunk (see `matvec_multi`).
unsafe impl Sync for Shared {}

/// Run every job of `jobs` (at most [`MAX_JOBS`]) as one dispatch of `pool`,
/// split by chunks of output rows. Results are bit-identical to
/// [`crate::matmul::matvec_quantized`] of each job alone.
pub fn matvec_multi(
    isa: Isa,
    pool: &ThreadPool,
    jobs: &mut [MatvecJob<'_>],
) -> Result<(), KernelError> {
    if !isa.is_available() {
        return Err(KernelError::IsaUnavailable(isa));
    }
    if jobs.len() > MAX_JOBS {
        return Err(KernelError::BufferTooSmall {
            what: "job list (MAX_JOBS)",
            need: jobs.len(),
            have: MAX_JOBS,
        });
    }
    let threads = pool.n_threads();
    let mut shared = Shared([None; MAX_JOBS]);
    // Chunk index where each job starts, and the total.
    let mut first = [0usize; MAX_JOBS + 1];
    for (i, job) in jobs.iter_mut().enumerate() {
        let ty = job.ty;
        let dot = dot_fn(isa, ty).ok_or(KernelError::Unsupported(ty))?;
        let cols = job.cols;
        let bad = || KernelError::BadLength { ty, n: cols };
        if !job.cols.is_multiple_of(ty.block_size()) {
            return Err(bad());
        }
        let row_bytes = ty.row_bytes(job.cols as u64).ok_or_else(bad)? as usize;
        let act_bytes = act_row_bytes(ty, job.cols).ok_or(KernelError::Unsupported(ty))?;
        let w_need = job.rows.checked_mul(row_bytes).ok_or_else(bad)?;
        need("weight matrix", w_need, job.w.len())?;
        need("quantized activations", act_bytes, job.xq.len())?;
        need("outputs", job.rows, job.y.len())?;
        // The same row chunks as a product alone (`matmul`).
        let chunk = chunk_rows(job.rows, row_bytes, threads);
        shared.0[i] = Some(Prepared {
            w: job.w.as_ptr(),
            x: job.xq.as_ptr(),
            y: job.y.as_mut_ptr(),
            rows: job.rows,
            cols: job.cols,
            row_bytes,
            act_bytes,
            chunk,
            dot,
            gemm: gemm_fn(isa, ty),
        });
        first[i + 1] = first[i] + job.rows.div_ceil(chunk);
    }
    let n_jobs = jobs.len();
    let total = first[n_jobs];
    let shared = &shared;
    pool.run_chunks(total, &|c| {
        let j = (0..n_jobs).rfind(|&j| first[j] <= c).unwrap_or(0);
        let Some(p) = shared.0[j] else { return };
        let r0 = (c - first[j]) * p.chunk;
        let r1 = (r0 + p.chunk).min(p.rows);
        run_rows(&p, r0, r1);
    });
    Ok(())
}

fn run_rows(p: &Prepared, r0: usize, r1: usize) {
    // SAFETY: `matvec_multi` checked that the kernel family is available,
    // that `cols` is a whole number of blocks, that `w` holds `rows` rows of
    // `row_bytes`, `x` one activation row of `act_bytes` and `y` `rows`
    // outputs, all alive for the call. Rows r0..r1 (<= rows) are one chunk,
    // taken by exactly one thread, so the writes to `y[r0..r1]` are disjoint
    // from every other thread's.
    unsafe {
        if let Some(gemm) = p.gemm {
            let w = p.w.add(r0 * p.row_bytes);
            gemm(p.cols, w, p.row_bytes, r1 - r0, p.x, 0, 1, p.y.add(r0), 0);
            return;
        }
        let xr = std::slice::from_raw_parts(p.x, p.act_bytes);
        for r in r0..r1 {
            let wr = std::slice::from_raw_parts(p.w.add(r * p.row_bytes), p.row_bytes);
            *p.y.add(r) = (p.dot)(p.cols, wr, xr);
        }
    }
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), KernelError> {
    if have < need {
        return Err(KernelError::BufferTooSmall { what, need, have });
    }
    Ok(())
}
