//! Fold speed at the paper's 1.7B shape (d = 2048, d_mem = 256, one layer,
//! ROWS vocabulary rows), next to the same computation in numpy
//! (tools/fold_bench.py, BLAS) in the same run. Ignored by default:
//!
//!     cargo test --release --test meki_convert_bench -- --ignored --nocapture
//!
//! Env: MEKI_FOLD_BENCH_ROWS (default 2048), MEKI_FOLD_BENCH_D (2048);
//! MEKI_GEMM=generic|avx2|avx512 forces the GEMM path (printed).

use meki::convert::fold::{LayerFold, ROWS_PER_TASK};
use meki::convert::gemm::{selected_path, PackedB};
use rayon::prelude::*;
use std::time::Instant;

fn env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process, all threads (Linux
/// `/proc/self/stat` fields 14 and 15, in clock ticks of 1/100 s).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name, which may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
    let flops = 2.0 * rows as f64 * (1.5 * (d * d) as f64 + (d / 2 * dm) as f64);
    let numpy = || -> Option<(f64, f64)> {
        // The source tree's script, or ./tools/fold_bench.py when the
        // binary runs from a copy of the tree elsewhere (another machine).
        let built = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fold_bench.py");
        let script = if std::path::Path::new(built).exists() {
            built
        } else {
            "tools/fold_bench.py"
        };
        let o = std::process::Command::new("python3")
            .arg(script)
            .args([rows.to_string(), d.to_string(), dm.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let field = |key: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|g| g.parse::<f64>().ok())
        };
        Some((field("numpy_gflops=")?, field("numpy_cpu_gflops=")?))
    };
    // Interleaved rounds (the machine is shared): each round times ours
    // (best of 3) then numpy (best of 3, same shape), both by wall clock and
    // by CPU time of all threads (work per CPU-second does not depend on how
    // many other jobs share the cores); the median ratios are the result.
    let rounds = env("MEKI_FOLD_BENCH_ROUNDS", 5);
    let (mut ratios, mut cpu_ratios, mut best_ours) = (Vec::new(), Vec::new(), 0f64);
    for round in 0..rounds {
        let mut best = f64::INFINITY;
        let cpu0 = process_cpu_seconds();
        for _ in 0..3 {
            let t = Instant::now();
            run(&mut out);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ours_cpu = cpu0
            .zip(process_cpu_seconds())
            .map(|(a, b)| flops * 3.0 / (b - a) / 1e9);
        let ours = flops / best / 1e9;
        best_ours = best_ours.max(ours);
        match (numpy(), ours_cpu) {
            (Some((g, g_cpu)), Some(c)) => {
                println!(
                    "round {round}: wall meki {ours:.2} / numpy {g:.2} GFLOP/s = {:.3}; \
                     per CPU-second meki {c:.2} / numpy {g_cpu:.2} = {:.3}",
                    ours / g,
                    c / g_cpu
                );
                ratios.push(ours / g);
                cpu_ratios.push(c / g_cpu);
            }
            _ => println!("round {round}: meki {ours:.2} GFLOP/s, numpy reference unavailable"),
        }
    }
    println!(
        "meki fold: {rows} rows, d = {d}, d_mem = {dm}, {} threads, gemm path {}: best {best_ours:.2} GFLOP/s",
        rayon::current_num_threads(),
        selected_path().name()
    );
    for (what, mut r) in [("wall clock", ratios), ("per CPU-second", cpu_ratios)] {
        if r.is_empty() {
            continue;
        }
        r.sort_by(f64::total_cmp);
        println!(
            "ratio meki / numpy, {what}: median {:.3} (min {:.3}, max {:.3}, {} rounds)",
            r[r.len() / 2],
            r[0],
            r[r.len() - 1],
            r.len()
        );
    }
    let ours = best_ours;
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
        "gemm {m}x{k}x{n} one thread, path {}: {:.2} GFLOP/s",
        selected_path().name(),
        2.0 * (m * k * n) as f64 / s / 1e9
    );
}

/// The fold's three GEMMs (2048 rows in blocks of 96 on the rayon pool,
/// d = 2048, d_mem = 256) on the avx2 path and every avx512 setting,
/// interleaved in one process (rounds of each variant in turn): GFLOP/s per
/// variant and each variant's per-round ratio to avx2.
///
///     cargo test --release --test meki_convert_bench -- --ignored --nocapture gemm_paths
///
/// Env MEKI_FOLD_BENCH_ROUNDS (default 5), MEKI_FOLD_BENCH_D (2048).
#[test]
#[ignore = "benchmark"]
fn gemm_paths() {
    use meki::convert::fold::ROWS_PER_TASK;
    use meki::convert::gemm::{gemm_nt_tuned, Avx512Tuning, GemmPath, KC_AVX512};
    let rows = env("MEKI_FOLD_BENCH_ROWS", 2048);
    let d = env("MEKI_FOLD_BENCH_D", 2048);
    let dm = 256;
    let h = d / 2;
    let vals = |n: usize, seed: u64| -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    };
    let z = vals(rows * d, 1);
    let hz = vals(rows * h, 2);
    let (wg, wu, wd) = (
        PackedB::pack(&vals(h * d, 3), h, d),
        PackedB::pack(&vals(h * d, 4), h, d),
        PackedB::pack(&vals(dm * h, 5), dm, h),
    );
    let pf = |kc, prefetch| Avx512Tuning { kc, prefetch };
    let base = pf(KC_AVX512, true);
    let mut variants = vec![("avx2".to_string(), GemmPath::Avx2, base)];
    for t in [
        base,
        pf(KC_AVX512, false),
        pf(128, true),
        pf(256, true),
        pf(384, true),
    ] {
        let name = format!("avx512 kc={} prefetch={}", t.kc, t.prefetch);
        variants.push((name, GemmPath::Avx512, t));
    }
    variants.retain(|(name, p, _)| {
        let ok = p.is_available();
        if !ok {
            println!("{name}: SKIPPED, not available on this CPU");
        }
        ok
    });
    let mut out_g = vec![0f32; rows * h];
    let mut out_u = vec![0f32; rows * h];
    let mut out_d = vec![0f32; rows * dm];
    let mut run = |path: GemmPath, t: Avx512Tuning| {
        out_g
            .par_chunks_mut(ROWS_PER_TASK * h)
            .zip(out_u.par_chunks_mut(ROWS_PER_TASK * h))
            .zip(out_d.par_chunks_mut(ROWS_PER_TASK * dm))
            .enumerate()
            .for_each(|(i, ((g, u), o))| {
                let r0 = i * ROWS_PER_TASK;
                let n = g.len() / h;
                let zr = &z[r0 * d..(r0 + n) * d];
                gemm_nt_tuned(path, t, zr, n, &wg, g).unwrap();
                gemm_nt_tuned(path, t, zr, n, &wu, u).unwrap();
                gemm_nt_tuned(path, t, &hz[r0 * h..(r0 + n) * h], n, &wd, o).unwrap();
            });
    };
    let flops = 2.0 * rows as f64 * (2.0 * (h * d) as f64 + (h * dm) as f64);
    let rounds = env("MEKI_FOLD_BENCH_ROUNDS", 5);
    let mut gflops = vec![Vec::new(); variants.len()];
    for (_, p, t) in &variants {
        run(*p, *t);
    }
    for _ in 0..rounds {
        for (v, (_, p, t)) in variants.iter().enumerate() {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t0 = Instant::now();
                run(*p, *t);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            gflops[v].push(flops / best / 1e9);
        }
    }
    let avx2 = variants.iter().position(|(_, p, _)| *p == GemmPath::Avx2);
    println!(
        "fold GEMMs, {rows} rows, d = {d}, d_mem = {dm}, {} threads, {rounds} rounds (best of 3 each):",
        rayon::current_num_threads()
    );
    let median = |mut x: Vec<f64>| {
        x.sort_by(f64::total_cmp);
        (x[x.len() / 2], x[0], x[x.len() - 1])
    };
    for (v, (name, _, _)) in variants.iter().enumerate() {
        let (med, lo, hi) = median(gflops[v].clone());
        let vs = avx2.map_or(String::new(), |a| {
            let r: Vec<f64> = gflops[v]
                .iter()
                .zip(&gflops[a])
                .map(|(x, y)| x / y)
                .collect();
            let (m, l, h) = median(r);
            format!("; / avx2 {m:.3} [{l:.3}-{h:.3}]")
        });
        println!("  {name:32} {med:7.2} GFLOP/s [{lo:.2}-{hi:.2}]{vs}");
    }
}
