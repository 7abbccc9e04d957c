//! `meki-convert quantize` against llama-quantize.
//!
//! tests/fixtures/quant/llama_quantize_golden.txt holds, for a synthetic
//! llama-architecture F32 model (`meki::quant::synth::ModelSpec::golden`,
//! regenerated bit-identically here), the type and sha256 of every tensor
//! llama-quantize wrote, for `--pure` runs of every supported type and for
//! the default mixes. Regenerate it with tools/quant_golden.sh.
//!
//! On a mismatch, if the llama-quantize outputs are still in
//! `$MEKI_QUANT_GOLDEN_DIR` (default target/quant_golden, left there by the
//! script), the first differing block is printed.

use meki::gguf::GgufFile;
use meki::kernels::formats::GgmlType;
use meki::quant::synth::ModelSpec;
use meki::quant::{quantize_file_report, QuantizeOptions};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quant_golden");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// run -> tensor -> (type name, sha256)
type Golden = BTreeMap<String, BTreeMap<String, (String, String)>>;

fn read_golden() -> Golden {
    let path = manifest().join("tests/fixtures/quant/llama_quantize_golden.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/quant_golden.sh)", path.display()));
    let mut g = Golden::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 4, "bad golden line {line:?}");
        g.entry(f[0].to_string())
            .or_default()
            .insert(f[1].to_string(), (f[2].to_string(), f[3].to_string()));
    }
    g
}

/// The golden input model, written once per test process.
fn golden_input() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let p = scratch().join("golden_input_f32.gguf");
        ModelSpec::golden()
            .write(&p, GgmlType::F32)
            .expect("write golden input");
        p
    })
    .clone()
}

fn tensor_hashes(path: &Path) -> BTreeMap<String, (String, String)> {
    let f = GgufFile::open(path).unwrap();
    f.tensors()
        .iter()
        .map(|t| {
            let h = Sha256::digest(f.tensor_data(t).unwrap());
            (t.name.clone(), (t.ggml_type.name().to_string(), hex(&h)))
        })
        .collect()
}

/// First differing block of `name` between our output and llama-quantize's.
fn first_difference(ours: &Path, theirs: &Path, name: &str) -> String {
    let (Ok(a), Ok(b)) = (GgufFile::open(ours), GgufFile::open(theirs)) else {
        return format!("({} not available to locate the block)", theirs.display());
    };
    let (ta, tb) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
    let (da, db) = (a.tensor_data(ta).unwrap(), b.tensor_data(tb).unwrap());
    if ta.ggml_type != tb.ggml_type || da.len() != db.len() {
        return format!("type {} vs {}", ta.ggml_type, tb.ggml_type);
    }
    let ts = ta.ggml_type.type_size();
    let Some(blk) =
        (0..da.len() / ts).find(|&i| da[i * ts..(i + 1) * ts] != db[i * ts..(i + 1) * ts])
    else {
        return format!("identical to {} (stale golden file?)", theirs.display());
    };
    let spec = ModelSpec::golden();
    let dims = &ta.dims;
    let x = spec.values(name, dims);
    let bs = ta.ggml_type.block_size();
    format!(
        "first differing block {blk} (row {}):\n input {:?}\n meki  {:02x?}\n llama {:02x?}",
        blk * bs / dims[0] as usize,
        &x[blk * bs..(blk + 1) * bs],
        &da[blk * ts..(blk + 1) * ts],
        &db[blk * ts..(blk + 1) * ts]
    )
}

#[test]
#[ignore = "writes the golden input models for tools/quant_golden.sh"]
fn write_golden_input() {
    let dir =
        PathBuf::from(std::env::var("MEKI_QUANT_GOLDEN_DIR").expect("set MEKI_QUANT_GOLDEN_DIR"));
    let spec = ModelSpec::golden();
    spec.write(&dir.join("input_f32.gguf"), GgmlType::F32)
        .unwrap();
    spec.write(&dir.join("input_f16.gguf"), GgmlType::F16)
        .unwrap();
    tied_spec()
        .write(&dir.join("input_tied_f32.gguf"), GgmlType::F32)
        .unwrap();
}

/// The golden model with tied embeddings (no `output.weight`).
fn tied_spec() -> ModelSpec {
    ModelSpec {
        output: false,
        ..ModelSpec::golden()
    }
}

/// Input of a golden run: `mix:q4_k_m` (F32 model), `f16/mix:q4_k_m` (F16
/// matrices), `q8_0/mix:q4_0` (the pure Q8_0 quantization of the F32 model),
/// `tied/mix:q4_k_m` (the F32 model without `output.weight`).
fn run_input(prefix: Option<&str>) -> PathBuf {
    match prefix {
        None => golden_input(),
        Some("f16") => {
            static F16: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
            F16.get_or_init(|| {
                let p = scratch().join("golden_input_f16.gguf");
                ModelSpec::golden().write(&p, GgmlType::F16).unwrap();
                p
            })
            .clone()
        }
        Some("q8_0") => {
            static Q8: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
            Q8.get_or_init(|| {
                let p = scratch().join("golden_input_q8_0.gguf");
                let opts = QuantizeOptions {
                    table_type: None,
                    meki_proj_type: None,
                    input: golden_input(),
                    output: p.clone(),
                    target: "q8_0".into(),
                    pure: true,
                    threads: 2,
                };
                quantize_file_report(&opts, false).unwrap();
                p
            })
            .clone()
        }
        Some("tied") => {
            static TIED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
            TIED.get_or_init(|| {
                let p = scratch().join("golden_input_tied_f32.gguf");
                tied_spec().write(&p, GgmlType::F32).unwrap();
                p
            })
            .clone()
        }
        Some(other) => panic!("unknown golden input {other:?}"),
    }
}

#[test]
fn golden_input_regenerates_identically() {
    let g = read_golden();
    let input = g.get("input").expect("golden file has no input lines");
    let ours = tensor_hashes(&golden_input());
    assert_eq!(
        &ours, input,
        "the synthetic model no longer matches the one llama-quantize saw"
    );
}

#[test]
fn quantize_matches_llama_quantize() {
    let g = read_golden();
    let golden_dir = std::env::var("MEKI_QUANT_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest().join("target/quant_golden"));
    let mut failures = Vec::new();
    let mut n_runs = 0;
    for (run, want) in &g {
        let Some((kind, target)) = run.split_once(':') else {
            continue; // "input"
        };
        let (prefix, kind) = match kind.split_once('/') {
            Some((p, k)) => (Some(p), k),
            None => (None, kind),
        };
        n_runs += 1;
        let file_name = format!("{}.gguf", run.replace([':', '/'], "_"));
        let out = scratch().join(&file_name);
        let report = quantize_file_report(
            &QuantizeOptions {
                table_type: None,
                meki_proj_type: None,
                input: run_input(prefix),
                output: out.clone(),
                target: target.to_string(),
                pure: kind == "pure",
                threads: 2,
            },
            false,
        )
        .unwrap_or_else(|e| panic!("{run}: {e}"));
        assert_eq!(report.len(), want.len(), "{run}: tensor count");
        let got = tensor_hashes(&out);
        let mut n_bad = 0;
        for (name, (wty, wsha)) in want {
            let (ty, sha) = got
                .get(name)
                .unwrap_or_else(|| panic!("{run}: missing {name}"));
            if ty != wty || sha != wsha {
                n_bad += 1;
                if n_bad == 1 {
                    let theirs = golden_dir.join(&file_name);
                    failures.push(format!(
                        "{run}: {name}: meki {ty} {sha}, llama-quantize {wty} {wsha}; {}",
                        first_difference(&out, &theirs, name)
                    ));
                }
            }
        }
        if n_bad > 1 {
            failures.push(format!("{run}: {n_bad} tensors differ in all"));
        }
        std::fs::remove_file(&out).ok();
    }
    assert!(n_runs >= 10, "golden file has only {n_runs} runs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The output read back by gguf-py: every input key with the same type and
/// value, `general.file_type` = llama_ftype, `general.quantization_version` = 2.
#[test]
fn quantized_metadata_read_back_by_gguf_py() {
    let input = golden_input();
    let out = scratch().join("meta_q4_k_m.gguf");
    quantize_file_report(
        &QuantizeOptions {
            table_type: None,
            meki_proj_type: None,
            input: input.clone(),
            output: out.clone(),
            target: "q4_k_m".into(),
            pure: false,
            threads: 2,
        },
        false,
    )
    .unwrap();
    let script = manifest().join("tools/quant_gguf_compare.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(&input)
        .arg(&out)
        .output();
    let require = std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1");
    let o = match o {
        Ok(o) if o.status.code() != Some(3) => o,
        other => {
            assert!(!require, "gguf-py reference required: {other:?}");
            eprintln!("SKIP: gguf-py unavailable");
            return;
        }
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("key_mismatch") || l.starts_with("extra_key"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(text.lines().any(|l| l == "file_type 15"), "{text}");
    assert!(
        text.lines().any(|l| l == "quantization_version 2"),
        "{text}"
    );
    let n_in = GgufFile::open(&input).unwrap().metadata().len() - 1; // minus general.file_type
    assert!(
        text.lines().any(|l| l == format!("checked_keys {n_in}")),
        "{text}"
    );
    let n_tensors = text.lines().filter(|l| l.starts_with("tensor ")).count();
    assert_eq!(n_tensors, ModelSpec::golden().tensors().len());
}
