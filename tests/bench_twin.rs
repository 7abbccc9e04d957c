//! `meki-bench twin` end to end on the shipped pair, tiny settings: decode
//! and prefill rounds, with the tables evicted from the page cache (the
//! `--cold` path reads rows back from the file), and its refusals.

use meki::bench::twin::{paired_speed_ratio, run, TwinOptions};
use std::path::PathBuf;

fn models() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    (dir.join("meki-small.gguf"), dir.join("dense-small.gguf"))
}

fn options(meki: PathBuf, dense: PathBuf) -> TwinOptions {
    TwinOptions {
        meki,
        dense,
        threads: 2,
        tokens: 3,
        block: 2,
        rounds: 2,
        cold: true,
        prompt: 5,
        prompt_block: 0,
        reload: true,
        cpu_time: false,
        profile: false,
    }
}

#[test]
fn twin_runs_decode_and_prefill_with_cold_tables() {
    let (meki, dense) = models();
    // Models reloaded every round in rotated orders, and loaded once.
    // The prompt in one call, and in calls of 2 tokens (3 calls: 2 + 2 + 1).
    // Timed by the wall clock and by CPU time, the second also by stages.
    for (reload, prompt_block, cpu_time) in [(true, 0, false), (false, 2, true)] {
        let mut o = options(meki.clone(), dense.clone());
        o.reload = reload;
        o.prompt_block = prompt_block;
        o.cpu_time = cpu_time;
        o.profile = cpu_time;
        o.rounds = 3;
        run(&o).unwrap();
    }
}

#[test]
fn twin_refuses_swapped_models_and_zero_counts() {
    let (meki, dense) = models();
    let err = run(&options(dense.clone(), meki.clone())).unwrap_err();
    assert!(err.contains("no MeKi memory"), "{err}");
    let mut o = options(meki, dense);
    o.rounds = 0;
    assert!(run(&o).unwrap_err().contains("positive"));
}

#[test]
fn block_ratio_is_a_paired_median_that_ignores_spoiled_blocks() {
    // Block times (s): the first model takes 2% longer than the second in
    // every block, and one block of each was hit by other work.
    let meki = [1.02, 1.02, 5.0, 1.02, 1.02, 1.02, 1.02];
    let dense = [1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0];
    let (m, q1, q3) = paired_speed_ratio(&meki, &dense);
    assert!((m - 1.0 / 1.02).abs() < 1e-12, "{m}");
    assert!(q1 <= m && m <= q3, "{q1} {m} {q3}");
    // Speed ratio, not time ratio: the faster model's ratio is above 1.
    let (m, _, _) = paired_speed_ratio(&dense[..2], &meki[..2]);
    assert!((m - 1.02).abs() < 1e-12, "{m}");
    assert!(paired_speed_ratio(&[], &[]).0.is_nan());
}
