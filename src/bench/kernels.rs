//! `meki-bench kernels`: decode (matvec) and prefill (matmul) throughput per
//! weight format and shape, with the references measured in the same run:
//! memory bandwidth (multi-threaded read of a buffer far larger than the
//! LLC), peak FMA throughput, and thread-pool dispatch overhead.

use super::time_median;
use crate::kernels::formats::GgmlType;
use crate::kernels::matmul::matmul_with;
use crate::kernels::repack::{self, Packed};
use crate::kernels::{peak, Isa, ThreadPool};
use crate::model::arena::{huge_pages_wanted, Arena, ArenaPlan};
use half::{bf16, f16};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Options {
    pub threads: usize,
    pub formats: Vec<GgmlType>,
    pub shapes: Vec<(usize, usize)>,
    pub quick: bool,
    pub prefill_tokens: usize,
    pub isa: Isa,
    pub vs_llama: Option<std::path::PathBuf>,
    /// Time by the CPU time of this process's threads (divided by the thread
    /// count) instead of the wall clock: for A/B runs on a loaded machine.
    pub cpu_time: bool,
    /// Skip the reference measurements (bandwidth, FMA peak, dispatch).
    pub no_refs: bool,
    /// Alternating rounds of llama.cpp / meki timings in `--vs-llama`.
    pub vs_llama_rounds: usize,
    /// Skip the engine-path rows (weights repacked, see [`engine_packs`]).
    pub no_packed: bool,
}

/// Whether the engine repacks `rows x cols` weights of `ty` at load
/// (`Packed::preferred`: Q4_0, Q4_K, Q6_K and Q8_0 on AVX2): then what it runs is
/// the packed kernels, which `meki-bench kernels` times too (`:pk` rows).
pub fn engine_packs(o: &Options, ty: GgmlType, rows: usize, cols: usize) -> bool {
    !o.no_packed && Packed::preferred(o.isa, ty, rows, cols)
}

/// CPU seconds used by all threads of this process so far (Linux
/// `/proc/self/task/*/schedstat`, nanoseconds), if readable.
pub fn process_cpu_seconds() -> Option<f64> {
    let mut ns = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let p = e.ok()?.path().join("schedstat");
        let t = std::fs::read_to_string(p).ok()?;
        ns += t.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

pub const DEFAULT_SHAPES: [(usize, usize); 7] = [
    (1024, 1024),
    (1024, 3072),
    (3072, 1024),
    (2048, 2048),
    (2048, 6144),
    (6144, 2048),
    (151936, 1024),
];

pub const DEFAULT_FORMATS: [GgmlType; 11] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// Parses `q4_0`, `Q4_K`, `f16`... (case-insensitive ggml names).
pub fn parse_format(s: &str) -> Result<GgmlType, String> {
    DEFAULT_FORMATS
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| format!("unknown weight format {s:?} (one of q4_0 q4_1 q5_0 q5_1 q8_0 q4_K q5_K q6_K f16 bf16 f32)"))
}

/// Parses `ROWSxCOLS`.
pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (r, c) = s
        .trim()
        .split_once('x')
        .ok_or_else(|| format!("shape {s:?} is not ROWSxCOLS"))?;
    let p = |v: &str| v.parse::<usize>().map_err(|e| format!("shape {s:?}: {e}"));
    Ok((p(r)?, p(c)?))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Random weights: random quants, finite scales (speed does not depend on
/// the values, but NaN/denormal floats could).
pub fn random_weights(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let n = ty
        .row_bytes(cols as u64)
        .expect("cols is a whole number of blocks") as usize
        * rows;
    let mut v = vec![0u8; n];
    for c in v.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        c.copy_from_slice(&r[..c.len()]);
    }
    let scale = |rng: &mut Rng| f16::from_f32(0.01 * (1.0 + rng.unit())).to_le_bytes();
    let bs = ty.type_size();
    for b in v.chunks_exact_mut(bs) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                b[0..2].copy_from_slice(&scale(&mut rng))
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => {
                b[0..2].copy_from_slice(&scale(&mut rng));
                b[2..4].copy_from_slice(&scale(&mut rng));
            }
            GgmlType::Q6K => b[208..210].copy_from_slice(&scale(&mut rng)),
            GgmlType::F16 => b.copy_from_slice(&f16::from_f32(rng.unit()).to_le_bytes()),
            GgmlType::BF16 => b.copy_from_slice(&bf16::from_f32(rng.unit()).to_le_bytes()),
            GgmlType::F32 => b.copy_from_slice(&rng.unit().to_le_bytes()),
            _ => {}
        }
    }
    v
}

/// Multi-threaded read bandwidth in GB/s: the best of several passes over a
/// buffer of `bytes` (which should be far larger than the last-level
/// cache), each thread reading its share in one, two or four sequential
/// streams side by side with the machine's vector loads
/// ([`peak::read_sum`]). Until s19 it read one stream with scalar adds,
/// which one core of the s19 EPYC (Zen 5) ran at 33-35 GB/s against 41 in
/// two AVX2 streams, less than the decode kernels themselves read.
///
/// The buffer is a weight arena like the engine's (2 MiB aligned, advised
/// huge pages unless `MEKI_HUGEPAGES=0`), so the probe reads memory the way
/// decode reads its repacked and copied matrices. (On 4 KiB pages, until
/// s17, it paid TLB misses, dear under a VM's nested paging, and
/// prefetcher stops at every page that decode does not, and read less than
/// decode itself.) NaN when the buffer cannot be allocated.
pub fn memory_bandwidth(pool: &ThreadPool, bytes: usize, passes: usize) -> f64 {
    let mut plan = ArenaPlan::default();
    let Ok(range) = plan.push(bytes / 64 * 64) else {
        return f64::NAN;
    };
    let Ok(mut arena) = Arena::allocate(&plan, huge_pages_wanted(), "bandwidth probe") else {
        return f64::NAN;
    };
    if let Ok(mut parts) = arena.split_mut(&plan) {
        for (i, w) in parts[0].chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&(i as u64).to_le_bytes());
        }
    }
    let buf = &arena.as_ref()[range];
    let isa = Isa::detect();
    let nt = pool.n_threads();
    let mut best = 0f64;
    for streams in [1, 2, 4] {
        for _ in 0..passes {
            let sums: Vec<std::sync::atomic::AtomicU64> =
                (0..nt).map(|_| Default::default()).collect();
            let t = Instant::now();
            pool.run(&|tid, n| {
                // Whole lines per thread.
                let chunk = (buf.len() / 64).div_ceil(n) * 64;
                let part = &buf[(tid * chunk).min(buf.len())..((tid + 1) * chunk).min(buf.len())];
                let total = peak::read_sum(isa, part, streams);
                sums[tid].store(total, std::sync::atomic::Ordering::Relaxed);
            });
            let dt = t.elapsed().as_secs_f64();
            std::hint::black_box(&sums);
            best = best.max(buf.len() as f64 / dt / 1e9);
        }
    }
    best
}

/// Peak f32 FLOP/s of all pool threads running independent FMA loops.
pub fn fma_peak(pool: &ThreadPool, isa: Isa) -> f64 {
    let iters = 20_000_000;
    let per_thread = peak::fma_loop(isa, iters);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        pool.run(&|_, _| {
            peak::fma_loop(isa, iters);
        });
        let dt = t.elapsed().as_secs_f64();
        best = best.max(per_thread * pool.n_threads() as f64 / dt);
    }
    best
}

/// About `units` x 0.4 µs of dependent arithmetic (a stand-in for a chunk of
/// a small matrix-vector product).
fn busy_work(units: usize) -> u64 {
    let mut v = std::hint::black_box(1u64);
    for _ in 0..units * 400 {
        v = v.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(v)
}

/// Dispatch costs in µs per call (median, mean), see [`dispatch_overhead`].
pub struct Dispatch {
    pub pool_empty: (f64, f64),
    pub pool_chunks: (f64, f64),
    pub rayon_empty: (f64, f64),
    pub rayon_chunks: (f64, f64),
}

/// µs per call (median, mean) of: an empty job on every thread (our
/// `ThreadPool::run`, rayon's `broadcast`), and 32 items of ~0.4 µs spread
/// over the threads (our `run_chunks`, a rayon parallel iterator), the
/// latter minus the time one thread needs for the same work. With `hogs`,
/// that many threads spin at the same time (an oversubscribed machine).
pub fn dispatch_overhead(threads: usize, calls: usize, hogs: usize) -> Dispatch {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for _ in 0..hogs {
            sc.spawn(|| {
                while !stop.load(Relaxed) {
                    busy_work(10);
                }
            });
        }
        let hits = AtomicUsize::new(0);
        let measure = |f: &dyn Fn()| {
            for _ in 0..calls / 20 + 1 {
                f();
            }
            let mut t = Vec::with_capacity(calls);
            for _ in 0..calls {
                let s = Instant::now();
                f();
                t.push(s.elapsed().as_secs_f64() * 1e6);
            }
            let mean = t.iter().sum::<f64>() / calls as f64;
            t.sort_by(f64::total_cmp);
            (t[calls / 2], mean)
        };
        let serial = measure(&|| {
            (0..32).for_each(|_| {
                busy_work(1);
            })
        });
        let minus =
            |(a, b): (f64, f64)| (a - serial.0 / threads as f64, b - serial.1 / threads as f64);
        let pool = ThreadPool::new(threads);
        let pool_empty = measure(&|| {
            pool.run(&|_, _| {
                hits.fetch_add(1, Relaxed);
            })
        });
        let pool_chunks = minus(measure(&|| {
            pool.run_chunks(32, &|_| {
                busy_work(1);
            })
        }));
        drop(pool);
        let rp = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        let rayon_empty = measure(&|| {
            rp.broadcast(|_| hits.fetch_add(1, Relaxed));
        });
        let rayon_chunks = minus(measure(&|| {
            rp.install(|| {
                (0..32).into_par_iter().for_each(|_| {
                    busy_work(1);
                })
            })
        }));
        stop.store(true, Relaxed);
        Dispatch {
            pool_empty,
            pool_chunks,
            rayon_empty,
            rayon_chunks,
        }
    })
}

/// The input of a timing: `n_tokens x cols` values in [-1, 1).
fn bench_input(n_tokens: usize, cols: usize) -> Vec<f32> {
    let mut rng = Rng(0x5eed);
    (0..n_tokens * cols).map(|_| rng.unit()).collect()
}

/// One timing of `rows x cols` weights of `ty` against `n_tokens` tokens
/// through the plain row kernels (activations quantized in the call):
/// seconds per call.
pub fn time_matmul(
    o: &Options,
    pool: &ThreadPool,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    n_tokens: usize,
) -> f64 {
    let xs = bench_input(n_tokens, cols);
    let mut ys = vec![0f32; n_tokens * rows];
    time_calls(o, pool, n_tokens, &mut || {
        matmul_with(o.isa, pool, w, ty, rows, cols, n_tokens, &xs, &mut ys).expect("matmul");
    })
}

/// [`time_matmul`] on the engine path: the repacked matrix `p`, the input
/// quantized and prepared in pieces over the pool as the engine does
/// (`model/ops.rs`), then `repack::matmul`.
pub fn time_packed(o: &Options, pool: &ThreadPool, p: &Packed, n_tokens: usize) -> f64 {
    let (rows, cols, rb) = (p.rows(), p.cols(), p.act_row_bytes());
    let xs = bench_input(n_tokens, cols);
    let mut ys = vec![0f32; n_tokens * rows];
    let mut acts = vec![0u8; n_tokens * rb];
    let per = n_tokens.div_ceil(4 * pool.n_threads()).max(1);
    time_calls(o, pool, n_tokens, &mut || {
        pool.run_chunks_mut(&mut acts, per * rb, &|piece, out| {
            let first = piece * per;
            let x = &xs[first * cols..(first + out.len() / rb) * cols];
            p.prepare_rows(o.isa, x, out).expect("prepare input");
        });
        repack::matmul(o.isa, pool, p, n_tokens, &acts, &mut ys).expect("packed matmul");
    })
}

/// Seconds per `call` (median of wall-clock timings, or CPU time per
/// thread with `--cpu-time`).
fn time_calls(o: &Options, pool: &ThreadPool, n_tokens: usize, call: &mut dyn FnMut()) -> f64 {
    let (min_time, reps) = if o.quick { (0.15, 3) } else { (0.5, 5) };
    let (min_time, reps) = if n_tokens > 1 {
        (min_time, 1)
    } else {
        (min_time, reps)
    };
    if o.cpu_time {
        if let Some(c0) = process_cpu_seconds() {
            call();
            let (c0, t0) = (process_cpu_seconds().unwrap_or(c0), Instant::now());
            let mut n = 0;
            while n < reps || t0.elapsed().as_secs_f64() < min_time {
                call();
                n += 1;
            }
            let c1 = process_cpu_seconds().unwrap_or(c0);
            return (c1 - c0) / n as f64 / pool.n_threads() as f64;
        }
    }
    time_median(Duration::from_secs_f64(min_time), reps, call)
}

pub fn run(o: &Options) -> Result<(), String> {
    if !o.isa.is_available() {
        return Err(format!(
            "kernel family {} is not available on this CPU",
            o.isa
        ));
    }
    let pool = ThreadPool::new(o.threads);
    println!(
        "# meki-bench kernels: {} threads, kernels {}",
        o.threads, o.isa
    );
    let bw_bytes = if o.quick { 512 << 20 } else { 2048 << 20 };
    if o.no_refs {
        println!("(reference measurements skipped)");
        return table(o, &pool, f64::NAN, f64::NAN);
    }
    let bw = memory_bandwidth(&pool, bw_bytes, if o.quick { 3 } else { 5 });
    println!(
        "memory read bandwidth ({} MiB buffer, {} threads): {bw:.1} GB/s",
        bw_bytes >> 20,
        o.threads
    );
    let peak = fma_peak(&pool, o.isa);
    println!(
        "peak f32 FMA throughput ({} threads): {:.1} GFLOP/s",
        o.threads,
        peak / 1e9
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for hogs in [0, cores] {
        let calls = if hogs > 0 {
            300
        } else if o.quick {
            2000
        } else {
            20000
        };
        let d = dispatch_overhead(o.threads, calls, hogs);
        println!(
            "dispatch per call, µs median / mean ({}): empty job: meki {:.2} / {:.2}, rayon broadcast {:.2} / {:.2}; \
             32 x 0.4 µs items (overhead over a perfect split): meki run_chunks {:.2} / {:.2}, rayon par_iter {:.2} / {:.2}",
            if hogs == 0 { "idle".to_string() } else { format!("{hogs} busy threads beside") },
            d.pool_empty.0,
            d.pool_empty.1,
            d.rayon_empty.0,
            d.rayon_empty.1,
            d.pool_chunks.0,
            d.pool_chunks.1,
            d.rayon_chunks.0,
            d.rayon_chunks.1
        );
    }
    table(o, &pool, bw, peak)
}

/// The timed weights `w` (`rows x cols` of `ty`) in a weight arena like the
/// engine's (2 MiB aligned, huge pages unless `MEKI_HUGEPAGES=0`): the plain
/// rows, and with `pack` the repacked groups beside them. On the heap's 4
/// KiB pages the large shapes paid TLB misses that the engine's decode does
/// not (s22: the 151936x1024 head ran 20.9 GB/s packed Q4_0 from the heap
/// while the engine's layers read 27-28).
struct BenchWeights {
    arena: Arc<Arena>,
    plain: std::ops::Range<usize>,
    packed: Option<Packed>,
}

impl BenchWeights {
    fn plain(&self) -> &[u8] {
        &AsRef::<[u8]>::as_ref(&*self.arena)[self.plain.clone()]
    }
}

fn weights_in_arena(
    w: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
    pack: bool,
) -> Result<BenchWeights, String> {
    let mut plan = ArenaPlan::default();
    let plain = plan.push(w.len())?;
    let packed = if pack {
        let len = Packed::byte_len(ty, rows, cols).map_err(|e| format!("repacking {ty}: {e}"))?;
        Some(plan.push(len)?)
    } else {
        None
    };
    let mut arena = Arena::allocate(&plan, huge_pages_wanted(), "kernel bench weights")?;
    {
        let mut parts = arena.split_mut(&plan)?;
        parts[0].copy_from_slice(w);
        if packed.is_some() {
            Packed::fill_into(ty, rows, cols, parts[1], 0, w)
                .map_err(|e| format!("repacking {ty}: {e}"))?;
        }
    }
    let arena = Arc::new(arena);
    let packed = match packed {
        Some(r) => Some(
            Packed::from_shared(ty, rows, cols, arena.clone(), r.start)
                .map_err(|e| format!("repacking {ty}: {e}"))?,
        ),
        None => None,
    };
    Ok(BenchWeights {
        arena,
        plain,
        packed,
    })
}

/// The label of a row: the format's name, plus `:pk` on the engine path
/// (repacked weights).
fn row_label(ty: GgmlType, packed: bool) -> String {
    format!("{}{}", ty.name(), if packed { ":pk" } else { "" })
}

fn table(o: &Options, pool: &ThreadPool, bw: f64, peak: f64) -> Result<(), String> {
    if o.cpu_time {
        println!("(times are CPU time per thread, not wall clock)");
    }
    let packs_any = o.formats.iter().any(|&ty| {
        o.shapes
            .iter()
            .any(|&(r, c)| c % ty.block_size() == 0 && engine_packs(o, ty, r, c))
    });
    if packs_any {
        println!(
            "(FORMAT rows: the plain row kernels, what llama.cpp's test-backend-ops measures; \
             FORMAT:pk rows: the engine path for the formats it repacks at load, 8-row \
             interleaved groups, input quantization included in both)"
        );
    }
    println!();
    println!(
        "{:<7} {:>13} {:>10} {:>9} {:>9} {:>7} | {:>10} {:>9} {:>7}",
        "format", "shape", "decode µs", "GB/s", "GFLOP/s", "%BW", "prefill ms", "GFLOP/s", "%peak"
    );
    for &ty in &o.formats {
        for &(rows, cols) in &o.shapes {
            if cols % ty.block_size() != 0 {
                println!(
                    "{:<7} {rows}x{cols}: cols not a multiple of {}",
                    ty.name(),
                    ty.block_size()
                );
                continue;
            }
            let raw = random_weights(ty, rows, cols, (rows * 31 + cols) as u64);
            let weights = weights_in_arena(&raw, ty, rows, cols, engine_packs(o, ty, rows, cols))?;
            drop(raw);
            let (w, packed) = (weights.plain(), &weights.packed);
            let flops = 2.0 * rows as f64 * cols as f64;
            let head = rows * cols > 100_000_000;
            // The plain row, then the engine path's if it repacks.
            for p in std::iter::once(None).chain(packed.as_ref().map(Some)) {
                let time = |n: usize| match p {
                    Some(p) => time_packed(o, pool, p, n),
                    None => time_matmul(o, pool, ty, w, rows, cols, n),
                };
                let t = time(1);
                let gbs = w.len() as f64 / t / 1e9;
                let prefill = if head && o.quick {
                    None
                } else {
                    Some(time(o.prefill_tokens))
                };
                let pf = prefill
                    .map(|tp| {
                        let g = flops * o.prefill_tokens as f64 / tp;
                        format!(
                            "{:>10.2} {:>9.1} {:>6.1}%",
                            tp * 1e3,
                            g / 1e9,
                            100.0 * g / peak
                        )
                    })
                    .unwrap_or_else(|| format!("{:>10} {:>9} {:>7}", "-", "-", "-"));
                println!(
                    "{:<7} {:>13} {:>10.1} {:>9.1} {:>9.1} {:>6.1}% | {pf}",
                    row_label(ty, p.is_some()),
                    format!("{rows}x{cols}"),
                    t * 1e6,
                    gbs,
                    flops / t / 1e9,
                    100.0 * gbs / bw,
                );
            }
        }
    }
    if let Some(path) = &o.vs_llama {
        println!();
        vs_llama(o, path)?;
    }
    Ok(())
}

/// The number of CPUs Linux reports online (`/sys/devices/system/cpu/online`,
/// e.g. `0-15` or `0,2-3`), which is what glibc's `get_nprocs` and so
/// libstdc++'s `hardware_concurrency` return, whatever the affinity mask.
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut n = 0;
    for part in text.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?,
            None => 1,
        };
    }
    Some(n)
}

/// The threads test-backend-ops gives its CPU backend:
/// `hardware_concurrency() / 2`, i.e. half the online CPUs, or half of twice
/// the allowed CPUs when `tools/affinity_nprocs.c` is preloaded.
fn llama_test_threads(allowed: usize) -> usize {
    let shim = std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("affinity_nprocs"));
    let cpus = if shim {
        2 * allowed
    } else {
        online_cpus().unwrap_or(allowed)
    };
    (cpus / 2).max(1)
}

/// Runs llama.cpp's `test-backend-ops perf -o MUL_MAT` for our formats (its
/// perf cases are m=4096, k=14336 with n = 1 and 512 tokens here) and the
/// same products with our kernels, side by side, and prints the ratio. Both
/// sides run the thread count test-backend-ops picks (it has no option for
/// it); when that exceeds the CPUs `taskset` allows, llama.cpp's spinning
/// threads would share cores, so the comparison is refused unless
/// `tools/affinity_nprocs.c` is preloaded.
pub fn vs_llama(o: &Options, exe: &std::path::Path) -> Result<(), String> {
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    let llama_threads = llama_test_threads(allowed);
    if llama_threads > allowed {
        return Err(format!(
            "test-backend-ops would run {llama_threads} threads (half the machine's {} online CPUs) \
             on the {allowed} CPU(s) this process may use, an unfair comparison: build the shim with \
             `tools/llamacpp.sh shim` and run with LD_PRELOAD=target/ext/affinity_nprocs.so",
            2 * llama_threads
        ));
    }
    let pool = ThreadPool::new(llama_threads);
    let names: Vec<String> = o
        .formats
        .iter()
        // test-backend-ops spells types as ggml does: q4_0, q4_K, f16.
        .map(|t| t.name().to_ascii_lowercase().replace("_k", "_K"))
        .collect();
    let filter = format!(
        "type_a=({}),type_b=f32,m=4096,n=(1|{}),k=14336,",
        names.join("|"),
        512
    );
    // Rounds alternate llama.cpp and meki; each side keeps its best time, so a
    // burst of load from other processes hurts neither side more.
    let rounds = o.vs_llama_rounds.max(1);
    // (format, n, llama µs, meki plain µs, meki engine-path µs if repacked)
    let mut rows_seen: Vec<(GgmlType, usize, f64, f64, Option<f64>)> = Vec::new();
    for _ in 0..rounds {
        let out = std::process::Command::new(exe)
            .args(["perf", "-o", "MUL_MAT", "-b", "CPU", "-p", &filter])
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                exe.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut last_w: Option<(GgmlType, Vec<u8>, Option<Packed>)> = None;
        for line in text.lines().filter(|l| l.contains("MUL_MAT(")) {
            let field = |key: &str| -> Option<&str> {
                let i = line.find(key)? + key.len();
                line[i..].split([',', ')']).next()
            };
            let (Some(ta), Some(n)) = (field("type_a="), field(",n=")) else {
                continue;
            };
            let Some(us) = line
                .split(" us/run")
                .next()
                .and_then(|s| s.rsplit(' ').next())
                .and_then(|s| s.parse::<f64>().ok())
            else {
                continue;
            };
            let (Ok(ty), Ok(n)) = (parse_format(ta), n.parse::<usize>()) else {
                continue;
            };
            let (rows, cols) = (4096, 14336);
            if last_w.as_ref().map(|l| l.0) != Some(ty) {
                // On the heap, as test-backend-ops holds its weights (not
                // in a huge-page arena as the table above).
                let w = random_weights(ty, rows, cols, 77);
                let p = if engine_packs(o, ty, rows, cols) {
                    Some(
                        Packed::new(ty, &w, rows, cols)
                            .map_err(|e| format!("repacking {ty}: {e}"))?,
                    )
                } else {
                    None
                };
                last_w = Some((ty, w, p));
            }
            let (_, w, packed) = last_w.as_ref().expect("set above");
            let t = time_matmul(o, &pool, ty, w, rows, cols, n) * 1e6;
            let tp = packed.as_ref().map(|p| time_packed(o, &pool, p, n) * 1e6);
            match rows_seen.iter_mut().find(|r| r.0 == ty && r.1 == n) {
                Some(r) => {
                    r.2 = r.2.min(us);
                    r.3 = r.3.min(t);
                    r.4 = r.4.zip(tp).map(|(a, b)| a.min(b));
                }
                None => rows_seen.push((ty, n, us, t, tp)),
            }
        }
    }
    println!(
        "# vs llama.cpp test-backend-ops (both {llama_threads} thread(s), m=4096 k=14336, best of {rounds} alternating rounds)"
    );
    if rows_seen.iter().any(|r| r.4.is_some()) {
        println!(
            "(meki: the plain row kernels, as test-backend-ops runs llama.cpp's; engine: \
             meki's engine path, repacked weights, for the formats it repacks at load)"
        );
    }
    println!(
        "{:<7} {:>5} {:>12} {:>12} {:>7} {:>13} {:>7}",
        "format", "n", "llama µs/run", "meki µs/run", "ratio", "engine µs/run", "ratio"
    );
    for (ty, n, us, t, tp) in rows_seen {
        let engine = match tp {
            Some(tp) => format!("{:>13.1} {:>6.2}x", tp, us / tp),
            None => format!("{:>13} {:>7}", "-", "-"),
        };
        println!(
            "{:<7} {:>5} {:>12.1} {:>12.1} {:>6.2}x {engine}",
            ty.name(),
            n,
            us,
            t,
            us / t
        );
    }
    Ok(())
}
