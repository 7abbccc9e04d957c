//! The weight arena (src/model/arena.rs): packed matrices whose bytes live
//! in an arena equal Vec-backed ones byte for byte and product for product,
//! and a model gives bit-identical logits with huge pages advised or not and
//! with its output head copied into the arena or read from the map; MeKi's
//! projections sit in the backbone's arena right after their FFN matrices.
//!
//! The loader reads its knobs from the environment, which is process-wide:
//! the model test sets them in one test, one configuration after another.

use meki::kernels::formats::{self, GgmlType};
use meki::kernels::repack::{self, Packed, SharedRegion};
use meki::kernels::ThreadPool;
use meki::model::arena::{Arena, ArenaPlan};
use meki::model::forward::Logits;
use meki::model::{KvType, MekiSource, Model, Session};
use meki::quant::synth::{ModelSpec, SplitMix64};
use std::sync::Arc;

/// A `rows x cols` matrix of `ty`, quantized from random values.
fn random_matrix(rng: &mut SplitMix64, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut out = vec![0u8; rows * rb];
    let mut x = vec![0f32; cols];
    for row in out.chunks_exact_mut(rb) {
        x.iter_mut().for_each(|v| *v = rng.normalish());
        formats::quantize_row(ty, &x, row).unwrap();
    }
    out
}

#[test]
fn arena_backed_packed_equals_vec_backed() {
    let mut rng = SplitMix64(7);
    let shapes = [
        (GgmlType::Q4_0, 24, 96),
        (GgmlType::Q8_0, 40, 64),
        (GgmlType::Q4K, 16, 512),
    ];
    let mats: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(ty, r, c)| random_matrix(&mut rng, ty, r, c))
        .collect();
    let mut plan = ArenaPlan::default();
    for &(ty, r, c) in &shapes {
        plan.push(Packed::byte_len(ty, r, c).unwrap()).unwrap();
    }
    let mut arena = Arena::allocate(&plan, true, "test").unwrap();
    for ((&(ty, r, c), w), dst) in shapes
        .iter()
        .zip(&mats)
        .zip(arena.split_mut(&plan).unwrap())
    {
        // Two pieces, the second first, as the loader reads big matrices.
        let rb = w.len() / r;
        Packed::fill_into(ty, r, c, dst, 8, &w[8 * rb..]).unwrap();
        Packed::fill_into(ty, r, c, dst, 0, &w[..8 * rb]).unwrap();
    }
    let region: SharedRegion = Arc::new(arena);
    let isa = meki::kernels::isa();
    let pool = ThreadPool::new(2);
    for ((&(ty, r, c), w), range) in shapes.iter().zip(&mats).zip(plan.ranges()) {
        let owned = Packed::new(ty, w, r, c).unwrap();
        let mut shared = Packed::from_shared(ty, r, c, region.clone(), range.start).unwrap();
        assert!(shared.is_shared() && !owned.is_shared());
        assert_eq!(shared.bytes(), owned.bytes(), "{ty}");
        assert_eq!(
            shared.bytes().as_ptr() as usize % 64,
            0,
            "{ty}: 64-byte aligned"
        );
        for n in [1, 5] {
            let x: Vec<f32> = (0..n * c).map(|_| rng.normalish()).collect();
            let mut acts = Vec::new();
            owned.prepare_input(isa, &x, n, &mut acts).unwrap();
            let (mut y0, mut y1) = (vec![0f32; n * r], vec![1f32; n * r]);
            repack::matmul(isa, &pool, &owned, n, &acts, &mut y0).unwrap();
            repack::matmul(isa, &pool, &shared, n, &acts, &mut y1).unwrap();
            let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y0), bits(&y1), "{ty} x {n} tokens");
        }
        // Shared matrices are read-only; a range past the region is refused.
        assert!(shared.fill(0, &w[..8 * (w.len() / r)]).is_err());
        assert!(Packed::from_shared(ty, r, c, region.clone(), plan.len() - 1).is_err());
    }
}

/// Logits of a prompt and two decode steps; checks on the way that
/// `forward_into` with one reused buffer (as the decode loops call it: of
/// another size, then of the right size holding the last step's logits)
/// gives the same logits as `forward`.
fn run(model: &Model) -> Vec<u32> {
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut s = Session::new(model, 64, KvType::F32);
    let mut reused = Session::new(model, 64, KvType::F32);
    let mut buf = vec![f32::NAN; 3];
    let mut out = Vec::new();
    for (tokens, want) in [
        (&[1, 7, 42, 300, 5, 9][..], Logits::All),
        (&[11][..], Logits::Last),
        (&[12][..], Logits::Last),
    ] {
        let logits = s.forward(tokens, want).unwrap();
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{tokens:?}: logits not finite"
        );
        reused.forward_into(tokens, want, &mut buf).unwrap();
        assert_eq!(bits(&buf), bits(&logits), "forward_into {tokens:?}");
        out.extend(logits);
    }
    bits(&out)
}

fn set(knobs: &[(&str, &str)]) {
    for (k, v) in knobs {
        std::env::set_var(k, v);
    }
}

#[test]
fn logits_do_not_depend_on_arena_knobs() {
    let dir = std::env::temp_dir().join(format!("meki-arena-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Q8_0 / Q4_0 layers are repacked on AVX2 (the copy knob then moves
    // nothing; elsewhere it moves them), F16 layers never are.
    let mut heads_repacked = 0;
    for (ty, tied) in [
        (GgmlType::Q8_0, true),
        (GgmlType::Q4_0, false),
        (GgmlType::F16, true),
    ] {
        let spec = ModelSpec {
            n_layer: 2,
            output: !tied,
            edge_cases: false,
            ..ModelSpec::golden()
        };
        let path = dir.join(format!("{ty}-{tied}.gguf"));
        spec.write(&path, ty).unwrap();
        let mut first: Option<Vec<u32>> = None;
        let on_off = |bit: usize| if bit == 1 { "1" } else { "0" };
        for combo in 0..8 {
            let knobs = [
                ("MEKI_HUGEPAGES", on_off(combo & 1)),
                ("MEKI_COPY_OUTPUT", on_off(combo >> 1 & 1)),
                ("MEKI_COPY_WEIGHTS", on_off(combo >> 2 & 1)),
            ];
            set(&knobs);
            let model = Model::open_with(&path, &MekiSource::Disabled, 2).unwrap();
            let w = &model.weights;
            let map = model.file.as_bytes().as_ptr_range();
            let in_map = |b: &[u8]| map.contains(&b.as_ptr());
            let copied = knobs[1].1 == "1";
            // A head of a type the layers repack is repacked whatever the
            // copy knob (a Q8_0 file's on AVX2), any other copied as it is
            // if the knob says so.
            let (o, isa) = (&w.output, meki::kernels::isa());
            let repacked = Packed::preferred(isa, o.ty, o.rows, o.cols);
            assert_eq!(o.packed.is_some(), repacked, "{knobs:?}");
            heads_repacked += repacked as usize;
            if let Some(p) = &o.packed {
                assert!(p.is_shared(), "a repacked head lives in the arena");
                // Its embedding rows are read from the map.
                assert!(in_map(w.token_embd.bytes(&model.file)));
            } else {
                assert_eq!(!in_map(o.bytes(&model.file)), copied, "{knobs:?}");
                if tied {
                    // The embedding rows come from the same copy.
                    assert_eq!(!in_map(w.token_embd.bytes(&model.file)), copied);
                } else {
                    assert!(in_map(w.token_embd.bytes(&model.file)));
                }
            }
            let copied_layers = knobs[2].1 == "1";
            for lw in &w.layers {
                for m in lw.matrices() {
                    if let Some(p) = &m.packed {
                        assert!(p.is_shared(), "repacked matrices live in the arena");
                    } else {
                        assert_eq!(
                            !in_map(m.bytes(&model.file)),
                            copied_layers,
                            "{ty} {knobs:?}"
                        );
                    }
                }
            }
            let logits = run(&model);
            match &first {
                None => first = Some(logits),
                Some(f) => assert!(*f == logits, "{ty} tied={tied} {knobs:?}: logits differ"),
            }
        }
    }
    if Packed::preferred(meki::kernels::isa(), GgmlType::Q8_0, 8, 32) {
        // Where Q8_0 is repacked, the Q8_0 model's head was too.
        assert!(heads_repacked > 0, "no repacked head was covered");
    }
    set(&[
        ("MEKI_HUGEPAGES", "1"),
        ("MEKI_COPY_OUTPUT", "1"),
        ("MEKI_COPY_WEIGHTS", "1"),
    ]);
    std::fs::remove_dir_all(&dir).ok();
}

/// In-process A/B of decode speed for two loads of one model that differ
/// in an arena knob (the loads read the environment): decode steps run in
/// blocks of 16 alternating between the two, so machine load drifts hit
/// both alike. `MEKI_ARENA_AB_MODEL=path MEKI_ARENA_AB="VAR a b"
/// cargo test --release --test weight_arena -- --ignored --nocapture`
/// (threads: MEKI_ARENA_AB_THREADS, default 1).
#[test]
#[ignore]
fn speed_ab_interleaved() {
    let Ok(path) = std::env::var("MEKI_ARENA_AB_MODEL") else {
        eprintln!("set MEKI_ARENA_AB_MODEL");
        return;
    };
    let spec = std::env::var("MEKI_ARENA_AB").unwrap_or("MEKI_HUGEPAGES 0 1".into());
    let v: Vec<&str> = spec.split_whitespace().collect();
    let threads = std::env::var("MEKI_ARENA_AB_THREADS").map_or(1, |t| t.parse().unwrap());
    let models: Vec<Model> = [v[1], v[2]]
        .iter()
        .map(|val| {
            std::env::set_var(v[0], val);
            Model::open_with(&path, &MekiSource::Disabled, threads).unwrap()
        })
        .collect();
    let mut sessions: Vec<Session> = models
        .iter()
        .map(|m| Session::new(m, 1024, KvType::F16))
        .collect();
    let mut next = [1u32, 1];
    for (s, n) in sessions.iter_mut().zip(&mut next) {
        let l = s.forward(&[1, 2, 3], Logits::Last).unwrap();
        *n = meki::sampler::argmax(&l);
    }
    let (mut secs, mut ratios) = ([0f64; 2], Vec::new());
    for round in 0..8 {
        let mut t = [0f64; 2];
        for _block in 0..4 {
            for (i, s) in sessions.iter_mut().enumerate() {
                let t0 = std::time::Instant::now();
                for _ in 0..16 {
                    let l = s.forward(&[next[i]], Logits::Last).unwrap();
                    next[i] = meki::sampler::argmax(&l);
                }
                t[i] += t0.elapsed().as_secs_f64();
            }
        }
        ratios.push(t[0] / t[1]);
        eprintln!(
            "round {round}: tok/s {}={} {:.2}  {}={} {:.2}  B/A {:.4}",
            v[0],
            v[1],
            64.0 / t[0],
            v[0],
            v[2],
            64.0 / t[1],
            t[0] / t[1]
        );
        secs[0] += t[0];
        secs[1] += t[1];
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "{spec} ({threads} threads): tok/s {:.2} vs {:.2}, B/A speed median {:.4} [{:.4}-{:.4}]",
        512.0 / secs[0],
        512.0 / secs[1],
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

/// MeKi's projections share the backbone's arena, each right after the FFN
/// matrix decode reads before it (W_gate after the up matrix, W_out after
/// the down matrix): one weight stream per layer instead of a jump to an
/// arena of their own.
#[test]
fn meki_projections_follow_their_ffn_matrices() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/meki-small.gguf");
    let model = Model::open_with(&path, &MekiSource::Auto, 1).unwrap();
    let mem = model.meki.as_ref().expect("meki-small has MeKi memory");
    let span = |w: &meki::model::weights::Weight| {
        let b = w.packed.as_ref().expect("repacked").bytes();
        (b.as_ptr() as usize, b.as_ptr() as usize + b.len())
    };
    for (lw, ml) in model.weights.layers.iter().zip(&mem.layers) {
        for (ffn, proj) in [(&lw.ffn_up, &ml.gate), (&lw.ffn_down, &ml.out)] {
            let (_, end) = span(ffn);
            let (start, _) = span(proj);
            // The next 64-byte aligned offset.
            assert!(
                start >= end && start - end < 64,
                "{}: {end:#x} -> {start:#x}",
                proj.name
            );
        }
    }
}
