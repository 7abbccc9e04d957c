//! Malformed GGUF input: every defect is an `Err` naming the field and its
//! byte offset, never a panic or an allocation sized by an unchecked count.
//! Files are assembled by hand here, independently of meki's writer.

use meki::gguf::{GgufError, GgufFile, GgufHeader, MAX_ARRAY_DEPTH};
use meki::kernels::formats::GgmlType;

const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U32: u32 = 4;
const T_U8: u32 = 0;
const T_U64: u32 = 10;

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// A metadata pair: key, type id, payload.
fn kv(key: &[u8], type_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = string(key);
    v.extend_from_slice(&type_id.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// An array body: element type, length, raw elements.
fn array(elem_type: u32, len: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = elem_type.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(elems);
    v
}

#[derive(Clone)]
struct Tensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

/// A GGUF file, field by field, so tests can break any one of them.
#[derive(Clone)]
struct Spec {
    magic: [u8; 4],
    version: u32,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<Tensor>,
    alignment: usize,
    data: Vec<u8>,
}

/// Byte offsets where each section of a built file ends.
struct Layout {
    header_end: usize,
    kv_ends: Vec<usize>,
    tensor_ends: Vec<usize>,
    data_offset: usize,
}

impl Spec {
    fn valid() -> Spec {
        let mut nested = array(T_U8, 2, &[1, 2]);
        nested = array(T_ARRAY, 1, &nested);
        let mut strs = string(b"p");
        strs.extend(string(b"q"));
        Spec {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: vec![
                kv(b"general.architecture", T_STRING, &string(b"x")),
                kv(b"a.u32", T_U32, &7u32.to_le_bytes()),
                kv(b"a.arr", T_ARRAY, &array(T_STRING, 2, &strs)),
                kv(b"a.nested", T_ARRAY, &nested),
            ],
            tensors: vec![
                Tensor {
                    name: b"t0".to_vec(),
                    dims: vec![4, 2],
                    type_id: 0, // F32: 32 bytes
                    offset: 0,
                },
                Tensor {
                    name: b"t1".to_vec(),
                    dims: vec![32],
                    type_id: 8, // Q8_0: 34 bytes
                    offset: 32,
                },
            ],
            alignment: 32,
            data: (0..66u8).collect(), // ends exactly at the last tensor's end
        }
    }

    fn build(&self) -> (Vec<u8>, Layout) {
        let mut b = self.magic.to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        let tc = self.tensor_count.unwrap_or(self.tensors.len() as u64);
        let kc = self.kv_count.unwrap_or(self.kvs.len() as u64);
        b.extend_from_slice(&tc.to_le_bytes());
        b.extend_from_slice(&kc.to_le_bytes());
        let header_end = b.len();
        let mut kv_ends = Vec::new();
        for kv in &self.kvs {
            b.extend_from_slice(kv);
            kv_ends.push(b.len());
        }
        let mut tensor_ends = Vec::new();
        for t in &self.tensors {
            b.extend(string(&t.name));
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.type_id.to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
            tensor_ends.push(b.len());
        }
        b.resize(b.len().div_ceil(self.alignment) * self.alignment, 0);
        let data_offset = b.len();
        b.extend_from_slice(&self.data);
        (
            b,
            Layout {
                header_end,
                kv_ends,
                tensor_ends,
                data_offset,
            },
        )
    }

    fn bytes(&self) -> Vec<u8> {
        self.build().0
    }
}

/// Parses `bytes`, expecting a format error whose field contains `field`
/// and whose message contains `message`.
#[track_caller]
fn expect_err(bytes: &[u8], field: &str, message: &str) -> String {
    match GgufHeader::parse(bytes) {
        Ok(_) => panic!("accepted a file that should fail on {field:?} ({message:?})"),
        Err(e @ GgufError::Format { .. }) => {
            let text = e.to_string();
            let GgufError::Format {
                field: f,
                offset,
                message: m,
            } = e
            else {
                unreachable!()
            };
            assert!(
                f.contains(field) && m.contains(message),
                "expected field ~{field:?} / message ~{message:?}, got: {text}"
            );
            assert!(
                offset as usize <= bytes.len(),
                "offset past the file: {text}"
            );
            assert!(text.contains("at byte"), "{text}");
            text
        }
        Err(e) => panic!("expected a format error, got {e}"),
    }
}

#[test]
fn the_hand_built_file_is_valid() {
    let (bytes, layout) = Spec::valid().build();
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.data_offset as usize, layout.data_offset);
    assert_eq!(h.metadata.get_str("general.architecture").unwrap(), "x");
    assert_eq!(h.metadata.get_u32("a.u32").unwrap(), 7);
    assert_eq!(h.metadata.get_str_array("a.arr").unwrap(), &["p", "q"]);
    let t1 = h.tensor("t1").unwrap();
    assert_eq!(
        (t1.ggml_type, t1.offset, t1.n_bytes),
        (GgmlType::Q8_0, 32, 34)
    );
    assert_eq!(t1.dims, vec![32]);
    // v2 has the same layout.
    let v2 = Spec {
        version: 2,
        ..Spec::valid()
    };
    assert_eq!(GgufHeader::parse(&v2.bytes()).unwrap().version, 2);
}

#[test]
fn truncation_at_every_byte_fails_naming_the_section() {
    let (bytes, layout) = Spec::valid().build();
    for cut in 0..bytes.len() {
        let want = if cut < 4 {
            "magic"
        } else if cut < 8 {
            "version"
        } else if cut < 16 {
            "tensor count"
        } else if cut < layout.header_end {
            "metadata count"
        } else if cut < *layout.kv_ends.last().unwrap() {
            "metadata"
        } else if cut < *layout.tensor_ends.last().unwrap() {
            "tensor"
        } else {
            "offset" // tensor data now past the end
        };
        let text = match GgufHeader::parse(&bytes[..cut]) {
            Ok(_) => panic!("truncation at byte {cut} of {} accepted", bytes.len()),
            Err(e) => e.to_string(),
        };
        assert!(
            text.contains(want),
            "cut at {cut}: expected the error to name {want:?}: {text}"
        );
        assert!(
            text.contains("truncated") || text.contains("exceeds") || text.contains("past the end"),
            "cut at {cut}: {text}"
        );
    }
    // At section boundaries the exact field is named (a long first value
    // keeps the metadata count plausible for the truncated remainder).
    let mut s = Spec::valid();
    s.kvs[0] = kv(b"general.architecture", T_STRING, &string(&[b'x'; 200]));
    let (long, long_layout) = s.build();
    let kv0 = long_layout.kv_ends[0];
    expect_err(&long[..kv0 + 2], "metadata[1] key length", "truncated");
    expect_err(
        &long[..kv0 + 8 + 3],
        "metadata[1] key (5 bytes from byte",
        "truncated",
    );
    expect_err(
        &long[..long_layout.kv_ends[1] - 2],
        "metadata \"a.u32\"",
        "truncated",
    );
    expect_err(
        &long[..long_layout.kv_ends[1] + 8 + 5 + 4],
        "metadata \"a.arr\" array element type",
        "truncated",
    );
    expect_err(
        &long[..long_layout.kv_ends[1] + 8 + 5 + 4 + 4 + 8 + 17],
        "metadata \"a.arr\"[1] (1 bytes from byte",
        "truncated",
    );
    expect_err(
        &bytes[..layout.kv_ends[3]],
        "tensor count",
        "exceeds what the remaining 0 bytes",
    );
    expect_err(&bytes[..layout.tensor_ends[0]], "tensor count", "exceeds");
    expect_err(
        &bytes[..layout.data_offset],
        "tensor \"t0\" offset",
        "past the end",
    );
}

#[test]
fn empty_file_and_bad_magic() {
    expect_err(&[], "magic", "truncated");
    let s = Spec {
        magic: *b"GGML",
        ..Spec::valid()
    };
    expect_err(&s.bytes(), "magic", "bad magic");
}

#[test]
fn unsupported_versions() {
    for (version, message) in [
        (1, "v1 is not supported"),
        (0, "unsupported version 0"),
        (4, "unsupported version 4"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let s = Spec {
            version,
            ..Spec::valid()
        };
        expect_err(&s.bytes(), "version", message);
    }
}

#[test]
fn bit_flips_never_panic_and_header_flips_fail() {
    let bytes = Spec::valid().bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let r = GgufHeader::parse(&b);
            // Magic, version (except 3 -> 2) and the high bytes of the counts
            // are always fatal.
            let fatal = i < 4
                || (4..8).contains(&i) && !(i == 4 && bit == 0)
                || (12..16).contains(&i)
                || (20..24).contains(&i);
            if fatal {
                let e = r.expect_err(&format!("flip of bit {bit} of byte {i} accepted"));
                let text = e.to_string();
                assert!(
                    text.contains("magic")
                        || text.contains("version")
                        || text.contains("count")
                        || text.contains("truncated"),
                    "byte {i} bit {bit}: {text}"
                );
            }
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let bytes = Spec::valid().bytes();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut errors = 0;
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if let Err(e) = GgufHeader::parse(&b) {
            assert!(!e.to_string().is_empty());
            errors += 1;
        }
    }
    assert!(errors > 1000, "only {errors} of 20000 corruptions detected");
}

#[test]
fn huge_counts_fail_before_allocating() {
    let s = Spec {
        kv_count: Some(u64::MAX),
        ..Spec::valid()
    };
    expect_err(&s.bytes(), "metadata count", "exceeds");
    let s = Spec {
        tensor_count: Some(u64::MAX),
        ..Spec::valid()
    };
    expect_err(&s.bytes(), "tensor count", "exceeds");
    let s = Spec {
        tensor_count: Some(1 << 40),
        ..Spec::valid()
    };
    expect_err(&s.bytes(), "tensor count", "exceeds");

    // Array length far beyond the file, for fixed-size and string elements.
    for (elem, len) in [
        (T_U64, u64::MAX / 8 + 1),
        (T_STRING, 1 << 50),
        (T_ARRAY, u64::MAX),
    ] {
        let mut s = Spec::valid();
        s.kvs[2] = kv(b"a.arr", T_ARRAY, &array(elem, len, &[]));
        expect_err(&s.bytes(), "metadata \"a.arr\" array length", "exceeds");
    }
    // String lengths past the end, in a key, a value and an array element.
    let mut s = Spec::valid();
    s.kvs[0] = kv(b"general.architecture", T_STRING, &u64::MAX.to_le_bytes());
    expect_err(&s.bytes(), "metadata \"general.architecture\"", "truncated");
    let mut s = Spec::valid();
    s.kvs[1] = (1u64 << 62).to_le_bytes().to_vec();
    expect_err(&s.bytes(), "metadata[1] key", "truncated");
    let mut s = Spec::valid();
    let mut strs = string(b"p");
    strs.extend((1000u64).to_le_bytes());
    s.kvs[2] = kv(b"a.arr", T_ARRAY, &array(T_STRING, 2, &strs));
    expect_err(&s.bytes(), "metadata \"a.arr\"[1]", "truncated");
    // Tensor name length.
    let mut s = Spec::valid();
    s.tensors[1].name = vec![b'n'; 10];
    let mut b = s.bytes();
    let at = s.build().1.tensor_ends[0];
    b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(&b, "tensor[1] name", "truncated");
}

#[test]
fn bad_dims() {
    let cases: [(Vec<u64>, u32, &str, &str); 6] = [
        (vec![1; 5], 0, "n_dims", "5 dims"),
        (vec![1 << 32, 1 << 32], 0, "dims", "overflows"),
        (vec![1 << 62, 4], 0, "dims", "overflows"),
        (vec![u64::MAX], 0, "dims", "exceeds 2^63-1"),
        (
            vec![33, 1],
            8,
            "dims",
            "not a multiple of the Q8_0 block size 32",
        ),
        (
            vec![128],
            12,
            "dims",
            "not a multiple of the Q4_K block size 256",
        ),
    ];
    for (dims, type_id, field, message) in cases {
        let mut s = Spec::valid();
        s.tensors[1].dims = dims;
        s.tensors[1].type_id = type_id;
        expect_err(&s.bytes(), &format!("tensor \"t1\" {field}"), message);
    }
    // n_dims = u32::MAX must not allocate 4G dims.
    let mut s = Spec::valid();
    s.tensors[1].dims = vec![];
    let (mut b, layout) = s.build();
    let at = layout.tensor_ends[0] + 8 + 2;
    b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_err(&b, "tensor \"t1\" n_dims", "at most 4");
}

#[test]
fn unknown_type_ids() {
    let mut s = Spec::valid();
    s.tensors[1].type_id = 99;
    let text = expect_err(
        &s.bytes(),
        "tensor \"t1\" type",
        "unknown or unsupported ggml type id 99",
    );
    assert!(text.contains("t1") && text.contains("99"));
    let mut s = Spec::valid();
    s.kvs[1] = kv(b"a.u32", 13, &7u32.to_le_bytes());
    expect_err(
        &s.bytes(),
        "metadata \"a.u32\" type",
        "unknown value type id 13",
    );
    let mut s = Spec::valid();
    s.kvs[2] = kv(b"a.arr", T_ARRAY, &array(77, 0, &[]));
    expect_err(
        &s.bytes(),
        "metadata \"a.arr\" array element type",
        "unknown value type id 77",
    );
}

#[test]
fn tensor_data_outside_the_file() {
    let mut s = Spec::valid();
    s.tensors[1].offset = 64;
    expect_err(&s.bytes(), "tensor \"t1\" offset", "past the end");
    let mut s = Spec::valid();
    s.tensors[1].offset = u64::MAX - 31; // a multiple of 32; offset + size overflows
    expect_err(&s.bytes(), "tensor \"t1\" offset", "past the end");
    let mut s = Spec::valid();
    s.data.pop();
    expect_err(&s.bytes(), "tensor \"t1\" offset", "past the end");
}

#[test]
fn overlapping_and_misaligned_tensors() {
    let mut s = Spec::valid();
    s.tensors[1].offset = 0;
    expect_err(&s.bytes(), "tensor \"t1\" offset", "overlaps tensor \"t0\"");
    // Declared out of order, still overlapping.
    let mut s = Spec::valid();
    s.tensors[0].offset = 32;
    s.tensors[1].offset = 0;
    s.tensors[1].dims = vec![64]; // 68 bytes: runs into t0
    s.data = vec![0; 100];
    expect_err(&s.bytes(), "tensor \"t0\" offset", "overlaps tensor \"t1\"");
    let mut s = Spec::valid();
    s.tensors[1].offset = 36;
    expect_err(
        &s.bytes(),
        "tensor \"t1\" offset",
        "not a multiple of the alignment 32",
    );
    // Zero-sized tensors overlap nothing.
    let mut s = Spec::valid();
    s.tensors[1].dims = vec![0];
    s.tensors[1].offset = 0;
    assert_eq!(GgufHeader::parse(&s.bytes()).unwrap().tensors[1].n_bytes, 0);
}

#[test]
fn duplicates() {
    let mut s = Spec::valid();
    s.tensors[1].name = b"t0".to_vec();
    expect_err(&s.bytes(), "tensor \"t0\" name", "duplicate tensor name");
    let mut s = Spec::valid();
    s.kvs[1] = kv(b"general.architecture", T_U32, &7u32.to_le_bytes());
    expect_err(
        &s.bytes(),
        "metadata \"general.architecture\"",
        "duplicate key",
    );
}

#[test]
fn invalid_utf8() {
    let bad = b"ok\xff\xfe";
    let mut s = Spec::valid();
    s.kvs[1] = kv(bad, T_U32, &7u32.to_le_bytes());
    expect_err(
        &s.bytes(),
        "metadata[1] key",
        "not valid UTF-8 (bad byte at offset 2",
    );
    let mut s = Spec::valid();
    s.kvs[0] = kv(b"general.architecture", T_STRING, &string(bad));
    expect_err(
        &s.bytes(),
        "metadata \"general.architecture\"",
        "not valid UTF-8",
    );
    let mut s = Spec::valid();
    let mut strs = string(b"p");
    strs.extend(string(b"\xc3"));
    s.kvs[2] = kv(b"a.arr", T_ARRAY, &array(T_STRING, 2, &strs));
    expect_err(&s.bytes(), "metadata \"a.arr\"[1]", "not valid UTF-8");
    let mut s = Spec::valid();
    s.tensors[0].name = bad.to_vec();
    expect_err(&s.bytes(), "tensor[0] name", "not valid UTF-8");
}

#[test]
fn bad_alignment_key() {
    for (type_id, payload) in [
        (T_U32, 0u32.to_le_bytes().to_vec()),
        (T_U32, 48u32.to_le_bytes().to_vec()),
        (T_U64, 32u64.to_le_bytes().to_vec()),
    ] {
        let mut s = Spec::valid();
        s.kvs.push(kv(b"general.alignment", type_id, &payload));
        expect_err(&s.bytes(), "metadata \"general.alignment\"", "power of two");
    }
    // A valid non-default alignment moves the data section.
    let mut s = Spec::valid();
    s.kvs
        .push(kv(b"general.alignment", T_U32, &64u32.to_le_bytes()));
    s.alignment = 64;
    s.tensors[1].offset = 64;
    s.data = vec![7; 64 + 34];
    let (bytes, layout) = s.build();
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!(
        (h.alignment, h.data_offset as usize),
        (64, layout.data_offset)
    );
    s.tensors[1].offset = 32;
    expect_err(&s.bytes(), "tensor \"t1\" offset", "alignment 64");
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut body = array(T_U8, 0, &[]);
    for _ in 0..MAX_ARRAY_DEPTH + 5 {
        body = array(T_ARRAY, 1, &body);
    }
    let mut s = Spec::valid();
    s.kvs[3] = kv(b"a.nested", T_ARRAY, &body);
    expect_err(&s.bytes(), "metadata \"a.nested\"", "nested deeper than");
    // A million levels would overflow the stack if not bounded.
    let mut s = Spec::valid();
    let mut deep = Vec::new();
    for _ in 0..1_000_000 {
        deep.extend(array(T_ARRAY, 1, &[]));
    }
    s.kvs[3] = kv(b"a.nested", T_ARRAY, &deep);
    expect_err(&s.bytes(), "metadata \"a.nested\"", "nested deeper than");
}

fn scratch_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf_bad_input-{name}"));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn open_reports_io_and_format_errors() {
    let missing = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf-no-such-file");
    assert!(matches!(
        GgufFile::open(&missing),
        Err(GgufError::Io { .. })
    ));
    let empty = scratch_file("empty.gguf", &[]);
    assert!(GgufFile::open(&empty)
        .unwrap_err()
        .to_string()
        .contains("magic"));
    let mut s = Spec::valid();
    s.data.truncate(40);
    let cut = scratch_file("cut.gguf", &s.bytes());
    assert!(GgufFile::open(&cut)
        .unwrap_err()
        .to_string()
        .contains("tensor \"t1\" offset"));
}

#[test]
fn typed_views_check_size_and_alignment() {
    let f = GgufFile::open(scratch_file("valid.gguf", &Spec::valid().bytes())).unwrap();
    let t0 = f.tensor("t0").unwrap();
    let floats: &[f32] = f.tensor_as(t0).unwrap();
    assert_eq!(floats.len(), 8);
    assert_eq!(floats[0].to_le_bytes(), [0, 1, 2, 3]);
    let t1 = f.tensor("t1").unwrap();
    let blocks: &[meki::kernels::formats::BlockQ8_0] = f.tensor_as(t1).unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].qs[0], 32 + 2);
    // Wrong element type for the tensor's ggml type.
    let e = f.tensor_as::<f32>(t1).unwrap_err().to_string();
    assert!(e.contains("t1") && e.contains("Q8_0"), "{e}");
    // Zero-copy: the slice points into the map.
    let data = f.tensor_data(t0).unwrap();
    let base = f.as_bytes().as_ptr() as usize;
    assert_eq!(
        data.as_ptr() as usize - base,
        f.header().data_offset as usize
    );

    // Alignment 1 permits an odd data offset: viewing as f32 then fails.
    let mut s = Spec::valid();
    s.kvs
        .push(kv(b"general.alignment", T_U32, &1u32.to_le_bytes()));
    s.alignment = 1;
    s.tensors[0].offset = 1;
    s.tensors[1].offset = 34;
    s.data = vec![0; 34 + 34];
    let (mut bytes, layout) = s.build();
    if layout.data_offset % 2 == 1 {
        // keep the tensor odd-addressed: start data on an even byte
        s.tensors[0].offset = 0;
        s.tensors[1].offset = 34;
        bytes = s.build().0;
    }
    let f = GgufFile::open(scratch_file("odd.gguf", &bytes)).unwrap();
    let t0 = f.tensor("t0").unwrap();
    assert_eq!((f.header().data_offset + t0.offset) % 2, 1);
    let e = f.tensor_as::<f32>(t0).unwrap_err().to_string();
    assert!(e.contains("t0") && e.contains("alignment"), "{e}");
}
