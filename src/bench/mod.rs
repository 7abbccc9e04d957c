//! Benchmarks behind `meki-bench` (the binary only parses arguments).
//!
//! - [`kernels`]: matrix-vector / matrix-matrix kernels per weight format and
//!   shape against the machine's measured memory bandwidth and FMA peak, the
//!   thread-pool dispatch overhead (ours vs rayon), and a side-by-side run of
//!   llama.cpp's `test-backend-ops perf -o MUL_MAT`.
//! - [`twin`]: decode speed of a MeKi model against its dense twin and
//!   itself with `--no-meki`, alternating in one process.

pub mod kernels;
pub mod twin;

use std::time::{Duration, Instant};

/// Median seconds per call of `f`, after one warm-up call, repeating until
/// `min_time` has passed (at least `min_reps` timed calls).
pub fn time_median(min_time: Duration, min_reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_reps || start.elapsed() < min_time {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 10_000 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
