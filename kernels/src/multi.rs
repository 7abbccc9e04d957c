//! Several matrix-vector products in one dispatch of the thread pool.
//!
//! A decode step runs a handful of products per layer whose inputs are ready
//! at the same time (Q, K, V; FFN gate and up with the MeKi gate; FFN down
//! with the MeKi output projection). Each dispatch costs a wake-up and a
//! barrier where the threads wait for the slowest; a small matrix (the MeKi
//! projections are `d x d_mem`) cannot even keep two threads busy. Putting
//! the row chunks of all of them in one queue pays one barrier for the group
//! and lets the small jobs fill the gaps of the large ones.
//!
//! A job is a matrix in its GGUF layout ([`MatvecJob`]) or a repacked one
//! ([`PackedJob`], [`crate::repack`]); both kinds mix in one group.

use crate::dispatch::Isa;
use crate::dot::{act_row_bytes, dot_fn, gemm_fn, DotFn, GemmFn, KernelError};
use crate::formats::GgmlType;
use crate::matmul::decode_chunk_rows;
use crate::pool::ThreadPool;
use crate::repack::{Packed, GROUP};

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

/// One product `y = W x` of a repacked matrix, its input prepared with
/// [`Packed::prepare_input`] (one token: [`Packed::act_row_bytes`] bytes).
pub struct PackedJob<'a> {
    pub w: &'a Packed,
    pub acts: &'a [u8],
    pub y: &'a mut [f32],
}

/// A product of a group, of either kind.
pub enum Job<'a> {
    Plain(MatvecJob<'a>),
    Packed(PackedJob<'a>),
}

impl<'a> From<MatvecJob<'a>> for Job<'a> {
    fn from(j: MatvecJob<'a>) -> Self {
        Job::Plain(j)
    }
}

impl<'a> From<PackedJob<'a>> for Job<'a> {
    fn from(j: PackedJob<'a>) -> Self {
        Job::Packed(j)
    }
}

/// The kernel of a checked job.
#[derive(Clone, Copy)]
enum Kernel {
    Plain {
        w: *const u8,
        cols: usize,
        row_bytes: usize,
        act_bytes: usize,
        dot: DotFn,
        gemm: Option<GemmFn>,
        #[cfg(target_arch = "x86_64")]
        short: Option<crate::x86::avx2_short::ShortGemv>,
    },
    Packed(*const Packed),
}

#[derive(Clone, Copy)]
struct Prepared {
    kernel: Kernel,
    x: *const u8,
    y: *mut f32,
    rows: usize,
    /// Weight bytes per output row (for the work item sizes).
    row_bytes: usize,
    /// Output rows per work item (a multiple of [`GROUP`] for packed jobs).
    chunk: usize,
}

/// Raw pointers of checked jobs, shared by the pool's threads.
struct Shared([Option<Prepared>; MAX_JOBS]);
// SAFETY: the pointers are read-only for the weights and inputs; every
// output row chunk of `y` is written by the one thread that takes that chunk
// (see `matvec_multi`).
unsafe impl Sync for Shared {}

/// Run every job of `jobs` (at most [`MAX_JOBS`]) as one dispatch of `pool`,
/// split by chunks of output rows. Results are bit-identical to
/// [`crate::matmul::matvec_quantized`] (plain jobs) and
/// [`crate::repack::matmul`] (packed jobs) of each job alone.
pub fn matvec_multi(isa: Isa, pool: &ThreadPool, jobs: &mut [Job<'_>]) -> Result<(), KernelError> {
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
        shared.0[i] = Some(match job {
            Job::Plain(job) => check_plain(isa, job)?,
            Job::Packed(job) => check_packed(job)?,
        });
    }
    let total_bytes: usize = shared
        .0
        .iter()
        .flatten()
        .map(|p| p.rows * p.row_bytes)
        .sum();
    for (i, p) in shared.0[..jobs.len()].iter_mut().flatten().enumerate() {
        // One item per job on one thread, else a multiple of 16 rows (so
        // of whole packed groups).
        p.chunk = decode_chunk_rows(p.rows, p.row_bytes, total_bytes, threads);
        first[i + 1] = first[i] + p.rows.div_ceil(p.chunk);
    }
    let n_jobs = jobs.len();
    let total = first[n_jobs];
    let shared = &shared;
    let pf = crate::repack::decode_prefetch_bytes(threads);
    pool.run_chunks(total, &|c| {
        let j = (0..n_jobs).rfind(|&j| first[j] <= c).unwrap_or(0);
        let Some(p) = shared.0[j] else { return };
        let r0 = (c - first[j]) * p.chunk;
        let r1 = (r0 + p.chunk).min(p.rows);
        run_rows(isa, &p, r0, r1, pf);
    });
    Ok(())
}

fn check_plain(isa: Isa, job: &mut MatvecJob<'_>) -> Result<Prepared, KernelError> {
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
    #[cfg(target_arch = "x86_64")]
    let short = match isa {
        Isa::Avx2 => crate::x86::avx2_short::short_gemv(ty, cols),
        _ => None,
    };
    Ok(Prepared {
        kernel: Kernel::Plain {
            w: job.w.as_ptr(),
            cols,
            row_bytes,
            act_bytes,
            dot,
            gemm: gemm_fn(isa, ty),
            #[cfg(target_arch = "x86_64")]
            short,
        },
        x: job.xq.as_ptr(),
        y: job.y.as_mut_ptr(),
        rows: job.rows,
        row_bytes,
        chunk: 0,
    })
}

fn check_packed(job: &mut PackedJob<'_>) -> Result<Prepared, KernelError> {
    let w = job.w;
    need("prepared activations", w.act_row_bytes(), job.acts.len())?;
    need("outputs", w.rows(), job.y.len())?;
    Ok(Prepared {
        kernel: Kernel::Packed(w),
        x: job.acts.as_ptr(),
        y: job.y.as_mut_ptr(),
        rows: w.rows(),
        row_bytes: w.group_bytes().div_ceil(GROUP),
        chunk: 0,
    })
}

/// Rows `r0..r1` of one job (`pf_bytes`: the packed decode kernels'
/// prefetch distance).
fn run_rows(isa: Isa, p: &Prepared, r0: usize, r1: usize, pf_bytes: usize) {
    match p.kernel {
        Kernel::Packed(w) => {
            // SAFETY: `check_packed` checked `acts` holds one prepared row
            // and `y` `rows` outputs, all alive for the call; `isa` is
            // available (checked in `matvec_multi`). Rows r0..r1 are one
            // chunk (whole groups: `chunk` and `rows` are multiples of
            // GROUP), taken by exactly one thread, so the writes to
            // `y[r0..r1]` are disjoint from every other thread's.
            unsafe { (*w).run_groups(isa, r0 / GROUP, r1 / GROUP, p.x, 1, p.y, p.rows, pf_bytes) };
        }
        Kernel::Plain {
            w,
            cols,
            row_bytes,
            act_bytes,
            dot,
            gemm,
            #[cfg(target_arch = "x86_64")]
            short,
        } => {
            // SAFETY: `check_plain` checked that the kernel family is
            // available, that `cols` is a whole number of blocks, that `w`
            // holds `rows` rows of `row_bytes`, `x` one activation row of
            // `act_bytes` and `y` `rows` outputs, all alive for the call (and
            // `short_gemv` returned a kernel only for AVX2 and short rows).
            // Rows r0..r1 (<= rows) are one chunk, taken by exactly one
            // thread, so the writes to `y[r0..r1]` are disjoint from every
            // other thread's.
            unsafe {
                let w = w.add(r0 * row_bytes);
                #[cfg(target_arch = "x86_64")]
                if let Some(short) = short {
                    short(cols, w, row_bytes, r1 - r0, p.x, p.y.add(r0));
                    return;
                }
                if let Some(gemm) = gemm {
                    gemm(cols, w, row_bytes, r1 - r0, p.x, 0, 1, p.y.add(r0), 0);
                    return;
                }
                let xr = std::slice::from_raw_parts(p.x, act_bytes);
                for r in r0..r1 {
                    let wr = std::slice::from_raw_parts(w.add((r - r0) * row_bytes), row_bytes);
                    *p.y.add(r) = dot(cols, wr, xr);
                }
            }
        }
    }
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), KernelError> {
    if have < need {
        return Err(KernelError::BufferTooSmall { what, need, have });
    }
    Ok(())
}
