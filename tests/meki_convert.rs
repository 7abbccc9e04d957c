//! `meki-convert checkpoint` against the numpy reference of
//! tools/meki_reference.py (fixtures in tests/fixtures/meki/, regenerate with
//! `python3 tools/meki_reference.py`).
//!
//! - folded tables: every fixture (HF demo both / HF Megatron-form dynamic-only
//!   bf16 sharded / HF static-only / Megatron torch checkpoint / the same
//!   re-saved by real torch.save with bf16 weights) converted with
//!   `--type f32 --table-type f32` equals the float64 reference fold within
//!   1e-5 absolute + 1e-5 relative (measured: <= 1.6e-6 on values up to 3.5);
//! - backbone logits: the `--split-tables` main file run by the engine equals
//!   the reference forward pass without the MeKi branch (tolerance 1e-4 abs +
//!   1e-5 rel on logits of magnitude ~10, f32 engine vs float64 reference;
//!   measured <= 6e-6); this checks the Megatron QKV/fc1 splits and the rope
//!   permutation for the llama arch;
//! - MeKi logits: the single-file and the sidecar conversions run by the
//!   engine equal the unfolded training form (same tolerance; measured <= 6e-6);
//! - metadata, sidecar identity, --base, quantized outputs and bad checkpoints.

use meki::convert::{convert_checkpoint, CheckpointOptions};
use meki::gguf::{GgufFile, Value};
use meki::kernels::formats::{self, GgmlType};
use meki::meki as mk;
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 5] = [
    "hf_demo",
    "hf_megatron_dynamic",
    "hf_static",
    "megatron",
    "megatron_torch_bf16",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/meki")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("meki_convert")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn opts(input: &Path, output: &Path) -> CheckpointOptions {
    // Megatron checkpoints carry no tokenizer.
    let tokenizer = (!input.join("config.json").is_file()).then(|| fixture("tokenizer"));
    CheckpointOptions {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        backbone_type: "f32".into(),
        table_type: "f32".into(),
        meki_proj_type: None,
        tokenizer,
        base: None,
        split_tables: false,
        threads: 2,
        meki_dim: None,
        progress: false,
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn reference(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ref_ids(name: &str) -> Vec<u32> {
    reference(name)["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// A tensor of the file as f32 (dequantized).
fn tensor_f32(f: &GgufFile, name: &str) -> (Vec<u64>, Vec<f32>) {
    let t = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    let data = f.tensor_data(t).unwrap();
    let ne0 = t.dims[0] as usize;
    let rows = (t.n_elements() as usize) / ne0;
    let rb = t.ggml_type.row_bytes(ne0 as u64).unwrap() as usize;
    let mut out = vec![0f32; rows * ne0];
    for (r, o) in out.chunks_exact_mut(ne0).enumerate() {
        formats::dequantize_row(t.ggml_type, &data[r * rb..(r + 1) * rb], o).unwrap();
    }
    (t.dims.clone(), out)
}

fn max_err(got: &[f32], want: &[f32], abs: f32, rel: f32) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut worst = (0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        assert!(
            e <= abs + rel * w.abs(),
            "element {i}: got {g}, want {w} (|diff| {e} > {abs} + {rel}*|want|)"
        );
        if e > worst.0 {
            worst = (e, i);
        }
    }
    worst
}

#[test]
fn folded_tables_match_reference() {
    for name in FIXTURES {
        let dir = scratch(&format!("fold_{name}"));
        let out = dir.join("m.gguf");
        let rep = convert_checkpoint(&opts(&fixture(name), &out)).unwrap();
        let r = reference(name);
        let f = GgufFile::open(&out).unwrap();
        let md = f.metadata();
        assert_eq!(
            md.get_str(mk::KEY_FORM).unwrap(),
            r["form"].as_str().unwrap(),
            "{name}"
        );
        let gate = if r["form"] == "demo" {
            "ffn_norm"
        } else {
            "residual"
        };
        assert_eq!(md.get_str(mk::KEY_GATE_INPUT).unwrap(), gate, "{name}");
        assert_eq!(
            md.get_str(mk::KEY_VARIANT).unwrap(),
            r["variant"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(md.get_str(mk::KEY_TABLE_LAYOUT).unwrap(), "token_major");
        assert_eq!(
            md.get_uint(mk::KEY_DIM).unwrap(),
            r["d_mem"].as_u64().unwrap()
        );
        assert_eq!(
            md.get_uint(mk::KEY_N_LAYER).unwrap(),
            r["n_layer"].as_u64().unwrap()
        );
        assert_eq!(
            md.get_uint(mk::KEY_N_VOCAB).unwrap(),
            r["n_vocab"].as_u64().unwrap()
        );
        assert_eq!(
            md.get_uint(mk::KEY_VERSION).unwrap(),
            u64::from(mk::VERSION)
        );
        assert_eq!(rep.n_vocab as u64, r["n_vocab"].as_u64().unwrap());
        let (dims, table) = tensor_f32(&f, mk::TENSOR_TABLE);
        let (nl, dm, nv) = (
            r["n_layer"].as_u64().unwrap(),
            r["d_mem"].as_u64().unwrap(),
            r["n_vocab"].as_u64().unwrap(),
        );
        assert_eq!(dims, vec![nl * dm, nv], "{name}: table dims");
        assert_eq!(f.tensor(mk::TENSOR_TABLE).unwrap().ggml_type, GgmlType::F32);
        let want = read_f32(&fixture(name).join("expected_table.f32"));
        let (e, i) = max_err(&table, &want, 1e-5, 1e-5);
        eprintln!("{name}: table max |diff| {e:e} at {i}");
        // Padding rows are dropped from the embedding too.
        assert_eq!(f.tensor("token_embd.weight").unwrap().dims, vec![64, nv]);
        for l in 0..nl as usize {
            assert_eq!(f.tensor(&mk::gate_name(l)).unwrap().dims, vec![64, dm]);
            assert_eq!(f.tensor(&mk::out_name(l)).unwrap().dims, vec![dm, 64]);
            assert_eq!(f.tensor(&mk::post_norm_name(l)).unwrap().dims, vec![64]);
        }
        // The fold replaces the training-only tensors: none survive.
        assert!(f.tensors().iter().all(|t| !t.name.contains("meki_module")));
    }
}

fn engine_logits(path: &Path, ids: &[u32]) -> Vec<f32> {
    let model = meki::model::Model::open(path).unwrap();
    let mut s = meki::model::Session::new(&model, 64, meki::model::KvType::F32);
    s.forward(ids, meki::model::forward::Logits::All).unwrap()
}

/// The same logits from decode steps: one token per forward call (the
/// engine's grouped single-token path).
fn engine_logits_decode(path: &Path, ids: &[u32]) -> Vec<f32> {
    let model = meki::model::Model::open(path).unwrap();
    let mut s = meki::model::Session::new(&model, 64, meki::model::KvType::F32);
    ids.iter()
        .flat_map(|&t| s.forward(&[t], meki::model::forward::Logits::Last).unwrap())
        .collect()
}

#[test]
fn backbone_logits_match_reference() {
    for name in FIXTURES {
        let dir = scratch(&format!("backbone_{name}"));
        let out = dir.join("m.gguf");
        let mut o = opts(&fixture(name), &out);
        o.split_tables = true;
        convert_checkpoint(&o).unwrap();
        // Without its sidecar the main file is the plain backbone.
        std::fs::remove_file(mk::sidecar_path(&out)).unwrap();
        let got = engine_logits(&out, &ref_ids(name));
        let want = read_f32(&fixture(name).join("expected_logits_backbone.f32"));
        let (e, i) = max_err(&got, &want, 1e-4, 1e-5);
        eprintln!("{name}: backbone logits max |diff| {e:e} at {i}");
    }
}

#[test]
fn meki_logits_match_reference() {
    for name in FIXTURES {
        let dir = scratch(&format!("logits_{name}"));
        let out = dir.join("m.gguf");
        convert_checkpoint(&opts(&fixture(name), &out)).unwrap();
        let got = engine_logits(&out, &ref_ids(name));
        let want = read_f32(&fixture(name).join("expected_logits.f32"));
        let (e, i) = max_err(&got, &want, 1e-4, 1e-5);
        eprintln!("{name}: MeKi logits max |diff| {e:e} at {i}");
        let got = engine_logits_decode(&out, &ref_ids(name));
        let (e, i) = max_err(&got, &want, 1e-4, 1e-5);
        eprintln!("{name}: MeKi logits, token by token, max |diff| {e:e} at {i}");
        // And the same through the sidecar.
        let out2 = dir.join("split.gguf");
        let mut o = opts(&fixture(name), &out2);
        o.split_tables = true;
        convert_checkpoint(&o).unwrap();
        let got = engine_logits(&out2, &ref_ids(name));
        max_err(&got, &want, 1e-4, 1e-5);
    }
}

#[test]
fn split_tables_sidecar_and_identity() {
    let dir = scratch("split");
    let single = dir.join("single.gguf");
    convert_checkpoint(&opts(&fixture("hf_demo"), &single)).unwrap();
    let main = dir.join("demo.gguf");
    let mut o = opts(&fixture("hf_demo"), &main);
    o.split_tables = true;
    let rep = convert_checkpoint(&o).unwrap();
    let side = mk::sidecar_path(&main);
    assert_eq!(rep.sidecar.as_deref(), Some(side.as_path()));
    let m = GgufFile::open(&main).unwrap();
    assert!(m
        .tensors()
        .iter()
        .all(|t| !mk::identity::is_meki_tensor(&t.name)));
    assert!(m.metadata().iter().all(|(k, _)| !k.starts_with("meki.")));
    let s = GgufFile::open(&side).unwrap();
    let id = mk::identity::backbone_id(&m).unwrap();
    assert_eq!(s.metadata().get_str(mk::KEY_BACKBONE_ID).unwrap(), id);
    // A single-file conversion has the same backbone.
    assert_eq!(
        mk::identity::backbone_id(&GgufFile::open(&single).unwrap()).unwrap(),
        id
    );
    assert!(s
        .tensors()
        .iter()
        .all(|t| mk::identity::is_meki_tensor(&t.name)));
    assert_eq!(s.metadata().get_str(mk::KEY_FORM).unwrap(), "demo");
    let (_, a) = tensor_f32(&s, mk::TENSOR_TABLE);
    let (_, b) = tensor_f32(&GgufFile::open(&single).unwrap(), mk::TENSOR_TABLE);
    assert_eq!(a, b);
    // The sidecar of another model does not match this backbone.
    let other = dir.join("static.gguf");
    let mut o = opts(&fixture("hf_static"), &other);
    o.split_tables = true;
    convert_checkpoint(&o).unwrap();
    let s2 = GgufFile::open(mk::sidecar_path(&other)).unwrap();
    assert_ne!(s2.metadata().get_str(mk::KEY_BACKBONE_ID).unwrap(), id);
}

#[test]
fn base_keeps_backbone_bytes() {
    let dir = scratch("base");
    let main = dir.join("b.gguf");
    let mut o = opts(&fixture("hf_demo"), &main);
    o.split_tables = true;
    o.backbone_type = "q8_0".into();
    convert_checkpoint(&o).unwrap();
    let out = dir.join("with_meki.gguf");
    let mut o = opts(&fixture("hf_demo"), &out);
    o.base = Some(main.clone());
    convert_checkpoint(&o).unwrap();
    let b = GgufFile::open(&main).unwrap();
    let w = GgufFile::open(&out).unwrap();
    for t in b.tensors() {
        let u = w.tensor(&t.name).unwrap();
        assert_eq!((u.ggml_type, &u.dims), (t.ggml_type, &t.dims), "{}", t.name);
        assert_eq!(
            w.tensor_data(u).unwrap(),
            b.tensor_data(t).unwrap(),
            "{}",
            t.name
        );
    }
    for (k, v) in b.metadata().iter() {
        assert_eq!(w.metadata().get(k), Some(v), "{k}");
    }
    assert_eq!(w.metadata().get_str(mk::KEY_FORM).unwrap(), "demo");
    let (_, table) = tensor_f32(&w, mk::TENSOR_TABLE);
    max_err(
        &table,
        &read_f32(&fixture("hf_demo").join("expected_table.f32")),
        1e-5,
        1e-5,
    );
}

#[test]
fn quantized_outputs() {
    let dir = scratch("quant");
    let out = dir.join("q.gguf");
    let mut o = opts(&fixture("megatron"), &out);
    o.backbone_type = "q8_0".into();
    o.table_type = "q8_0".into();
    convert_checkpoint(&o).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.metadata().get_uint("general.file_type").unwrap(), 7);
    for t in f.tensors() {
        let want = if t.dims.len() == 1 {
            GgmlType::F32
        } else {
            GgmlType::Q8_0
        };
        assert_eq!(t.ggml_type, want, "{}", t.name);
    }
    // q8_0: per block of 32, d = max|x| / 127 stored as f16, so
    // |x - q * d16| <= d / 2 + 127 * |d - d16| <= max|x| * (1/254 + 1/2048).
    let (_, table) = tensor_f32(&f, mk::TENSOR_TABLE);
    let want = read_f32(&fixture("megatron").join("expected_table.f32"));
    for (gb, wb) in table.chunks(32).zip(want.chunks(32)) {
        let amax = wb.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (g, w) in gb.iter().zip(wb) {
            assert!(
                (g - w).abs() <= amax * (1.0 / 254.0 + 1.0 / 2048.0) + 1e-5,
                "{g} vs {w} (block max {amax})"
            );
        }
    }
    // f16 tables (the default) and a k-quant mix convert too.
    let out = dir.join("k.gguf");
    let mut o = opts(&fixture("hf_demo"), &out);
    o.backbone_type = "q4_k_m".into();
    o.table_type = "f16".into();
    convert_checkpoint(&o).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor(mk::TENSOR_TABLE).unwrap().ggml_type, GgmlType::F16);
    let (_, table) = tensor_f32(&f, mk::TENSOR_TABLE);
    max_err(
        &table,
        &read_f32(&fixture("hf_demo").join("expected_table.f32")),
        1e-5,
        1e-3,
    );
}

/// `meki-convert quantize` of a MeKi file: the backbone and projections
/// follow the target, the table keeps its storage type unless
/// `table_type` asks for another one (the engine reads f32/f16/q8_0 rows).
#[test]
fn quantize_keeps_or_sets_the_table_type() {
    let dir = scratch("requant");
    let src = dir.join("f16.gguf");
    let mut o = opts(&fixture("hf_demo"), &src);
    o.table_type = "f16".into();
    convert_checkpoint(&o).unwrap();
    for (table_type, want) in [
        (None, GgmlType::F16),
        (Some(GgmlType::Q8_0), GgmlType::Q8_0),
    ] {
        let out = dir.join("q4.gguf");
        meki::quant::quantize_file_report(
            &meki::quant::QuantizeOptions {
                input: src.clone(),
                output: out.clone(),
                target: "q4_0".into(),
                pure: true,
                threads: 1,
                table_type,
                meki_proj_type: None,
            },
            false,
        )
        .unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.tensor(mk::TENSOR_TABLE).unwrap().ggml_type, want);
        assert_eq!(
            f.tensor(&mk::gate_name(0)).unwrap().ggml_type,
            GgmlType::Q4_0
        );
        let (_, table) = tensor_f32(&f, mk::TENSOR_TABLE);
        let (_, orig) = tensor_f32(&GgufFile::open(&src).unwrap(), mk::TENSOR_TABLE);
        // Kept: the same values; q8_0: within its per-block bound (see above).
        let rel = match want {
            GgmlType::F16 => None,
            _ => Some(1.0 / 254.0 + 1.0 / 2048.0),
        };
        assert_within_block_bound(&table, &orig, rel, "table");
    }
}

/// Every value of `got` within `rel` times its 32-block's largest `want`
/// magnitude (+1e-6) of `want`; `None`: equal.
fn assert_within_block_bound(got: &[f32], want: &[f32], rel: Option<f32>, what: &str) {
    for (gb, wb) in got.chunks(32).zip(want.chunks(32)) {
        let amax = wb.iter().fold(0f32, |m, x| m.max(x.abs()));
        let bound = rel.map_or(0.0, |r| amax * r + 1e-6);
        for (g, w) in gb.iter().zip(wb) {
            assert!(
                (g - w).abs() <= bound,
                "{what}: {g} vs {w} (block max {amax})"
            );
        }
    }
}

/// `--meki-proj-type`: the MeKi projections take their own type, in
/// `checkpoint` and in `quantize`; every other tensor is what it would be
/// without the option, and a row length the type cannot block is refused.
#[test]
fn meki_projection_type() {
    let dir = scratch("projtype");
    let plain = dir.join("plain.gguf");
    let proj = dir.join("proj.gguf");
    let mut o = opts(&fixture("hf_demo"), &plain);
    o.backbone_type = "q8_0".into();
    convert_checkpoint(&o).unwrap();
    o.output = proj.clone();
    o.meki_proj_type = Some(GgmlType::Q4_0);
    convert_checkpoint(&o).unwrap();
    let requant = dir.join("requant.gguf");
    meki::quant::quantize_file_report(
        &meki::quant::QuantizeOptions {
            input: plain.clone(),
            output: requant.clone(),
            target: "q8_0".into(),
            pure: false,
            threads: 1,
            table_type: None,
            meki_proj_type: Some(GgmlType::Q4_0),
        },
        false,
    )
    .unwrap();
    let (a, b, c) = (
        GgufFile::open(&plain).unwrap(),
        GgufFile::open(&proj).unwrap(),
        GgufFile::open(&requant).unwrap(),
    );
    let mut n_proj = 0;
    for t in a.tensors() {
        let is_proj = meki::quant::is_meki_projection(&t.name);
        n_proj += is_proj as usize;
        for f in [&b, &c] {
            let got = f.tensor(&t.name).unwrap();
            if is_proj {
                assert_eq!(t.ggml_type, GgmlType::Q8_0, "{}", t.name);
                assert_eq!(got.ggml_type, GgmlType::Q4_0, "{}", t.name);
            } else {
                assert_eq!(got.ggml_type, t.ggml_type, "{}", t.name);
                assert_eq!(
                    f.tensor_data(got).unwrap(),
                    a.tensor_data(t).unwrap(),
                    "{}",
                    t.name
                );
            }
        }
    }
    assert_eq!(n_proj, 4, "two layers, gate and out");
    // Direct Q4_0 of the f32 weights: within Q4_0's bound of the Q8_0 ones.
    for name in [mk::gate_name(1), mk::out_name(0)] {
        let (_, q4) = tensor_f32(&b, &name);
        let (_, q8) = tensor_f32(&a, &name);
        assert_within_block_bound(&q4, &q8, Some(1.0 / 7.0), &name);
    }
    // K-quants need rows of 256: refused by name, with the reason.
    assert!(meki::quant::parse_meki_proj_type("q4_k").is_err());
    o.output = dir.join("bad.gguf");
    o.meki_proj_type = Some(GgmlType::Q4K);
    let e = convert_checkpoint(&o).unwrap_err();
    assert!(e.contains("meki_gate") || e.contains("meki_out"), "{e}");
    assert!(!dir.join("bad.gguf").exists());
}

#[test]
fn tokenizer_metadata() {
    let dir = scratch("tok");
    let out = dir.join("t.gguf");
    convert_checkpoint(&opts(&fixture("hf_demo"), &out)).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let md = f.metadata();
    assert_eq!(md.get_str("general.architecture").unwrap(), "qwen3");
    assert_eq!(md.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(md.get_str("tokenizer.ggml.pre").unwrap(), "qwen2");
    let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 300);
    assert_eq!(tokens[297], "<|endoftext|>");
    assert_eq!(tokens[0], "!");
    assert_eq!(tokens[256 - 68 + 32], "Ġ"); // byte 0x20 in GPT-2 order
    match md.get("tokenizer.ggml.token_type") {
        Some(Value::Array(meki::gguf::Array::I32(t))) => {
            assert!(t[..297].iter().all(|&x| x == 1));
            assert!(t[297..].iter().all(|&x| x == 3));
        }
        other => panic!("token_type: {other:?}"),
    }
    assert_eq!(md.get_str_array("tokenizer.ggml.merges").unwrap().len(), 41);
    assert_eq!(md.get_uint("tokenizer.ggml.eos_token_id").unwrap(), 297);
    assert_eq!(md.get_uint("tokenizer.ggml.padding_token_id").unwrap(), 297);
    assert_eq!(md.get_uint("tokenizer.ggml.bos_token_id").unwrap(), 297); // config.json bos_token_id
    assert_eq!(
        md.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(false))
    );
    assert!(md
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|im_start|>"));
    for (k, v) in [
        ("qwen3.block_count", 2u64),
        ("qwen3.embedding_length", 64),
        ("qwen3.feed_forward_length", 96),
        ("qwen3.attention.head_count", 4),
        ("qwen3.attention.head_count_kv", 2),
        ("qwen3.attention.key_length", 16),
        ("qwen3.context_length", 256),
        ("general.file_type", 0),
    ] {
        assert_eq!(md.get_uint(k).unwrap(), v, "{k}");
    }
    let tok = meki::tokenizer::Tokenizer::from_metadata(md).unwrap();
    let text = "the quick brown fox<|endoftext|> memory 123";
    let ids = tok.encode(text, false, true);
    assert!(ids.contains(&297), "{ids:?}");
    assert!(ids.len() < text.len(), "merges applied: {ids:?}");
    assert_eq!(tok.decode(&ids), text);
}

// ---------------------------------------------------------------- bad checkpoints

/// Copies an HF fixture, rewriting its single safetensors file through `edit`
/// (name -> (dtype, shape, bytes)).
fn edited_hf(
    name: &str,
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, String, Vec<u64>, Vec<u8>)>),
) -> PathBuf {
    let src = fixture(name);
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut ts = Vec::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        let o = v["data_offsets"].as_array().unwrap();
        let (b, e) = (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        );
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        ts.push((
            k.clone(),
            v["dtype"].as_str().unwrap().to_string(),
            shape,
            bytes[8 + n + b..8 + n + e].to_vec(),
        ));
    }
    edit(&mut ts);
    let mut h = serde_json::Map::new();
    let mut data = Vec::new();
    for (k, dt, shape, b) in &ts {
        h.insert(
            k.clone(),
            serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [data.len(), data.len() + b.len()]}),
        );
        data.extend_from_slice(b);
    }
    let hj = serde_json::to_vec(&serde_json::Value::Object(h)).unwrap();
    let mut out = (hj.len() as u64).to_le_bytes().to_vec();
    out.extend(hj);
    out.extend(data);
    std::fs::write(dst.join("model.safetensors"), out).unwrap();
    dst
}

fn convert_err(input: &Path, dir: &Path) -> String {
    match convert_checkpoint(&opts(input, &dir.join("x.gguf"))) {
        Ok(_) => panic!("{}: conversion should fail", input.display()),
        Err(e) => e,
    }
}

#[test]
fn other_form_naming_is_refused() {
    let dir = scratch("bad_naming");
    let p = edited_hf("hf_demo", &dir, |ts| {
        for t in ts.iter_mut() {
            if t.0 == "model.layers.1.meki_module.word_emb_projection.gate_proj.weight" {
                t.0 = "model.layers.1.meki_module.word_emb_projection.linear_fc1.weight".into();
            }
        }
    });
    let e = convert_err(&p, &dir);
    assert!(e.contains("linear_fc1") && e.contains("Megatron"), "{e}");
}

#[test]
fn missing_layer_tensor_is_named() {
    let dir = scratch("bad_missing");
    let p = edited_hf("hf_demo", &dir, |ts| {
        ts.retain(|t| t.0 != "model.layers.1.meki_module.mix_norm.weight");
    });
    let e = convert_err(&p, &dir);
    assert!(
        e.contains("layer 1")
            && e.contains("model.layers.1.meki_module.mix_norm.weight")
            && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn mismatched_shape_is_named() {
    let dir = scratch("bad_shape");
    let p = edited_hf("hf_demo", &dir, |ts| {
        for t in ts.iter_mut() {
            if t.0 == "model.layers.0.meki_module.out_proj.weight" {
                t.2 = vec![32, 64]; // transposed
            }
        }
    });
    let e = convert_err(&p, &dir);
    assert!(
        e.contains("out_proj") && e.contains("[32, 64]") && e.contains("[64, 32]"),
        "{e}"
    );
}

#[test]
fn megatron_form_without_g_norm_is_refused() {
    let dir = scratch("bad_gnorm");
    let p = edited_hf("hf_demo", &dir, |_| {});
    let cfg = std::fs::read_to_string(p.join("config.json")).unwrap();
    std::fs::write(
        p.join("config.json"),
        cfg.replace("\"demo\"", "\"megatron\""),
    )
    .unwrap();
    let e = convert_err(&p, &dir);
    assert!(
        e.contains("Megatron form") && e.contains("word_emb_projection.norm.weight"),
        "{e}"
    );
}

#[test]
fn meki_dim_override_is_checked() {
    let dir = scratch("bad_dim");
    let mut o = opts(&fixture("hf_demo"), &dir.join("x.gguf"));
    o.meki_dim = Some(64);
    let e = convert_checkpoint(&o).unwrap_err();
    assert!(e.contains("--meki-dim 64") && e.contains("32"), "{e}");
}

#[test]
fn truncated_torch_checkpoint_is_an_error() {
    let dir = scratch("bad_torch");
    let src = fixture("megatron").join("iter_0000010/mp_rank_00/model_optim_rng.pt");
    let bytes = std::fs::read(&src).unwrap();
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 30] {
        let p = dir.join(format!("cut{cut}.pt"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = convert_err(&p, &dir);
        assert!(
            e.contains("zip") || e.contains("pickle"),
            "cut at {cut}: {e}"
        );
    }
}

/// Corrupted checkpoints (bytes of the zip directory, the pickle, the
/// safetensors header) give errors or, where the damage hits only weights,
/// a conversion; never a panic.
#[test]
fn corrupted_checkpoints_never_panic() {
    let dir = scratch("corrupt");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pt = std::fs::read(fixture("megatron").join("iter_0000010/mp_rank_00/model_optim_rng.pt"))
        .unwrap();
    let pkl_len = 16 << 10; // the pickle is the first entry; the directory the last bytes
    let mut errors = 0;
    for i in 0..300 {
        let mut b = pt.clone();
        let pos = if i % 3 == 0 {
            b.len() - 1 - (rand() as usize % 600)
        } else {
            rand() as usize % pkl_len.min(b.len())
        };
        b[pos] = rand() as u8;
        let p = dir.join("c.pt");
        std::fs::write(&p, &b).unwrap();
        if convert_checkpoint(&opts(&p, &dir.join("c.gguf"))).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 30, "only {errors} of 300 corruptions detected");
    let st = std::fs::read(fixture("hf_demo").join("model.safetensors")).unwrap();
    let hdr = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize + 8;
    let src = edited_hf("hf_demo", &dir, |_| {});
    for _ in 0..200 {
        let mut b = st.clone();
        let pos = rand() as usize % hdr;
        b[pos] = rand() as u8;
        std::fs::write(src.join("model.safetensors"), &b).unwrap();
        let _ = convert_checkpoint(&opts(&src, &dir.join("s.gguf")));
    }
}
