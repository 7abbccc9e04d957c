//! GGUF writer: atomic replacement (no partial file ever under the target
//! name, no temporary left behind), declaration order and size checks,
//! alignment, and read-back through the reader.

use meki::gguf::{Array, GgufError, GgufFile, GgufWriter, Value};
use meki::kernels::formats::GgmlType;
use std::io::Write;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf_writer-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A writer with two tensors declared: "a" F32 [4, 2] (32 bytes), "b" Q8_0 [64] (68 bytes).
fn declared(path: &Path) -> GgufWriter {
    let mut w = GgufWriter::create(path).unwrap();
    w.add_kv("general.architecture", "test").unwrap();
    w.add_tensor_info("a", &[4, 2], GgmlType::F32).unwrap();
    w.add_tensor_info("b", &[64], GgmlType::Q8_0).unwrap();
    w
}

#[test]
fn unfinished_writers_leave_nothing() {
    let dir = scratch("unfinished");
    let target = dir.join("m.gguf");
    // Dropped before the header, after the header, in the middle of a
    // streamed tensor, and after all data but without finish.
    {
        let w = declared(&target);
        assert!(w.temp_path().exists());
        assert_eq!(
            entries(&dir),
            vec![format!(".m.gguf.tmp-{}", std::process::id())]
        );
    }
    assert!(entries(&dir).is_empty());
    {
        let mut w = declared(&target);
        w.write_tensor("a", &[0; 32]).unwrap();
    }
    assert!(entries(&dir).is_empty());
    {
        let mut w = declared(&target);
        w.write_tensor("a", &[0; 32]).unwrap();
        let mut sink = w.tensor_writer("b").unwrap();
        sink.write_all(&[1; 10]).unwrap();
    }
    assert!(entries(&dir).is_empty());
    {
        let mut w = declared(&target);
        w.write_tensor("a", &[0; 32]).unwrap();
        w.write_tensor("b", &[0; 68]).unwrap();
    }
    assert!(entries(&dir).is_empty());
}

#[test]
fn failed_finish_leaves_nothing_and_keeps_the_old_file() {
    let dir = scratch("failed");
    let target = dir.join("m.gguf");
    std::fs::write(&target, b"old contents").unwrap();
    let mut w = declared(&target);
    w.write_tensor("a", &[0; 32]).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(
        e.contains("\"b\" declared but its data was never written"),
        "{e}"
    );
    assert_eq!(entries(&dir), vec!["m.gguf"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"old contents");

    // A successful finish replaces it.
    let mut w = declared(&target);
    w.write_tensor("a", &[0; 32]).unwrap();
    w.write_tensor("b", &[0; 68]).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"old contents"); // not yet
    w.finish().unwrap();
    assert_eq!(entries(&dir), vec!["m.gguf"]);
    assert_eq!(GgufFile::open(&target).unwrap().tensors().len(), 2);
}

#[test]
fn misuse_is_an_error() {
    let dir = scratch("misuse");
    let mut w = declared(&dir.join("m.gguf"));
    assert!(w.add_kv("general.architecture", "again").is_err());
    assert!(w.add_tensor_info("a", &[4], GgmlType::F32).is_err());
    let e = w
        .add_tensor_info("c", &[33], GgmlType::Q4_0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("block size"), "{e}");
    let e = w
        .add_tensor_info("d", &[1; 5], GgmlType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 dims"), "{e}");
    let long = "x".repeat(64);
    assert!(w.add_tensor_info(&long, &[1], GgmlType::F32).is_err());

    let e = w.write_tensor("b", &[0; 68]).unwrap_err().to_string();
    assert!(
        e.contains("out of order") && e.contains("\"a\" is next"),
        "{e}"
    );
    let e = w.write_tensor("a", &[0; 31]).unwrap_err().to_string();
    assert!(e.contains("got 31 bytes, declared 32"), "{e}");
    let e = w.write_tensor("zz", &[0; 1]).unwrap_err().to_string();
    assert!(e.contains("out of order"), "{e}");
    w.write_tensor("a", &[0; 32]).unwrap();
    // The header is out: no more declarations.
    assert!(w.add_kv("late", 1u32).is_err());
    assert!(w.add_tensor_info("late", &[1], GgmlType::F32).is_err());
    // Streaming: too many bytes, then too few.
    {
        let mut sink = w.tensor_writer("b").unwrap();
        assert!(sink.write_all(&[0; 69]).is_err());
        sink.write_all(&[0; 60]).unwrap();
        let e = sink.finish().unwrap_err().to_string();
        assert!(e.contains("8 bytes short"), "{e}");
    }
    // The writer is now poisoned; finish refuses and cleans up.
    assert!(w.write_tensor("b", &[0; 68]).is_err());
    assert!(w.finish().is_err());
    assert!(entries(&dir).is_empty());

    // A bad general.alignment is caught when the header is written.
    let mut w = GgufWriter::create(dir.join("n.gguf")).unwrap();
    w.add_kv("general.alignment", 24u32).unwrap();
    assert!(matches!(w.finish(), Err(GgufError::Metadata { .. })));
    let mut w = GgufWriter::create(dir.join("n.gguf")).unwrap();
    w.add_kv("general.alignment", 32u64).unwrap();
    assert!(w.finish().is_err());
    assert!(entries(&dir).is_empty());
}

#[test]
fn alignment_is_honoured() {
    let dir = scratch("align");
    for align in [1u32, 8, 32, 256] {
        let path = dir.join(format!("a{align}.gguf"));
        let mut w = GgufWriter::create(&path).unwrap();
        w.add_kv("general.alignment", align).unwrap();
        w.add_tensor_info("x", &[3], GgmlType::F32).unwrap(); // 12 bytes
        w.add_tensor_info("y", &[5], GgmlType::I8).unwrap();
        w.add_tensor_info("z", &[2], GgmlType::F16).unwrap();
        w.write_tensor("x", &[1; 12]).unwrap();
        w.write_tensor("y", &[2; 5]).unwrap();
        w.write_tensor("z", &[3; 4]).unwrap();
        w.finish().unwrap();
        let f = GgufFile::open(&path).unwrap();
        let a = u64::from(align);
        assert_eq!(f.header().alignment, a);
        assert_eq!(f.header().data_offset % a, 0);
        let offsets: Vec<u64> = f.tensors().iter().map(|t| t.offset).collect();
        let pad = |n: u64| n.div_ceil(a) * a;
        assert_eq!(offsets, vec![0, pad(12), pad(12) + pad(5)]);
        assert_eq!(
            f.as_bytes().len() as u64,
            f.header().data_offset + pad(12) + pad(5) + pad(4)
        );
        assert_eq!(f.tensor_data_by_name("y").unwrap(), &[2; 5]);
        assert_eq!(f.tensor_data_by_name("z").unwrap(), &[3; 4]);
    }
}

#[test]
fn metadata_round_trips_and_overrides_in_place() {
    let dir = scratch("meta");
    let src_path = dir.join("src.gguf");
    let mut w = GgufWriter::create(&src_path).unwrap();
    w.add_kv("general.architecture", "llama").unwrap();
    w.add_kv("general.file_type", 1u32).unwrap();
    w.add_kv("s", Vec::<String>::new()).unwrap();
    w.add_kv(
        "n",
        vec![
            Array::U8(vec![1]),
            Array::Array(vec![Array::F32(vec![0.5])]),
        ],
    )
    .unwrap();
    w.add_kv("tail", -1i64).unwrap();
    w.finish().unwrap();
    let src = GgufFile::open(&src_path).unwrap();

    let dst_path = dir.join("dst.gguf");
    let mut w = GgufWriter::create(&dst_path).unwrap();
    w.copy_metadata(src.metadata()).unwrap();
    w.set_kv("general.file_type", 7u32).unwrap();
    w.set_kv("added", true).unwrap();
    w.remove_kv("s").unwrap();
    w.finish().unwrap();
    let dst = GgufFile::open(&dst_path).unwrap();
    let keys: Vec<&str> = dst.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.file_type",
            "n",
            "tail",
            "added"
        ]
    );
    assert_eq!(dst.metadata().get_u32("general.file_type").unwrap(), 7);
    assert_eq!(dst.metadata().get("n"), src.metadata().get("n"));
    assert_eq!(dst.metadata().get("tail"), Some(&Value::I64(-1)));
    assert_eq!(dst.metadata().get_uint("general.file_type").unwrap(), 7);
    let e = dst
        .metadata()
        .get_str("general.file_type")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("general.file_type") && e.contains("expected STRING, found UINT32"),
        "{e}"
    );
    let e = dst.metadata().get_f32("missing").unwrap_err().to_string();
    assert!(e.contains("\"missing\": missing"), "{e}");
    assert!(dst.metadata().get_uint("tail").is_err());
}

#[test]
fn streamed_and_whole_writes_give_the_same_bytes() {
    let dir = scratch("stream");
    let data: Vec<u8> = (0..68u32).map(|i| (i * 7) as u8).collect();
    let mut files = Vec::new();
    for streamed in [false, true] {
        let path = dir.join(format!("s{streamed}.gguf"));
        let mut w = declared(&path);
        w.write_tensor("a", &[9; 32]).unwrap();
        if streamed {
            let mut sink = w.tensor_writer("b").unwrap();
            for c in data.chunks(5) {
                sink.write_all(c).unwrap();
            }
            assert_eq!(sink.remaining(), 0);
            sink.finish().unwrap();
        } else {
            w.write_tensor("b", &data).unwrap();
        }
        w.finish().unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(files[0], files[1]);
}
