//! MeKi projections stored in Q5_0 (what k-quant files give W_out: its rows
//! of d_mem values are no multiple of 256) are widened at load to Q8_0
//! blocks of the same values and repacked (`Placement::WidenQ8_0`): the
//! logits equal those of the plain Q5_0 kernels (`MEKI_REPACK=0`) up to the
//! order of float additions. The loader reads `MEKI_REPACK` from the
//! environment (process-wide), so this file holds one test.

use meki::convert::{convert_checkpoint, CheckpointOptions};
use meki::kernels::formats::GgmlType;
use meki::model::forward::Logits;
use meki::model::{KvType, MekiSource, Model, Session};
use std::path::PathBuf;

fn logits(model: &Model) -> Vec<f32> {
    let mut s = Session::new(model, 64, KvType::F32);
    let mut out = s.forward(&[1, 7, 42, 250, 5, 9], Logits::All).unwrap();
    out.extend(s.forward(&[11], Logits::Last).unwrap());
    out
}

#[test]
fn q5_0_projections_widened_to_q8_0_give_the_plain_kernels_logits() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("meki_widen");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("q5_0_proj.gguf");
    convert_checkpoint(&CheckpointOptions {
        input: root.join("tests/fixtures/meki/hf_demo"),
        output: path.clone(),
        backbone_type: "f32".into(),
        table_type: "f32".into(),
        meki_proj_type: Some(GgmlType::Q5_0),
        tokenizer: None,
        base: None,
        split_tables: false,
        threads: 2,
        meki_dim: None,
        progress: false,
    })
    .unwrap();

    std::env::remove_var("MEKI_REPACK");
    let widened = Model::open_with(&path, &MekiSource::Auto, 2).unwrap();
    let mem = widened.meki.as_ref().unwrap();
    let wide_kernels = meki::kernels::repack::Packed::preferred(
        meki::kernels::isa(),
        GgmlType::Q8_0,
        mem.layers[0].out.rows,
        mem.layers[0].out.cols,
    );
    for layer in &mem.layers {
        for w in [&layer.gate, &layer.out] {
            assert_eq!(w.ty, GgmlType::Q5_0, "the file keeps Q5_0");
            match (&w.packed, wide_kernels) {
                (Some(p), true) => assert_eq!(p.ty(), GgmlType::Q8_0),
                (None, false) => {}
                (p, _) => panic!(
                    "{}: packed {:?}, expected {wide_kernels}",
                    w.name,
                    p.is_some()
                ),
            }
        }
    }
    let a = logits(&widened);

    std::env::set_var("MEKI_REPACK", "0");
    let plain = Model::open_with(&path, &MekiSource::Auto, 2).unwrap();
    assert!(plain.meki.as_ref().unwrap().layers[0].out.packed.is_none());
    let b = logits(&plain);
    std::env::remove_var("MEKI_REPACK");

    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-5 * scale,
        "widened vs plain Q5_0 logits: max |diff| {worst} (max |logit| {scale})"
    );
    std::fs::remove_dir_all(&dir).ok();
}
