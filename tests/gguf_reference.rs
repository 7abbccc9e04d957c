//! GGUF container against gguf-py (the reference implementation):
//! files written by gguf-py read identically by meki, files written by meki
//! read identically by gguf-py, and every llama.cpp vocab GGUF read
//! identically by both. Both sides print the canonical dump described in
//! tools/gguf_roundtrip.py; the dumps must match line for line.
//!
//! Needs `python3` with `gguf` (and the llama.cpp source for the vocab
//! files, at $MEKI_LLAMA_CPP). Missing references skip the test, or fail it
//! when MEKI_REQUIRE_REFERENCE=1.

use meki::gguf::{Array, GgufFile, GgufHeader, GgufWriter, Metadata, TensorInfo, Value};
use meki::kernels::formats::GgmlType;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/gguf_roundtrip.py");

fn require_reference() -> bool {
    std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1")
}

/// True when gguf-py is usable; otherwise skips (or fails when required).
fn have_gguf_py(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !require_reference(),
            "{test}: python3 with the gguf package is required (MEKI_REQUIRE_REFERENCE=1)"
        );
        eprintln!("{test}: SKIPPED, python3 with the gguf package not found");
    }
    ok
}

fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
        })
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf_reference-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn python(args: &[&str]) {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gguf_roundtrip.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// gguf-py's dumps of `files`, in order.
fn python_dumps(files: &[PathBuf], dir: &Path) -> Vec<String> {
    let mut args = vec![
        "dump".to_string(),
        "--out-dir".into(),
        dir.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    python(&args.iter().map(String::as_str).collect::<Vec<_>>());
    files
        .iter()
        .map(|f| {
            let name = format!("{}.dump", f.file_name().unwrap().to_string_lossy());
            std::fs::read_to_string(dir.join(name)).unwrap()
        })
        .collect()
}

// ------------------------------------------------------------- canonical dump

/// `json.dumps(s, ensure_ascii=True)`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dump_array(a: &Array) -> String {
    fn join<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
        v.iter().map(f).collect::<Vec<_>>().join(",")
    }
    let body = match a {
        Array::U8(v) => join(v, |x| x.to_string()),
        Array::I8(v) => join(v, |x| x.to_string()),
        Array::U16(v) => join(v, |x| x.to_string()),
        Array::I16(v) => join(v, |x| x.to_string()),
        Array::U32(v) => join(v, |x| x.to_string()),
        Array::I32(v) => join(v, |x| x.to_string()),
        Array::U64(v) => join(v, |x| x.to_string()),
        Array::I64(v) => join(v, |x| x.to_string()),
        Array::F32(v) => join(v, |x| format!("{:08x}", x.to_bits())),
        Array::F64(v) => join(v, |x| format!("{:016x}", x.to_bits())),
        Array::Bool(v) => join(v, |x| x.to_string()),
        Array::String(v) => join(v, |x| json_str(x)),
        Array::Array(v) => join(v, dump_array),
    };
    format!("[{};{}:{}]", a.element_type().name(), a.len(), body)
}

fn dump_value(v: &Value) -> String {
    match v {
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => format!("{:08x}", x.to_bits()),
        Value::F64(x) => format!("{:016x}", x.to_bits()),
        Value::Bool(x) => x.to_string(),
        Value::String(s) => json_str(s),
        Value::Array(a) => dump_array(a),
    }
}

fn dump(
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: &Metadata,
    tensors: &[(TensorInfo, &[u8])],
) -> String {
    let mut lines = vec![
        format!("version {version}"),
        format!("alignment {alignment}"),
        format!("data_offset {data_offset}"),
    ];
    for (k, v) in metadata.iter() {
        lines.push(format!(
            "kv {} {} {}",
            json_str(k),
            v.value_type().name(),
            dump_value(v)
        ));
    }
    for (t, data) in tensors {
        let dims = t
            .dims
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        lines.push(format!(
            "tensor {} {} dims={dims} offset={} bytes={} sha256={:x}",
            json_str(&t.name),
            t.ggml_type as u32,
            t.offset,
            t.n_bytes,
            Sha256::digest(data)
        ));
    }
    lines.join("\n") + "\n"
}

fn dump_file(f: &GgufFile) -> String {
    let h: &GgufHeader = f.header();
    let tensors: Vec<(TensorInfo, &[u8])> = f
        .tensors()
        .iter()
        .map(|t| (t.clone(), f.tensor_data(t).unwrap()))
        .collect();
    dump(h.version, h.alignment, h.data_offset, &h.metadata, &tensors)
}

/// Equal dumps, or a panic showing the first differing line (cut short).
fn assert_same_dump(what: &str, ours: &str, reference: &str) {
    if ours == reference {
        return;
    }
    let cut = |s: &str| s.chars().take(400).collect::<String>();
    let (a, b): (Vec<_>, Vec<_>) = (ours.lines().collect(), reference.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or("<none>"),
            b.get(i).copied().unwrap_or("<none>"),
        );
        if x != y {
            let at = x.bytes().zip(y.bytes()).take_while(|(p, q)| p == q).count();
            panic!(
                "{what}: dump line {} differs (from char {at}):\n  meki:    {}\n  gguf-py: {}",
                i + 1,
                cut(&x[at.saturating_sub(40).min(x.len())..]),
                cut(&y[at.saturating_sub(40).min(y.len())..])
            );
        }
    }
    unreachable!();
}

/// Rewrites `src` with meki's writer (all metadata, all tensors, in order).
fn rewrite(src: &GgufFile, dst: &Path) {
    let mut w = GgufWriter::create(dst).unwrap();
    w.copy_metadata(src.metadata()).unwrap();
    for t in src.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    for t in src.tensors() {
        w.write_tensor(&t.name, src.tensor_data(t).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
}

/// `copy` (meki's rewrite of `orig`) must be `orig`'s bytes, except that
/// meki writes version 3 and always pads the data section to the alignment
/// (converters writing no tensors may stop right after the tensor infos).
fn assert_rewrite_matches(what: &str, orig: &GgufFile, a: &Path, b: &Path) {
    let mut x = std::fs::read(a).unwrap();
    let y = std::fs::read(b).unwrap();
    x[4..8].copy_from_slice(&3u32.to_le_bytes());
    let data_offset = orig.header().data_offset as usize;
    if orig.tensors().is_empty() && x.len() < data_offset {
        x.resize(data_offset, 0);
    }
    if x != y {
        let at = x.iter().zip(&y).take_while(|(p, q)| p == q).count();
        panic!(
            "{what}: {} ({} bytes) and {} ({} bytes) differ from byte {at}",
            a.display(),
            x.len(),
            b.display(),
            y.len()
        );
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn gguf_py_files_read_identically_and_rewrite_byte_for_byte() {
    if !have_gguf_py("gguf_py_files_read_identically") {
        return;
    }
    let dir = scratch("from-py");
    let default_aligned = dir.join("py-default.gguf");
    let aligned64 = dir.join("py-align64.gguf");
    python(&["write-sample", default_aligned.to_str().unwrap()]);
    python(&[
        "write-sample",
        aligned64.to_str().unwrap(),
        "--alignment",
        "64",
    ]);
    let files = [default_aligned, aligned64];
    let reference = python_dumps(&files, &dir);
    for (file, reference) in files.iter().zip(&reference) {
        let ours = GgufFile::open(file).unwrap();
        assert_same_dump(&file.display().to_string(), &dump_file(&ours), reference);

        // Typed getters see the same values as the dump.
        let md = ours.metadata();
        assert_eq!(md.get_str("general.architecture").unwrap(), "meki-test");
        assert_eq!(md.get_u64("test.u64").unwrap(), u64::MAX);
        assert_eq!(md.get_i8_array("test.arr.int8").unwrap(), &[-128, 0, 127]);
        assert!(md.get_u32("test.i32").is_err());

        // meki's writer reproduces gguf-py's bytes exactly.
        let copy = dir.join(format!(
            "rewritten-{}",
            file.file_name().unwrap().to_string_lossy()
        ));
        rewrite(&ours, &copy);
        assert_rewrite_matches("rewrite of a gguf-py file", &ours, file, &copy);
    }
    let sample = GgufFile::open(&files[0]).unwrap();
    let tokens = sample
        .metadata()
        .get_str_array("tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens.len(), 1000);
    assert_eq!(tokens[999], "tok999_\u{fc}\u{fc}\u{fc}");
}

/// Metadata exercising every value type, including what gguf-py's writer
/// cannot produce (empty arrays and strings, nested arrays of any type).
fn sample_metadata(alignment: Option<u32>) -> Metadata {
    let mut m = Metadata::new();
    m.push("general.architecture", "meki-test").unwrap();
    if let Some(a) = alignment {
        m.push("general.alignment", a).unwrap();
    }
    m.push("k.u8", 200u8).unwrap();
    m.push("k.i8", -5i8).unwrap();
    m.push("k.u16", 60000u16).unwrap();
    m.push("k.i16", -30000i16).unwrap();
    m.push("k.u32", 4_000_000_000u32).unwrap();
    m.push("k.i32", -2_000_000_000i32).unwrap();
    m.push("k.f32", -0.0f32).unwrap();
    m.push("k.f32_nan", f32::from_bits(0x7fc0_0001)).unwrap();
    m.push("k.bool", true).unwrap();
    m.push("k.str", "tab\there \u{1F980} \"q\" \\ \u{7f}\u{0}")
        .unwrap();
    m.push("k.str_empty", "").unwrap();
    m.push("k.u64", u64::MAX - 1).unwrap();
    m.push("k.i64", i64::MIN + 1).unwrap();
    m.push("k.f64", f64::MIN_POSITIVE).unwrap();
    m.push("a.u8", vec![1u8, 2, 3]).unwrap();
    m.push("a.i8", vec![-1i8, 1]).unwrap();
    m.push("a.u16", vec![7u16]).unwrap();
    m.push("a.i16", vec![-7i16, 8]).unwrap();
    m.push("a.u32", vec![u32::MAX, 0]).unwrap();
    m.push("a.i32", vec![i32::MIN]).unwrap();
    m.push("a.f32", vec![1.0f32, f32::NEG_INFINITY, 1e-45])
        .unwrap();
    m.push("a.bool", vec![false, true]).unwrap();
    m.push("a.str", vec!["".to_string(), "é".into(), "x y".into()])
        .unwrap();
    m.push("a.u64", vec![u64::MAX]).unwrap();
    m.push("a.i64", vec![i64::MIN, -1]).unwrap();
    m.push("a.f64", vec![0.5f64, -0.0]).unwrap();
    m.push("a.empty_u32", Vec::<u32>::new()).unwrap();
    m.push("a.empty_str", Vec::<String>::new()).unwrap();
    m.push("a.empty_nested", Vec::<Array>::new()).unwrap();
    m.push(
        "a.nested",
        vec![
            Array::U64(vec![1, 2]),
            Array::String(vec!["n".into()]),
            Array::Array(vec![Array::F64(vec![2.5]), Array::Bool(vec![])]),
            Array::I16(vec![]),
        ],
    )
    .unwrap();
    let vocab: Vec<String> = (0..150_001).map(|i| format!("v{i}\u{2581}")).collect();
    m.push("tokenizer.ggml.tokens", vocab).unwrap();
    m
}

/// Deterministic pseudo-random bytes (xorshift), so data hashes mean something.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn meki_files_read_identically_in_gguf_py() {
    if !have_gguf_py("meki_files_read_identically_in_gguf_py") {
        return;
    }
    let dir = scratch("from-meki");
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for (name, alignment) in [
        ("meki-default.gguf", None),
        ("meki-align8.gguf", Some(8u32)),
    ] {
        let path = dir.join(name);
        let metadata = sample_metadata(alignment);
        // One tensor of every type meki knows, with shapes of 1 to 4 dims.
        // Not Q8_1: gguf-py's GGML_QUANT_SIZES gives it 40-byte blocks (the
        // old f32 d/s layout), ggml's block_q8_1 has 36; it is an activation
        // format that GGUF files do not hold.
        let tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> = GgmlType::ALL
            .iter()
            .filter(|&&ty| ty != GgmlType::Q8_1)
            .enumerate()
            .map(|(i, &ty)| {
                let ne0 = ty.block_size() as u64 * (1 + i as u64 % 3);
                let dims: Vec<u64> = [ne0, 3, 2, 2][..1 + i % 4].to_vec();
                let n = meki::gguf::tensor_n_bytes(&dims, ty).unwrap() as usize;
                (
                    format!("blk.{i}.{}", ty.name()),
                    dims,
                    ty,
                    noise(n, i as u64),
                )
            })
            .collect();
        let mut w = GgufWriter::create(&path).unwrap();
        w.copy_metadata(&metadata).unwrap();
        for (name, dims, ty, _) in &tensors {
            w.add_tensor_info(name, dims, *ty).unwrap();
        }
        for (name, _, _, data) in &tensors {
            // Stream one tensor in pieces, write the others whole.
            if name.ends_with("Q4_K") {
                let mut sink = w.tensor_writer(name).unwrap();
                for piece in data.chunks(7) {
                    std::io::Write::write_all(&mut sink, piece).unwrap();
                }
                sink.finish().unwrap();
            } else {
                w.write_tensor(name, data).unwrap();
            }
        }
        let infos: Vec<(TensorInfo, &[u8])> = w
            .tensors()
            .iter()
            .cloned()
            .zip(tensors.iter().map(|t| t.3.as_slice()))
            .collect();
        let want = dump(
            3,
            w.alignment(),
            w.data_offset().unwrap(),
            &metadata,
            &infos,
        );
        assert_eq!(w.alignment(), alignment.map_or(32, u64::from));
        w.finish().unwrap();

        // Our reader sees what we wrote...
        assert_same_dump(name, &dump_file(&GgufFile::open(&path).unwrap()), &want);
        files.push(path);
        expected.push(want);
    }
    // ...and so does gguf-py.
    for ((file, reference), want) in files.iter().zip(python_dumps(&files, &dir)).zip(&expected) {
        assert_same_dump(&file.display().to_string(), want, &reference);
    }
}

const VOCAB_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gguf/vocab_dumps.txt"
);

/// Every llama.cpp vocab GGUF (150k+ entry string arrays among them): our
/// dump must hash like gguf-py's, recorded in the fixture (gguf-py needs
/// minutes per large vocabulary). gguf-py runs live for files the fixture
/// does not know (another llama.cpp version) and to show a mismatch.
#[test]
fn llama_cpp_vocab_files_read_identically() {
    let models = llama_cpp_dir().join("models");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&models)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with("ggml-vocab-") && n.ends_with(".gguf")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        assert!(
            !require_reference(),
            "no ggml-vocab-*.gguf under {} (MEKI_REQUIRE_REFERENCE=1)",
            models.display()
        );
        eprintln!("SKIPPED: no ggml-vocab-*.gguf under {}", models.display());
        return;
    }
    // name -> (file sha256, gguf-py dump sha256)
    let fixture = std::fs::read_to_string(VOCAB_FIXTURE).unwrap();
    let recorded: std::collections::HashMap<&str, (&str, &str)> = fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], (f[1], f[2]))
        })
        .collect();

    let dir = scratch("vocab");
    let mut live = Vec::new(); // (file, our dump) to check with gguf-py now
    let mut largest = 0;
    let mut checked = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let ours = GgufFile::open(file).unwrap();
        let text = dump_file(&ours);
        let file_sha = format!("{:x}", Sha256::digest(ours.as_bytes()));
        match recorded.get(name.as_str()) {
            Some(&(fsha, dsha)) if fsha == file_sha => {
                if format!("{:x}", Sha256::digest(text.as_bytes())) != dsha {
                    live.push((file.clone(), text));
                }
                checked += 1;
            }
            _ => live.push((file.clone(), text)),
        }
        if let Ok(tokens) = ours.metadata().get_str_array("tokenizer.ggml.tokens") {
            largest = largest.max(tokens.len());
        }
        let copy = dir.join(&name);
        rewrite(&ours, &copy);
        assert_rewrite_matches("rewrite of a llama.cpp vocab file", &ours, file, &copy);
    }
    if !live.is_empty() {
        let names: Vec<_> = live.iter().map(|(f, _)| f.display().to_string()).collect();
        eprintln!("checking with gguf-py live (not matching the fixture): {names:?}");
        assert!(
            have_gguf_py("llama_cpp_vocab_files_read_identically"),
            "cannot check {names:?} without gguf-py"
        );
        let paths: Vec<PathBuf> = live.iter().map(|(f, _)| f.clone()).collect();
        for ((file, ours), reference) in live.iter().zip(python_dumps(&paths, &dir)) {
            assert_same_dump(&file.display().to_string(), ours, &reference);
        }
        panic!(
            "meki and live gguf-py agree on {names:?}, but the fixture differs: regenerate it \
             with tools/gguf_roundtrip.py fixture"
        );
    }
    eprintln!("{checked} vocab files match gguf-py's recorded dumps");
    assert!(
        largest >= 150_000,
        "largest vocabulary has only {largest} tokens"
    );
}
