//! Repacked Q4_0, Q8_0, Q4_K and Q6_K (8-row groups): the layout round-trips, and
//! every product (AVX2 kernel and the plain fallback, 1..3 threads, token
//! counts that do not fill a 4-token tile, odd block counts, one group and
//! many, unaligned activations) equals the scalar reference
//! (`dot_q4_0_q8_0` / `dot_q8_0_q8_0` / `dot_q4_k_q8_k` / `dot_q6_k_q8_k`)
//! on the original rows
//! bit for bit.
#![allow(clippy::needless_range_loop)]

mod common;
use common::*;
use meki_kernels::formats::GgmlType;
use meki_kernels::repack::{self, Packed, GROUP};
use meki_kernels::{quantize_activations, vec_dot, vec_dot_type, Isa, ThreadPool};

/// The activation type `ty` is multiplied with (Q8_0 or Q8_K).
fn act_of(ty: GgmlType) -> GgmlType {
    vec_dot_type(ty).unwrap()
}

/// Prepared rows of `n` quantized activation rows for a `ty` matrix.
fn prepare(ty: GgmlType, xq: &[u8], n: usize, cols: usize) -> Vec<u8> {
    let mut acts = Vec::new();
    if act_of(ty) == GgmlType::Q8K {
        repack::prepare_acts_k(xq, n, cols, &mut acts).unwrap();
    } else {
        repack::prepare_acts(xq, n, cols, &mut acts).unwrap();
    }
    acts
}

/// Scalar reference: every (token, row) as the scalar single-row dot of the
/// original rows with the quantized activations.
fn reference(ty: GgmlType, w: &[u8], rows: usize, cols: usize, xq: &[u8], n: usize) -> Vec<f32> {
    let rb = cols / ty.block_size() * ty.type_size();
    let act = act_of(ty);
    let ab = cols / act.block_size() * act.type_size();
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
/// unsigned/sign trick); every third Q4_K super-block has all scales and
/// mins 63 and all quants 15 (the largest integer sums).
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
    if ty == GgmlType::Q4K {
        for blk in w.chunks_exact_mut(144).step_by(3) {
            blk[4..].fill(0xFF);
        }
    }
    if ty == GgmlType::Q6K {
        // All quants 31 (u = 63) with scales -128, or -32 (u = 0) with 127.
        for (k, blk) in w.chunks_exact_mut(210).enumerate() {
            match k % 3 {
                0 => {
                    blk[..192].fill(0xFF);
                    blk[192..208].fill(0x80);
                }
                1 => {
                    blk[..192].fill(0);
                    blk[192..208].fill(0x7F);
                }
                _ => {}
            }
        }
    }
    w
}

/// A Q8_K row of `nb` super-blocks with extreme quants: sub-blocks of all
/// -128 (what the Q8_K quantizer can write) and of all 127, bsums consistent.
fn extreme_q8k(rng: &mut Rng, nb: usize) -> Vec<u8> {
    let mut b = random_q8(rng, GgmlType::Q8K, nb);
    for blk in b.chunks_exact_mut(292) {
        for (e, q) in blk[4..260].iter_mut().enumerate() {
            *q = if (e / 32) % 3 == 1 { 0x7f } else { 0x80 };
        }
        for j in 0..16 {
            let s: i16 = blk[4 + 16 * j..20 + 16 * j]
                .iter()
                .map(|&q| q as i8 as i16)
                .sum();
            blk[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
        }
    }
    b
}

const TYPES: [GgmlType; 4] = [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K];

#[test]
fn layout_round_trips() {
    let mut rng = Rng::new(5);
    for ty in TYPES {
        let bs = ty.type_size();
        for (rows, nb) in [(8, 1), (16, 3), (24, 7), (64, 32)] {
            let w = random_matrix(&mut rng, ty, rows, nb);
            let p = Packed::new(ty, &w, rows, nb * ty.block_size()).unwrap();
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
        let cols = nb * ty.block_size();
        let whole = Packed::new(ty, &w, rows, cols).unwrap();
        let mut p = Packed::zeroed(ty, rows, cols).unwrap();
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
    assert!(
        Packed::new(GgmlType::Q5K, &vec![0u8; 8 * 176], 8, 256).is_err(),
        "type"
    );
    let wk = vec![0u8; 8 * 144];
    assert!(Packed::new(GgmlType::Q4K, &wk, 8, 256).is_ok());
    assert!(
        Packed::new(GgmlType::Q4K, &wk, 8, 128).is_err(),
        "cols % 256"
    );
    assert!(!Packed::supported(Isa::Avx2, GgmlType::Q4K, 8, 128));
    assert!(repack::prepare_acts_k(&[0u8; 291], 1, 256, &mut Vec::new()).is_err());
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
        assert!(Packed::preferred(Isa::Avx2, GgmlType::Q4K, 16, 256));
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
        let cols = nb * ty.block_size();
        let act = act_of(ty);
        let w = random_matrix(&mut rng, ty, rows, nb);
        // Activations through the quantizer, plus a row of extreme quants
        // (for Q4_0 and Q4_K -128 included: the i16 sums must still be
        // exact; the Q8_0 quantizer never writes -128, which Q8_0's sign
        // trick needs).
        let mut xq = Vec::new();
        for t in 0..n {
            if t == 1 && act == GgmlType::Q8K {
                xq.extend(extreme_q8k(&mut rng, nb));
                continue;
            }
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
            let mut q = vec![0u8; nb * act.type_size()];
            quantize_activations(Isa::Scalar, act, &x, &mut q).unwrap();
            xq.extend(q);
        }
        let want = reference(ty, &w, rows, cols, &xq, n);
        let p = Packed::new(ty, &w, rows, cols).unwrap();
        let acts = prepare(ty, &xq, n, cols);
        for &isa in &isas {
            for (k, pool) in pools.iter().enumerate() {
                // Activations at an odd offset for some pools.
                let (buf, range) = at_offset(&acts, k);
                let mut y = vec![f32::NAN; n * rows];
                repack::matmul(isa, pool, &p, n, &buf[range], &mut y).unwrap();
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

/// Every token count 1..=14 (all remainders of the 4- and 6-token tiles),
/// two chunks of groups, on every type: equals the scalar reference.
#[test]
fn every_token_count_equals_scalar_reference() {
    let mut rng = Rng::new(21);
    let pool = ThreadPool::new(2);
    for ty in TYPES {
        let (rows, nb) = (24, 3);
        let cols = nb * ty.block_size();
        let act = act_of(ty);
        let w = random_matrix(&mut rng, ty, rows, nb);
        let p = Packed::new(ty, &w, rows, cols).unwrap();
        for n in 1..=14 {
            let x = random_f32(&mut rng, n * cols, 1.5);
            let ab = nb * act.type_size();
            let mut xq = vec![0u8; n * ab];
            for (xr, q) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(ab)) {
                quantize_activations(Isa::Scalar, act, xr, q).unwrap();
            }
            let want = reference(ty, &w, rows, cols, &xq, n);
            for isa in [Isa::Scalar, Isa::Avx2] {
                if !isa.is_available() {
                    continue;
                }
                let mut acts = Vec::new();
                p.prepare_input(isa, &x, n, &mut acts).unwrap();
                let mut y = vec![f32::NAN; n * rows];
                repack::matmul(isa, &pool, &p, n, &acts, &mut y).unwrap();
                assert_eq!(bits(&y), bits(&want), "{ty} {isa} {n} tokens");
            }
        }
    }
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
        let cols = nb * ty.block_size();
        let act = act_of(ty);
        let p = Packed::new(ty, &random_matrix(&mut rng, ty, rows, nb), rows, cols).unwrap();
        assert_eq!(p.act_kind(), act);
        assert_eq!(p.n_groups(), rows / GROUP);
        assert_eq!(p.group_bytes() * p.n_groups(), p.n_bytes());
        let x = random_f32(&mut rng, n * cols, 2.0);
        let ab = nb * act.type_size();
        let mut xq = vec![0u8; n * ab];
        for (xr, q) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(ab)) {
            quantize_activations(Isa::Scalar, act, xr, q).unwrap();
        }
        let want = prepare(ty, &xq, n, cols);
        assert_eq!(p.act_row_bytes() * n, want.len());
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

/// Speed of the packed product vs the row kernels on the same matrix and
/// quantized input (Qwen3-0.6B shapes), alternating rounds, best of each:
/// `cargo test --release -p meki-kernels --test repack -- --ignored --nocapture speed`
/// (env REPACK_THREADS, default 1; REPACK_TYPES, default q4_K). With one
/// thread the time is this thread's CPU time (Linux), steadier on a loaded
/// machine.
#[test]
#[ignore]
fn speed_packed_vs_rows() {
    let threads: usize = std::env::var("REPACK_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let types: Vec<GgmlType> = std::env::var("REPACK_TYPES")
        .unwrap_or_else(|_| "q4_K".into())
        .split(',')
        .map(|s| match s {
            "q4_0" => GgmlType::Q4_0,
            "q8_0" => GgmlType::Q8_0,
            "q6_K" => GgmlType::Q6K,
            _ => GgmlType::Q4K,
        })
        .collect();
    let isa = Isa::Avx2;
    if !isa.is_available() {
        eprintln!("skipped: no AVX2");
        return;
    }
    let pool = ThreadPool::new(threads);
    let mut rng = Rng::new(1);
    for ty in types {
        for (rows, cols) in [(1024, 1024), (3072, 1024), (1024, 3072)] {
            let nb = cols / ty.block_size();
            let w = random_matrix(&mut rng, ty, rows, nb);
            let p = Packed::new(ty, &w, rows, cols).unwrap();
            for n in [512usize, 1] {
                let x = random_f32(&mut rng, n * cols, 2.0);
                let act = act_of(ty);
                let ab = nb * act.type_size();
                let mut xq = vec![0u8; n * ab];
                for (xr, q) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(ab)) {
                    quantize_activations(isa, act, xr, q).unwrap();
                }
                let acts = prepare(ty, &xq, n, cols);
                let mut y = vec![0f32; n * rows];
                let reps = if n == 1 { 2000 } else { 3 };
                let (mut best_rows, mut best_packed) = (f64::MAX, f64::MAX);
                for _ in 0..5 {
                    let t = clock(threads);
                    for _ in 0..reps {
                        meki_kernels::matmul::matmul_quantized(
                            isa, &pool, &w, ty, rows, cols, n, &xq, &mut y,
                        )
                        .unwrap();
                    }
                    best_rows = best_rows.min((clock(threads) - t) / reps as f64);
                    let t = clock(threads);
                    for _ in 0..reps {
                        repack::matmul(isa, &pool, &p, n, &acts, &mut y).unwrap();
                    }
                    best_packed = best_packed.min((clock(threads) - t) / reps as f64);
                }
                let gops = |s: f64| 2.0 * (rows * cols * n) as f64 / s / 1e9;
                println!(
                    "{ty} {rows}x{cols} {n:>3} tok {threads} thr: rows {:7.1} us {:6.1} GOP/s, packed {:7.1} us {:6.1} GOP/s, packed/rows speed {:.2}x",
                    best_rows * 1e6,
                    gops(best_rows),
                    best_packed * 1e6,
                    gops(best_packed),
                    best_rows / best_packed
                );
            }
        }
    }
}

/// Seconds: this thread's CPU time with one thread (if readable), else wall.
fn clock(threads: usize) -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    if threads == 1 {
        if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
            if let Some(ns) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                return ns * 1e-9;
            }
        }
    }
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}
