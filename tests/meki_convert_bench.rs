//! Fold speed at the paper's 1.7B shape (d = 2048, d_mem = 256, one layer,
//! ROWS vocabulary rows), next to the same computation in numpy
//! (tools/fold_bench.py, BLAS) in the same run. Ignored by default:
//!
//!     cargo test --release --test meki_convert_bench -- --ignored --nocapture
//!
//! Env: MEKI_FOLD_BENCH_ROWS (default 2048), MEKI_FOLD_BENCH_D (2048).

use meki::convert::fold::{LayerFold, ROWS_PER_TASK};
use meki::convert::gemm::PackedB;
use rayon::prelude::*;
use std::time::Instant;

fn env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark"]
fn fold_speed_vs_numpy() {
    let rows = env("MEKI_FOLD_BENCH_ROWS", 2048);
    let d = env("MEKI_FOLD_BENCH_D", 2048);
    let dm = 256;
    let mut s = 1u64;
    let mut rnd = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let emb = rnd(rows * d, 2.0);
    let stat = rnd(rows * dm, 2.0);
    let lf = LayerFold {
        d,
        d_mem: dm,
        eps: 1e-6,
        alpha: 0.9,
        beta: 1.1,
        mix: vec![1.0; dm],
        has_static: true,
        g_norm: None,
        g: Some((
            PackedB::pack(&rnd(d / 2 * d, 0.04), d / 2, d),
            PackedB::pack(&rnd(d / 2 * d, 0.04), d / 2, d),
            PackedB::pack(&rnd(dm * d / 2, 0.04), dm, d / 2),
        )),
    };
    let mut out = vec![0f32; rows * dm];
    let run = |out: &mut Vec<f32>| {
        out.par_chunks_mut(ROWS_PER_TASK * dm)
            .enumerate()
            .for_each(|(i, o)| {
                let r0 = i * ROWS_PER_TASK;
                let n = o.len() / dm;
                lf.fold_rows(
                    &emb[r0 * d..(r0 + n) * d],
                    Some(&stat[r0 * dm..(r0 + n) * dm]),
                    n,
                    o,
                    dm,
                    0,
                );
            })
    };
    run(&mut out);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        run(&mut out);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = 2.0 * rows as f64 * (1.5 * (d * d) as f64 + (d / 2 * dm) as f64);
    let ours = flops / best / 1e9;
    println!(
        "meki fold: {rows} rows, d = {d}, d_mem = {dm}, {} threads: {best:.4} s, {ours:.2} GFLOP/s",
        rayon::current_num_threads()
    );
    let py = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fold_bench.py"))
        .args([rows.to_string(), d.to_string(), dm.to_string()])
        .output();
    match py {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            println!("numpy: {}", text.trim());
            if let Some(g) = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("numpy_gflops="))
                .and_then(|g| g.parse::<f64>().ok())
            {
                println!("ratio meki / numpy = {:.2}", ours / g);
            }
        }
        other => println!("numpy reference unavailable: {other:?}"),
    }
    // Full 1.7B fold: V * L rows of this work.
    println!(
        "projected full fold (V = 151680, L = 28) at this speed: {:.0} s",
        flops / rows as f64 * 151680.0 * 28.0 / (ours * 1e9)
    );
}

#[test]
#[ignore = "benchmark"]
fn gemm_speed() {
    use meki::convert::gemm::gemm_nt;
    let (m, k, n) = (64, 2048, 1024);
    let a = vec![0.5f32; m * k];
    let b = PackedB::pack(&vec![0.25f32; n * k], n, k);
    let mut c = vec![0f32; m * n];
    gemm_nt(&a, m, &b, &mut c);
    let t = Instant::now();
    for _ in 0..10 {
        gemm_nt(&a, m, &b, &mut c);
    }
    let s = t.elapsed().as_secs_f64() / 10.0;
    println!(
        "gemm {m}x{k}x{n} one thread: {:.2} GFLOP/s",
        2.0 * (m * k * n) as f64 / s / 1e9
    );
}
