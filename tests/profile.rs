//! The stage profile of the forward pass (`Session::set_profiling`,
//! `meki-run --profile`) on the shipped MeKi model: it counts what ran, its
//! times fit inside the wall clock, and it changes no result.

use meki::model::forward::Logits;
use meki::model::profile::Stage;
use meki::model::{KvType, MekiSource, Model, Session};
use std::path::PathBuf;
use std::time::Instant;

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

#[test]
fn profile_counts_calls_fits_the_wall_clock_and_changes_no_logits() {
    let model = Model::open_with(shipped("meki-small.gguf"), &MekiSource::Auto, 2).unwrap();
    assert!(model.meki.is_some());
    let prompt = [1u32, 400, 17, 9, 3000];
    let steps = [12u32, 77, 5, 901];

    let run = |profile: bool| {
        let mut s = Session::new(&model, 64, KvType::F16);
        s.set_profiling(profile);
        let t0 = Instant::now();
        let mut logits = vec![s.forward(&prompt, Logits::Last).unwrap()];
        for &t in &steps {
            logits.push(s.forward(&[t], Logits::Last).unwrap());
        }
        // Switched off: the next call is not counted.
        s.set_profiling(false);
        let wall = t0.elapsed().as_secs_f64();
        s.forward(&[8], Logits::Last).unwrap();
        let profiles = (s.batch_profile().cloned(), s.decode_profile().cloned());
        (logits, wall, profiles)
    };

    let (plain, _, (none_b, none_d)) = run(false);
    assert!(none_b.is_none() && none_d.is_none());
    let (timed, wall, (batch, decode)) = run(true);
    assert_eq!(plain, timed, "profiling changed the logits");

    let (batch, decode) = (batch.unwrap(), decode.unwrap());
    assert_eq!((batch.calls, batch.tokens), (1, prompt.len() as u64));
    assert_eq!(
        (decode.calls, decode.tokens),
        (steps.len() as u64, steps.len() as u64)
    );
    let total = batch.total_secs() + decode.total_secs();
    assert!(
        total > 0.0 && total <= wall,
        "stages {total} s, wall {wall} s"
    );
    // The stages that do work were timed, MeKi's among them.
    for st in [
        Stage::Qkv,
        Stage::Attention,
        Stage::FfnIn,
        Stage::MekiMix,
        Stage::Head,
    ] {
        assert!(decode.us_per_call(st) > 0.0, "{st:?} not timed");
    }
    let report = decode.report("decode");
    assert!(
        report.starts_with("profile decode: 4 calls, 4 tokens"),
        "{report}"
    );
    for st in Stage::ALL {
        assert!(report.contains(st.name()), "{report}");
    }
}

#[test]
fn meki_run_prints_the_profile_on_request() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meki-run"))
        .args(["-m", shipped("meki-small.gguf").to_str().unwrap()])
        .args([
            "-p",
            "Once upon a time",
            "-n",
            "6",
            "--temp",
            "0",
            "-t",
            "1",
        ])
        .args(["--ignore-eos", "--profile"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("profile prompt: 1 calls"), "{err}");
    assert!(err.contains("profile decode: 5 calls, 5 tokens"), "{err}");
    assert!(err.contains("meki_mix"), "{err}");
}
