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
        assert!(Packed::preferred(Isa::Avx2, GgmlType::Q8_0, 16, 64));
        assert!(Packed::preferred(Isa::Avx2, GgmlType::Q6K, 16, 256));
        assert!(!Packed::preferred(Isa::Avx2, GgmlType::Q5K, 16, 256));
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
    // counts of every 4-token tile remainder, more groups than chunks;
    // small matrices over many tokens, which are split by tokens too.
    let cases = [
        (40, 9, 37),
        (16, 32, 100),
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

/// One token of Q8_0, Q4_0, Q4_K and Q6_K (the two-stream decode kernels,
/// and for Q4_0 / Q4_K / Q6_K the prefill tile with one token too): odd and even group
/// counts in one call (one thread through `matvec_multi`: the whole matrix)
/// and in chunks (2-3 threads, `matmul`), 1..33 blocks per row, unaligned
/// activations, extreme quants, several prefetch distances (0, past the
/// end of a stream): equals the scalar reference bit for bit.
#[test]
fn decode_equals_scalar_reference() {
    use meki_kernels::multi::{matvec_multi, Job, PackedJob};
    use std::sync::atomic::Ordering::Relaxed;
    let mut rng = Rng::new(404);
    let pools: Vec<ThreadPool> = [1, 2, 3].into_iter().map(ThreadPool::new).collect();
    let isas: Vec<Isa> = [Isa::Scalar, Isa::Avx2]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    let default_pf = [1, 2].map(repack::decode_prefetch_blocks);
    let default_two = repack::DECODE_TWO_STREAMS.load(Relaxed);
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q6K] {
        let act = act_of(ty);
        for (k, &(groups, nb)) in [
            (1, 1),
            (1, 4),
            (2, 3),
            (3, 1),
            (3, 8),
            (5, 2),
            (7, 33),
            (9, 4),
            (17, 5),
            (33, 32),
            (129, 4),
        ]
        .iter()
        .enumerate()
        {
            // Q4_K / Q6_K: fewer (bigger) blocks.
            let nb: usize = if act == GgmlType::Q8K { nb / 3 + 1 } else { nb };
            let (rows, cols) = (GROUP * groups, nb * ty.block_size());
            let w = random_matrix(&mut rng, ty, rows, nb);
            let xq = match (act, k % 2) {
                (GgmlType::Q8K, 1) => extreme_q8k(&mut rng, nb),
                (_, 1) => {
                    // Extreme activations: -127 (-128 for Q4_0) and 127
                    // against the weights' extremes.
                    let lowest = if ty == GgmlType::Q4_0 { 0x80 } else { 0x81 };
                    let mut xq = random_q8(&mut rng, act, nb);
                    for blk in xq.chunks_exact_mut(34) {
                        for (e, q) in blk[2..].iter_mut().enumerate() {
                            *q = if e % 3 == 0 { lowest } else { 0x7f };
                        }
                    }
                    xq
                }
                _ => random_q8(&mut rng, act, nb),
            };
            let want = reference(ty, &w, rows, cols, &xq, 1);
            let p = Packed::new(ty, &w, rows, cols).unwrap();
            let acts = prepare(ty, &xq, 1, cols);
            for (j, pf) in [0, 1, 8, 40, 1000].into_iter().enumerate() {
                repack::DECODE_PREFETCH_BLOCKS
                    .iter()
                    .for_each(|d| d.store(pf, Relaxed));
                for two in [7, 0] {
                    repack::DECODE_TWO_STREAMS.store(two, Relaxed);
                    for &isa in &isas {
                        for (t, pool) in pools.iter().enumerate() {
                            let (buf, range) = at_offset(&acts, (j + t) % 4);
                            let what = format!(
                                "{ty} {isa} {} threads, {rows}x{cols}, prefetch {pf}, two streams {two}",
                                pool.n_threads()
                            );
                            let mut y = vec![f32::NAN; rows];
                            repack::matmul(isa, pool, &p, 1, &buf[range.clone()], &mut y).unwrap();
                            assert_eq!(bits(&y), bits(&want), "matmul {what}");
                            let mut y = vec![f32::NAN; rows];
                            let mut jobs = [Job::from(PackedJob {
                                w: &p,
                                acts: &buf[range],
                                y: &mut y,
                            })];
                            matvec_multi(isa, pool, &mut jobs).unwrap();
                            assert_eq!(bits(&y), bits(&want), "matvec_multi {what}");
                        }
                    }
                }
            }
        }
    }
    for (d, v) in repack::DECODE_PREFETCH_BLOCKS.iter().zip(default_pf) {
        d.store(v, Relaxed);
    }
    repack::DECODE_TWO_STREAMS.store(default_two, Relaxed);
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
        let mut x = random_f32(&mut rng, n * cols, 2.0);
        // An all-zero block (d = 0) and values a half-step from rounding.
        x[..32].fill(0.0);
        x[32] = 127.0;
        x[33] = 0.5;
        x[34] = -1.5;
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

/// One decode product of the speed test below: a matrix in both forms.
struct DecodeMat {
    rows: usize,
    cols: usize,
    plain: Vec<u8>,
    packed: Packed,
}

/// Decode (one token) through `matvec_multi` with matrices plain vs
/// repacked (Q8_0; env REPACK_TYPE q4_0 / q4_K / q6_K / q8_0), on layers of a Qwen3 shape with MeKi projections (d_mem 128):
/// per layer the groups of a decode step (Q/K/V; O; gate, up and the MeKi
/// gate; down and the MeKi output), several layers so that the weights do
/// not stay in cache, then the output head. Each round runs the whole step
/// plain and packed in turn (order alternating); prints per group the
/// median wall time of a call in each form (medians: robust to the
/// preemptions of a loaded machine) and their ratio:
/// `REPACK_THREADS=2 cargo test --release -p meki-kernels --test repack --
/// --ignored --nocapture speed_decode` (env REPACK_MODEL 0.6b or 1.7b,
/// default both; REPACK_LAYERS, default 6; REPACK_ROUNDS, default 40;
/// REPACK_HEAD=0 skips the head; REPACK_PF=4,8,12 times the packed form
/// at each of these prefetch distances, the `DECODE_PREFETCH_BLOCKS` entry
/// of REPACK_THREADS (one thread, several);
/// REPACK_LAYERS=1 REPACK_HEAD=0 keeps the weights in a large L3;
/// REPACK_MEKI=1 times the MeKi projections alone, one dispatch each).
#[test]
#[ignore]
fn speed_decode_plain_vs_packed() {
    use meki_kernels::multi::{matvec_multi, Job, MatvecJob, PackedJob};
    use std::sync::atomic::Ordering::Relaxed;
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let threads = env("REPACK_THREADS", 1);
    let n_layers = env("REPACK_LAYERS", 6);
    let rounds = env("REPACK_ROUNDS", 40);
    // The MeKi projections alone (`d x 128`, `128 x d`), no head.
    let meki_only = env("REPACK_MEKI", 0) != 0;
    let head = env("REPACK_HEAD", 1) != 0 && !meki_only;
    let isa = Isa::Avx2;
    if !isa.is_available() {
        eprintln!("skipped: no AVX2");
        return;
    }
    let ty = match std::env::var("REPACK_TYPE").as_deref() {
        Ok("q4_0") => GgmlType::Q4_0,
        Ok("q4_K") | Ok("q4_k") => GgmlType::Q4K,
        Ok("q6_K") | Ok("q6_k") => GgmlType::Q6K,
        _ => GgmlType::Q8_0,
    };
    let act = act_of(ty);
    let pool = ThreadPool::new(threads);
    let mut rng = Rng::new(3);
    let models: Vec<(&str, usize, usize, usize)> =
        [("0.6b", 1024, 2048, 3072), ("1.7b", 2048, 2048, 6144)]
            .into_iter()
            .filter(|m| std::env::var("REPACK_MODEL").map_or(true, |v| v == m.0))
            .collect();
    for (model, d, q_dim, ff) in models {
        let kv = 1024;
        // (group name, [(rows, cols)]) of one layer.
        let groups: Vec<(&str, Vec<(usize, usize)>)> = if meki_only {
            vec![("meki gate", vec![(128, d)]), ("meki out", vec![(d, 128)])]
        } else {
            vec![
                ("qkv", vec![(q_dim, d), (kv, d), (kv, d)]),
                ("o", vec![(d, q_dim)]),
                ("gate+up+mg", vec![(ff, d), (ff, d), (128, d)]),
                ("down+mo", vec![(d, ff), (d, 128)]),
            ]
        };
        // Shapes the type can hold (the MeKi output's 128 columns are not
        // whole Q4_K super-blocks).
        let groups: Vec<(&str, Vec<(usize, usize)>)> = groups
            .into_iter()
            .map(|(n, v)| {
                (
                    n,
                    v.into_iter()
                        .filter(|s| s.1 % ty.block_size() == 0)
                        .collect(),
                )
            })
            .filter(|(_, v): &(&str, Vec<_>)| !v.is_empty())
            .collect();
        // One random matrix per shape, copied per layer (distinct memory).
        let mut protos: Vec<((usize, usize), Vec<u8>)> = Vec::new();
        let mut proto = |rows: usize, cols: usize| {
            if let Some((_, w)) = protos.iter().find(|(s, _)| *s == (rows, cols)) {
                return w.clone();
            }
            let w = random_matrix(&mut rng, ty, rows, cols / ty.block_size());
            protos.push(((rows, cols), w.clone()));
            w
        };
        let mut mk = |rows: usize, cols: usize| {
            let plain = proto(rows, cols);
            let packed = Packed::new(ty, &plain, rows, cols).unwrap();
            DecodeMat {
                rows,
                cols,
                plain,
                packed,
            }
        };
        // steps[g] = the layers' groups of kind g, then the head.
        let mut steps: Vec<(String, Vec<Vec<DecodeMat>>)> = groups
            .iter()
            .map(|(name, _)| (name.to_string(), Vec::new()))
            .collect();
        for _ in 0..n_layers {
            for (k, (_, shapes)) in groups.iter().enumerate() {
                let mats = shapes.iter().map(|&(r, c)| mk(r, c)).collect();
                steps[k].1.push(mats);
            }
        }
        if head {
            steps.push(("head".into(), vec![vec![mk(151936, d)]]));
        }
        // One input per column count, in both forms.
        let mut inputs: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
        for c in [d, q_dim, ff, 128] {
            if inputs.iter().any(|i| i.0 == c) || c % ty.block_size() != 0 {
                continue;
            }
            let x = random_f32(&mut rng, c, 2.0);
            let mut xq = vec![0u8; c / act.block_size() * act.type_size()];
            quantize_activations(isa, act, &x, &mut xq).unwrap();
            let acts = prepare(ty, &xq, 1, c);
            inputs.push((c, xq, acts));
        }
        let input = |c: usize| inputs.iter().find(|i| i.0 == c).unwrap();
        let max_rows = steps
            .iter()
            .flat_map(|(_, ls)| ls.iter().flatten())
            .map(|m| m.rows)
            .max()
            .unwrap();
        let mut ys: Vec<Vec<f32>> = (0..3).map(|_| vec![0f32; max_rows]).collect();
        let run = |mats: &[DecodeMat], packed: bool, ys: &mut [Vec<f32>]| {
            let mut jobs: Vec<Job> = mats
                .iter()
                .zip(ys.iter_mut())
                .map(|(m, y)| {
                    let (_, xq, acts) = input(m.cols);
                    if packed {
                        Job::from(PackedJob {
                            w: &m.packed,
                            acts,
                            y: &mut y[..m.rows],
                        })
                    } else {
                        Job::from(MatvecJob {
                            w: &m.plain,
                            ty,
                            rows: m.rows,
                            cols: m.cols,
                            xq,
                            y: &mut y[..m.rows],
                        })
                    }
                })
                .collect();
            matvec_multi(isa, &pool, &mut jobs).unwrap();
        };
        // Variants: plain, then packed at each prefetch distance (two-stream
        // kernels), then with REPACK_AB=1 packed through the prefill tile
        // with one token (Q4_0 / Q4_K: `DECODE_TWO_STREAMS` off).
        // The distance of this thread count (one thread, several).
        let pf_slot = &repack::DECODE_PREFETCH_BLOCKS[(threads > 1) as usize];
        let default_pf = repack::decode_prefetch_blocks(threads);
        let default_two = repack::DECODE_TWO_STREAMS.load(Relaxed);
        let mut pfs: Vec<usize> = std::env::var("REPACK_PF")
            .map(|v| v.split(',').filter_map(|d| d.parse().ok()).collect())
            .unwrap_or_else(|_| vec![default_pf]);
        let tile_variant = env("REPACK_AB", 0) != 0 && ty != GgmlType::Q8_0;
        if tile_variant {
            pfs.push(default_pf);
        }
        let nv = 1 + pfs.len();
        let mut times = vec![vec![Vec::new(); nv]; steps.len()];
        let mut totals = vec![Vec::new(); nv];
        let clock = std::time::Instant::now();
        for round in 0..rounds + 2 {
            for pass in 0..nv {
                let v = (round + pass) % nv;
                let packed = v > 0;
                if packed {
                    pf_slot.store(pfs[v - 1], Relaxed);
                    let tile = tile_variant && v == nv - 1;
                    repack::DECODE_TWO_STREAMS.store(if tile { 0 } else { 7 }, Relaxed);
                }
                let mut total = 0.0;
                for (g, (_, layers)) in steps.iter().enumerate() {
                    for mats in layers {
                        let t0 = clock.elapsed().as_secs_f64();
                        run(mats, packed, &mut ys);
                        let t = clock.elapsed().as_secs_f64() - t0;
                        total += t;
                        // Two warm-up rounds.
                        if round >= 2 {
                            times[g][v].push(t);
                        }
                    }
                }
                if round >= 2 {
                    totals[v].push(total);
                }
            }
        }
        pf_slot.store(default_pf, Relaxed);
        repack::DECODE_TWO_STREAMS.store(default_two, Relaxed);
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{model} {ty} decode, {threads} thr, {n_layers} layers, {rounds} rounds, load {} (median call us; packed at prefetch distances {pfs:?} blocks{}: us, plain/packed)",
            load.split_whitespace().next().unwrap_or("?"),
            if tile_variant { ", the last through the one-token prefill tile" } else { "" }
        );
        let mut sums = vec![0.0; nv];
        for (g, (name, layers)) in steps.iter().enumerate() {
            let m: Vec<f64> = times[g].iter().map(|t| median(t)).collect();
            let mut line = format!("  {name:<11} plain {:8.1}", m[0] * 1e6);
            for v in 1..nv {
                line += &format!(" | {:8.1} {:.3}", m[v] * 1e6, m[0] / m[v]);
            }
            println!("{line}");
            for v in 0..nv {
                sums[v] += m[v] * layers.len() as f64;
            }
        }
        let mut line = format!("  step        plain {:8.1}", sums[0] * 1e6);
        for v in 1..nv {
            let r: Vec<f64> = totals[0]
                .iter()
                .zip(&totals[v])
                .map(|(p, k)| p / k)
                .collect();
            line += &format!(
                " | {:8.1} {:.3} (rounds {:.3})",
                sums[v] * 1e6,
                sums[0] / sums[v],
                median(&r)
            );
        }
        println!("{line}");
    }
}
