//! ggml block formats against gguf-py (`gguf.quants`), the independent
//! numpy implementation shipped with llama.cpp:
//! - dequantization of random blocks must be bit-identical for every format;
//! - quantization must be byte-identical where gguf-py implements it
//!   (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
//!
//! The k-quant quantizers have no gguf-py counterpart; they are checked
//! against llama-quantize in `quant_golden.rs`.
//!
//! Needs `python3` with `gguf` (see tools/quant_ref.py). Without it the tests
//! skip, or fail when `MEKI_REQUIRE_REFERENCE=1`.

use meki::kernels::formats::{dequantize_row, quantize_row, GgmlType};
use meki::quant::synth::{tensor_values, SplitMix64};
use std::path::PathBuf;
use std::process::Command;

fn require_reference() -> bool {
    std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quant_formats");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs tools/quant_ref.py; `None` when the reference is unavailable (and not required).
fn gguf_py(mode: &str, ty: &str, input: &[u8], tag: &str) -> Option<Vec<u8>> {
    let src = scratch(&format!("{tag}.in"));
    let dst = scratch(&format!("{tag}.out"));
    std::fs::write(&src, input).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/quant_ref.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([mode, ty])
        .arg(&src)
        .arg(&dst)
        .output();
    let missing = |why: String| {
        if require_reference() {
            panic!("gguf-py reference required but unavailable: {why}");
        }
        eprintln!("SKIP: gguf-py reference unavailable: {why}");
        None
    };
    match out {
        Err(e) => missing(format!("python3: {e}")),
        Ok(o) if o.status.code() == Some(3) => {
            missing(String::from_utf8_lossy(&o.stderr).into_owned())
        }
        Ok(o) if !o.status.success() => panic!(
            "quant_ref.py {mode} {ty} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => Some(std::fs::read(&dst).unwrap()),
    }
}

/// gguf-py's name of a type.
fn py_name(t: GgmlType) -> &'static str {
    t.name()
}

/// Offsets of the f16 scale fields inside one block.
fn f16_fields(t: GgmlType) -> &'static [usize] {
    match t {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// A random finite f16: any sign and exponent except inf/NaN.
fn finite_f16(rng: &mut SplitMix64) -> u16 {
    loop {
        let h = rng.next_u64() as u16;
        if h & 0x7C00 != 0x7C00 {
            return h;
        }
    }
}

/// Random bytes for `n_blocks` blocks of `t`, with finite scales (and finite
/// elements for F16/BF16).
fn random_blocks(t: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let ts = t.type_size();
    let mut bytes: Vec<u8> = (0..n_blocks * ts).map(|_| rng.next_u64() as u8).collect();
    match t {
        GgmlType::F16 => {
            for c in bytes.chunks_exact_mut(2) {
                c.copy_from_slice(&finite_f16(&mut rng).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for c in bytes.chunks_exact_mut(2) {
                let mut h = rng.next_u64() as u16;
                if h & 0x7F80 == 0x7F80 {
                    h &= !0x0080; // no inf/NaN
                }
                c.copy_from_slice(&h.to_le_bytes());
            }
        }
        _ => {
            for block in bytes.chunks_exact_mut(ts) {
                for &off in f16_fields(t) {
                    block[off..off + 2].copy_from_slice(&finite_f16(&mut rng).to_le_bytes());
                }
            }
        }
    }
    bytes
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

const DEQUANT_TYPES: [GgmlType; 10] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

#[test]
fn dequantize_matches_gguf_py_bitwise() {
    for (k, &t) in DEQUANT_TYPES.iter().enumerate() {
        // F16/BF16 "blocks" are single values: use as many values as 64 k-blocks.
        let n_blocks = if t.block_size() == 1 { 16384 } else { 2048 };
        let bytes = random_blocks(t, n_blocks, 0xDE0 + k as u64);
        let n = n_blocks * t.block_size();
        let mut ours = vec![0f32; n];
        dequantize_row(t, &bytes, &mut ours).unwrap();
        let Some(theirs) = gguf_py("dequant", py_name(t), &bytes, &format!("deq_{}", t.name()))
        else {
            return;
        };
        assert_eq!(
            theirs.len(),
            n * 4,
            "{t}: gguf-py returned {} bytes",
            theirs.len()
        );
        let mut bad = 0usize;
        let mut first = None;
        for (i, (a, b)) in ours.iter().zip(theirs.chunks_exact(4)).enumerate() {
            let b = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if a.to_bits() != b.to_bits() {
                bad += 1;
                first.get_or_insert((i, *a, b));
            }
        }
        if let Some((i, a, b)) = first {
            let blk = i / t.block_size();
            let ts = t.type_size();
            panic!(
                "{t}: {bad} of {n} values differ; first at value {i} (block {blk}): meki {a:e} ({:#010x}), gguf-py {b:e} ({:#010x}); block bytes {:02x?}",
                a.to_bits(),
                b.to_bits(),
                &bytes[blk * ts..(blk + 1) * ts]
            );
        }
    }
}

/// Quantizer inputs: the synthetic edge-case mix, plus values of 1e30 scale
/// (f16 block scales overflow to inf) that llama-quantize's row validation
/// would refuse, so they are only checked here.
fn quant_inputs() -> Vec<f32> {
    let mut v = tensor_values("quant_formats.mix", 1024, 96, 0.02);
    v.extend(tensor_values("quant_formats.unit", 1024, 32, 1.0));
    let mut rng = SplitMix64(77);
    v.extend((0..1024 * 4).map(|_| rng.uniform() * 1e30));
    v
}

#[test]
fn quantize_matches_gguf_py_bytes() {
    let x = quant_inputs();
    for t in [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ] {
        let nbytes = t.row_bytes(x.len() as u64).unwrap() as usize;
        let mut ours = vec![0u8; nbytes];
        quantize_row(t, &x, &mut ours).unwrap();
        let Some(theirs) = gguf_py(
            "quant",
            py_name(t),
            &f32_bytes(&x),
            &format!("q_{}", t.name()),
        ) else {
            return;
        };
        assert_eq!(
            theirs.len(),
            nbytes,
            "{t}: gguf-py returned {} bytes",
            theirs.len()
        );
        let ts = t.type_size();
        let bad: Vec<usize> = (0..nbytes / ts)
            .filter(|&b| ours[b * ts..(b + 1) * ts] != theirs[b * ts..(b + 1) * ts])
            .collect();
        if let Some(&b) = bad.first() {
            let bs = t.block_size();
            panic!(
                "{t}: {} of {} blocks differ; first block {b}: input {:?}\n meki    {:02x?}\n gguf-py {:02x?}",
                bad.len(),
                nbytes / ts,
                &x[b * bs..(b + 1) * bs],
                &ours[b * ts..(b + 1) * ts],
                &theirs[b * ts..(b + 1) * ts]
            );
        }
    }
}

/// Round trip sanity for every quantizer, including the activation formats
/// gguf-py lacks: dequantize(quantize(x)) stays within the format's step.
#[test]
fn round_trip_error_is_bounded() {
    let x = tensor_values("quant_formats.roundtrip", 1024, 16, 1.0);
    for (t, rel) in [
        (GgmlType::Q4_0, 0.13),
        (GgmlType::Q4_1, 0.1),
        (GgmlType::Q5_0, 0.07),
        (GgmlType::Q5_1, 0.05),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::Q8_1, 0.01),
        (GgmlType::Q4K, 0.15),
        (GgmlType::Q5K, 0.08),
        (GgmlType::Q6K, 0.04),
        (GgmlType::Q8K, 0.01),
    ] {
        let mut q = vec![0u8; t.row_bytes(x.len() as u64).unwrap() as usize];
        quantize_row(t, &x, &mut q).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize_row(t, &q, &mut y).unwrap();
        for (blk, (xb, yb)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = xb
                .iter()
                .zip(yb)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= rel * amax + 1e-30,
                "{t}: block {blk}: max error {err} vs max |x| {amax}"
            );
        }
    }
}

/// Byte equality with ggml's C `quantize_row_*_ref` for every format,
/// through tools/quant_cref.c linked against a llama.cpp build. Optional
/// (CI has no llama.cpp build): runs when `MEKI_QUANT_CREF` names the binary.
#[test]
fn quantize_matches_ggml_c_reference() {
    let Ok(cref) = std::env::var("MEKI_QUANT_CREF") else {
        eprintln!("SKIP: set MEKI_QUANT_CREF to a build of tools/quant_cref.c");
        return;
    };
    let mut x = quant_inputs();
    x.extend(tensor_values("quant_formats.cref", 4096, 64, 1.0));
    let mut rng = SplitMix64(99);
    x.extend((0..4096 * 8).map(|_| rng.normalish() * 3.0e-3));
    let src = scratch("cref.in");
    std::fs::write(&src, f32_bytes(&x)).unwrap();
    for (t, name) in [
        (GgmlType::F16, "f16"),
        (GgmlType::BF16, "bf16"),
        (GgmlType::Q4_0, "q4_0"),
        (GgmlType::Q4_1, "q4_1"),
        (GgmlType::Q5_0, "q5_0"),
        (GgmlType::Q5_1, "q5_1"),
        (GgmlType::Q8_0, "q8_0"),
        (GgmlType::Q8_1, "q8_1"),
        (GgmlType::Q4K, "q4_K"),
        (GgmlType::Q5K, "q5_K"),
        (GgmlType::Q6K, "q6_K"),
        (GgmlType::Q8K, "q8_K"),
    ] {
        let dst = scratch(&format!("cref_{name}.out"));
        let st = Command::new(&cref)
            .arg(name)
            .arg(&src)
            .arg(&dst)
            .status()
            .unwrap();
        assert!(st.success(), "{cref} {name} failed");
        let theirs = std::fs::read(&dst).unwrap();
        let mut ours = vec![0u8; t.row_bytes(x.len() as u64).unwrap() as usize];
        quantize_row(t, &x, &mut ours).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{t}: size");
        let ts = t.type_size();
        let bad: Vec<usize> = (0..ours.len() / ts)
            .filter(|&b| ours[b * ts..(b + 1) * ts] != theirs[b * ts..(b + 1) * ts])
            .collect();
        if let Some(&b) = bad.first() {
            let bs = t.block_size();
            panic!(
                "{t}: {} of {} blocks differ from ggml C; first block {b}: input {:?}\n meki {:02x?}\n ggml {:02x?}",
                bad.len(),
                ours.len() / ts,
                &x[b * bs..(b + 1) * bs],
                &ours[b * ts..(b + 1) * ts],
                &theirs[b * ts..(b + 1) * ts]
            );
        }
    }
}
