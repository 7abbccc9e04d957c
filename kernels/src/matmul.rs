//! Matrix-vector (decode) and matrix-matrix (prefill) products of a weight
//! matrix in any supported format with f32 activations, split across the
//! threads of a [`ThreadPool`] by chunks of output rows.
//!
//! Layouts: the weight matrix is `rows` rows of `cols` elements, each row
//! `ty.row_bytes(cols)` bytes (a GGUF tensor of shape `[cols, rows]`, any
//! alignment). Activations are row-major `n_tokens x cols`, outputs
//! `n_tokens x rows`: `y[t][r] = dot(w[r], x[t])`.
//!
//! Activations are first quantized to the weight type's [`vec_dot_type`]
//! (Q8_0 / Q8_1 / Q8_K; float weights use the f32 rows directly, except on
//! AVX2 the decode of long F16 rows, which rounds them to f16 itself (see
//! [`F16_DECODE_F32_ACTS_MAX_COLS`]), and the F16 prefill with
//! [`crate::FloatPrefill::F16`], whose activations are rounded to f16 once
//! per product).

use crate::dispatch::{isa, Isa};
use crate::dot::{
    act_row_bytes, dot_fn, gemm_fn, quantize_fn, vec_dot_type, DotFn, GemmFn, KernelError,
};
use crate::formats::GgmlType;
use crate::pool::ThreadPool;

/// Output rows per unit of work are a multiple of this (16 f32 = one cache
/// line of `y`, so threads never write the same line).
const ROW_CHUNK: usize = 16;
/// Weight bytes per unit of work at least (below that the shared counter and
/// the loop set-up cost more than the balance they buy).
const MIN_CHUNK_BYTES: usize = 32 << 10;
/// Tokens per call from which the AVX2 float-weight product runs over every
/// token at once in cache-sized blocks (below it converting weights to f32
/// once and the accumulator round trips are not amortized, and the tiles
/// converting as they load run).
pub const FLOAT_BLOCKED_MIN_TOKENS: usize = 6;
/// Longest F32/BF16 rows that the AVX2 prefill converts to f32 by row
/// groups and runs as 4 x 3 tiles over whole rows (measured faster than the
/// blocked product for these rows). Longer rows, and F16 rows of any length,
/// take the blocked product, which walks them in stretches.
pub(crate) const FLOAT_PACK_MAX_COLS: usize = 4096;
/// Longest F16 rows whose [`crate::FloatDecode::Rows`] product (decode,
/// AVX2) reads f32 activations. Longer rows read them rounded to f16 (round
/// to nearest even; ggml's activation type for F16 weights): the f32
/// activations of a 6144-element row (24 KiB) and the weight stream thrash
/// a 32 KiB L1, and the down projection of the 1.7B shape read 11-14 GB/s
/// instead of 22-28 (Zen 4, 1 thread; decode 1.2x faster end to end). For
/// shorter rows the f16 conversions cost more than they save (6144 x 2048:
/// 19 GB/s instead of 26).
pub const F16_DECODE_F32_ACTS_MAX_COLS: usize = 4096;
/// Rows per work item of the blocked float product are a multiple of this
/// (its row block).
pub(crate) const FLOAT_BLOCK_ROWS: usize = 64;

/// Whether the AVX2 float prefill of `toks` tokens over `ty` rows of `cols`
/// elements runs the blocked product (the kernel's dispatch and the work
/// item sizes both follow this).
pub(crate) fn float_blocked(ty: GgmlType, cols: usize, toks: usize) -> bool {
    toks >= FLOAT_BLOCKED_MIN_TOKENS && (ty == GgmlType::F16 || cols > FLOAT_PACK_MAX_COLS)
}
/// Work units per thread at least, for balance when threads run unevenly.
const CHUNKS_PER_THREAD: usize = 4;
/// Bytes of activations kept hot against a chunk of weight rows (prefill):
/// with the chunk's weights they should fit the L2 cache.
const TOKEN_TILE_BYTES: usize = 256 << 10;

/// A shared output pointer; each row chunk is written by exactly one thread.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: threads write disjoint elements (distinct row chunks), see users.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

#[derive(Clone, Copy)]
struct Plan {
    dot: DotFn,
    gemm: Option<GemmFn>,
    row_bytes: usize,
    act_bytes: usize,
    act: GgmlType,
    ty: GgmlType,
    /// The gemm kernel takes every token in one call (AVX2 float weights:
    /// it blocks for the caches itself).
    all_tokens: bool,
}

fn plan(isa: Isa, ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Result<Plan, KernelError> {
    if !isa.is_available() {
        return Err(KernelError::IsaUnavailable(isa));
    }
    let dot = dot_fn(isa, ty).ok_or(KernelError::Unsupported(ty))?;
    let act = vec_dot_type(ty).ok_or(KernelError::Unsupported(ty))?;
    if !cols.is_multiple_of(ty.block_size()) {
        return Err(KernelError::BadLength { ty, n: cols });
    }
    let row_bytes = ty
        .row_bytes(cols as u64)
        .ok_or(KernelError::BadLength { ty, n: cols })? as usize;
    let act_bytes = act_row_bytes(ty, cols).ok_or(KernelError::Unsupported(ty))?;
    let need = rows
        .checked_mul(row_bytes)
        .ok_or(KernelError::BadLength { ty, n: cols })?;
    if w.len() < need {
        return Err(KernelError::BufferTooSmall {
            what: "weight matrix",
            need,
            have: w.len(),
        });
    }
    Ok(Plan {
        dot,
        gemm: gemm_fn(isa, ty),
        row_bytes,
        act_bytes,
        act,
        ty,
        all_tokens: isa == Isa::Avx2 && act == GgmlType::F32,
    })
}

fn check(what: &'static str, need: usize, have: usize) -> Result<(), KernelError> {
    if have < need {
        return Err(KernelError::BufferTooSmall { what, need, have });
    }
    Ok(())
}

/// `y = W x` for one token, with the active kernel family ([`isa`]).
pub fn matvec(
    pool: &ThreadPool,
    w: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_with(isa(), pool, w, ty, rows, cols, 1, x, y)
}

/// `ys = xs W^T` for `n_tokens` tokens (`xs`: n_tokens x cols, `ys`:
/// n_tokens x rows), with the active kernel family.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    pool: &ThreadPool,
    w: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n_tokens: usize,
    xs: &[f32],
    ys: &mut [f32],
) -> Result<(), KernelError> {
    matmul_with(isa(), pool, w, ty, rows, cols, n_tokens, xs, ys)
}

/// [`matmul`] with an explicit kernel family (tests, benchmarks).
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    isa: Isa,
    pool: &ThreadPool,
    w: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n_tokens: usize,
    xs: &[f32],
    ys: &mut [f32],
) -> Result<(), KernelError> {
    let p = plan(isa, ty, w, rows, cols)?;
    check("activations", n_tokens * cols, xs.len())?;
    if p.act == GgmlType::F32 {
        let xb: &[u8] = bytemuck::cast_slice(&xs[..n_tokens * cols]);
        return matmul_quantized(isa, pool, w, ty, rows, cols, n_tokens, xb, ys);
    }
    let q = quantize_fn(isa, p.act).ok_or(KernelError::Unsupported(p.act))?;
    let mut xq = vec![0u8; n_tokens * p.act_bytes];
    if n_tokens == 1 {
        // SAFETY: `quantize_fn` returned a kernel of an available family; `x`
        // holds `cols` elements (a whole number of blocks, checked in
        // `plan`) and `xq` holds `act_bytes` bytes.
        unsafe { q(&xs[..cols], &mut xq) };
    } else {
        let out = SyncPtr(xq.as_mut_ptr() as *mut f32);
        let ab = p.act_bytes;
        pool.run_chunks(n_tokens, &|t| {
            let dst = out;
            // SAFETY: item `t` is run by exactly one thread, so its `ab`-byte
            // slice of `xq` is written by that thread alone; the kernel
            // contract holds as in the single-token case.
            unsafe {
                let row = std::slice::from_raw_parts_mut((dst.0 as *mut u8).add(t * ab), ab);
                q(&xs[t * cols..(t + 1) * cols], row);
            }
        });
    }
    matmul_quantized(isa, pool, w, ty, rows, cols, n_tokens, &xq, ys)
}

/// `ys = xs W^T` with activations already quantized with
/// [`crate::quantize_activations`] to [`vec_dot_type`]`(ty)` (`n_tokens` rows
/// of `act_row_bytes` each; for float weights, f32 bytes), e.g. to share one
/// quantization between the matrices that read the same input (Q/K/V,
/// gate/up).
#[allow(clippy::too_many_arguments)]
pub fn matmul_quantized(
    isa: Isa,
    pool: &ThreadPool,
    w: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n_tokens: usize,
    xq: &[u8],
    ys: &mut [f32],
) -> Result<(), KernelError> {
    let p = plan(isa, ty, w, rows, cols)?;
    check("quantized activations", n_tokens * p.act_bytes, xq.len())?;
    check("outputs", n_tokens * rows, ys.len())?;
    run_tiles(pool, &p, w, rows, cols, n_tokens, xq, ys);
    Ok(())
}

/// `y = W x` with an already quantized activation row `xq` (of
/// [`vec_dot_type`]`(ty)`; for float weights, f32 bytes), e.g. to share one
/// quantization between several matrices.
#[allow(clippy::too_many_arguments)]
pub fn matvec_quantized(
    isa: Isa,
    pool: &ThreadPool,
    w: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    xq: &[u8],
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_quantized(isa, pool, w, ty, rows, cols, 1, xq, y)
}

/// Rows per work item of one matrix of a group of products run as one
/// dispatch ([`crate::multi`]): items of about the same bytes in every
/// matrix of the group, sized for balance over the group's total bytes
/// (`CHUNKS_PER_THREAD` per thread), never below `MIN_CHUNK_BYTES`. A small
/// matrix (a MeKi projection next to the FFN) stays one item: split by its
/// own size it became a few tiny items, each paying a cold start.
fn group_chunk_rows(rows: usize, row_bytes: usize, total_bytes: usize, threads: usize) -> usize {
    let target = MIN_CHUNK_BYTES.max(total_bytes / (threads * CHUNKS_PER_THREAD).max(1));
    target
        .div_ceil(row_bytes.max(1))
        .next_multiple_of(ROW_CHUNK)
        .min(rows.next_multiple_of(ROW_CHUNK))
        .max(ROW_CHUNK)
}

/// Rows per work item of a one-token product of `total_bytes` of weights
/// (the matrix alone, or a decode group's): the whole matrix on one thread
/// (nothing to balance; the set-up per item is otherwise a measurable part
/// of a decode step), else [`group_chunk_rows`].
pub(crate) fn decode_chunk_rows(
    rows: usize,
    row_bytes: usize,
    total_bytes: usize,
    threads: usize,
) -> usize {
    if threads == 1 {
        rows.max(1)
    } else {
        group_chunk_rows(rows, row_bytes, total_bytes, threads)
    }
}

/// Rows per unit of work: a multiple of [`ROW_CHUNK`], at least
/// [`MIN_CHUNK_BYTES`] of weights, and at most a share that leaves every
/// thread [`CHUNKS_PER_THREAD`] units.
pub(crate) fn chunk_rows(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let by_bytes = MIN_CHUNK_BYTES.div_ceil(row_bytes.max(1));
    let by_balance = rows.div_ceil(threads * CHUNKS_PER_THREAD);
    by_bytes.min(by_balance).max(1).next_multiple_of(ROW_CHUNK)
}

#[allow(clippy::too_many_arguments)]
fn run_tiles(
    pool: &ThreadPool,
    p: &Plan,
    w: &[u8],
    rows: usize,
    cols: usize,
    n_tokens: usize,
    xq: &[u8],
    ys: &mut [f32],
) {
    let chunk = if p.all_tokens && float_blocked(p.ty, cols, n_tokens) {
        // The blocked product walks each item's row blocks once per token
        // block: items of one row block each, handed out in order, so the
        // threads finish together (a 64-row item of the 0.6B shape is
        // ~1 ms; items of a quarter of a thread's share left one thread
        // idle for up to one of them per product: 2 threads, pp510 on the
        // EPYC, 0.6B F16 ~169 -> ~173, 1.7B ~54 -> ~61 tok/s). Each item
        // streams the activations once more from L3, a few GB/s at most.
        FLOAT_BLOCK_ROWS
    } else if n_tokens == 1 {
        // One token (the output head in decode): `matvec_multi`'s long
        // items, whose rows prefetch ahead across the whole item (each
        // item starts cold).
        decode_chunk_rows(rows, p.row_bytes, rows * p.row_bytes, pool.n_threads())
    } else {
        chunk_rows(rows, p.row_bytes, pool.n_threads())
    };
    let token_tile = if p.all_tokens {
        n_tokens.max(1)
    } else {
        (TOKEN_TILE_BYTES / p.act_bytes.max(1)).clamp(4, 64)
    };
    #[cfg(target_arch = "x86_64")]
    if p.all_tokens
        && p.ty == GgmlType::F16
        && float_blocked(p.ty, cols, n_tokens)
        && crate::float_prefill() == crate::FloatPrefill::F16
    {
        // The activations rounded to f16 once for every thread, then the
        // tiles read f16 weights and activations (see `FloatPrefill`).
        F16_ACTS.with_borrow_mut(|xh| {
            // Grown, never cleared: every element in use is written below.
            if xh.len() < n_tokens * cols {
                xh.resize(n_tokens * cols, 0);
            }
            let (src, dst) = (
                SyncPtr(xq.as_ptr() as *mut f32),
                SyncPtr(xh.as_mut_ptr() as *mut f32),
            );
            let ab = p.act_bytes;
            pool.run_chunks(n_tokens, &|t| {
                let (s, d) = (src, dst);
                // SAFETY: `all_tokens` holds for AVX2 only, which is
                // available (`plan`); `xq` holds `n_tokens` f32 rows of
                // `ab` bytes (the callers checked) and `xh` as many rows of
                // `cols` f16 elements; row `t` is written by its item's
                // thread alone.
                unsafe {
                    crate::x86::avx2::round_to_f16(
                        cols,
                        (s.0 as *const u8).add(t * ab),
                        (d.0 as *mut u16).add(t * cols),
                    )
                };
            });
            let xb: &[u8] = bytemuck::cast_slice(&xh[..n_tokens * cols]);
            let f16_plan = Plan {
                gemm: Some(crate::x86::avx2::gemm_f16_f16),
                act_bytes: 2 * cols,
                ..*p
            };
            run_chunks(
                pool, &f16_plan, w, rows, cols, chunk, n_tokens, n_tokens, xb, ys,
            );
        });
        return;
    }
    run_chunks(pool, p, w, rows, cols, chunk, n_tokens, token_tile, xq, ys);
}

thread_local! {
    /// The calling thread's f16 activations of [`crate::FloatPrefill::F16`]
    /// (reused across calls).
    #[cfg(target_arch = "x86_64")]
    static F16_ACTS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The row chunks of one product, `chunk` rows each, `token_tile` tokens
/// per kernel call.
#[allow(clippy::too_many_arguments)]
fn run_chunks(
    pool: &ThreadPool,
    p: &Plan,
    w: &[u8],
    rows: usize,
    cols: usize,
    chunk: usize,
    n_tokens: usize,
    token_tile: usize,
    xq: &[u8],
    ys: &mut [f32],
) {
    let n_chunks = rows.div_ceil(chunk);
    let out = SyncPtr(ys.as_mut_ptr());
    let (dot, gemm, rb, ab) = (p.dot, p.gemm, p.row_bytes, p.act_bytes);
    pool.run_chunks(n_chunks, &|c| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        let dst = out;
        for t0 in (0..n_tokens).step_by(token_tile) {
            let t_end = (t0 + token_tile).min(n_tokens);
            if let Some(gemm) = gemm {
                // SAFETY: `plan` checked the kernel is available, that `cols`
                // is a whole number of blocks and that `w` holds `rows` rows;
                // the callers checked `xq` holds `n_tokens` activation rows and
                // `ys` `n_tokens x rows` outputs. Rows r0..r1 belong to chunk
                // `c`, run by this thread alone, so its writes are disjoint.
                unsafe {
                    gemm(
                        cols,
                        w.as_ptr().add(r0 * rb),
                        rb,
                        r1 - r0,
                        xq.as_ptr().add(t0 * ab),
                        ab,
                        t_end - t0,
                        dst.0.add(t0 * rows + r0),
                        rows,
                    )
                };
                continue;
            }
            for r in r0..r1 {
                let wr = &w[r * rb..(r + 1) * rb];
                for t in t0..t_end {
                    let xr = &xq[t * ab..(t + 1) * ab];
                    // SAFETY: `plan` checked the kernel is available and that
                    // `cols` is a whole number of blocks; `wr` and `xr` hold
                    // exactly one row of their types. Output element
                    // (t, r) belongs to row chunk `c`, run by this thread
                    // alone, and lies inside `ys` (checked by the callers).
                    unsafe { *dst.0.add(t * rows + r) = dot(cols, wr, xr) };
                }
            }
        }
    });
}
