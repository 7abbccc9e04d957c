//! The malformed-file suite: valid files made at test time (a MeKi model and
//! a backbone + sidecar pair converted from the fixtures, the fixture
//! checkpoints), then damaged every way a download or a disk can damage
//! them: truncated at every section boundary and at random offsets, header
//! fields bit-flipped, counts and dimensions that overflow, string lengths
//! past the end, tensor data out of range, overlapping or misaligned,
//! unknown type ids, nested arrays, a sidecar that does not match its model,
//! damaged safetensors and torch checkpoints.
//!
//! Each damaged GGUF is opened in-process (an `Err` naming the field and
//! offset; no single allocation larger than the file justifies, counted by
//! the allocator below) and through `meki-convert inspect` and `meki-run`
//! (exit status 1, a message, no panic, no signal, under a 1 GiB address
//! space limit). Damaged checkpoints go through `meki-convert checkpoint`
//! (status 1, no output file and no temporary file left behind).
//!
//! The GGUF layout is walked here independently of meki's reader.

use meki::gguf::{GgufError, GgufFile};
use meki::kernels::formats::GgmlType;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

// ---- largest single allocation, to catch allocations sized by a count ----

struct PeakAlloc;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

/// Tests of this file run one at a time (the allocation peak is global).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- valid inputs ----

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/meki")
        .join(name)
}

/// Scratch directory of this test binary (recreated per run).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("malformed_files");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

struct Valid {
    /// MeKi model with its tables inside.
    model: PathBuf,
    /// Backbone of the split pair, and its sidecar.
    base: PathBuf,
    sidecar: PathBuf,
    /// Sidecar of another model (hf_static) for the mismatch case.
    other_sidecar: PathBuf,
}

fn convert(input: &Path, out: &Path, split: bool) {
    let opts = meki::convert::CheckpointOptions {
        input: input.to_path_buf(),
        output: out.to_path_buf(),
        backbone_type: "f16".into(),
        table_type: "q8_0".into(),
        meki_proj_type: None,
        tokenizer: None,
        base: None,
        split_tables: split,
        threads: 2,
        meki_dim: None,
        progress: false,
    };
    meki::convert::convert_checkpoint(&opts)
        .unwrap_or_else(|e| panic!("converting {}: {e}", input.display()));
}

fn valid() -> &'static Valid {
    static V: OnceLock<Valid> = OnceLock::new();
    V.get_or_init(|| {
        let d = scratch().join("valid");
        std::fs::create_dir_all(&d).unwrap();
        let v = Valid {
            model: d.join("model.gguf"),
            base: d.join("base.gguf"),
            sidecar: d.join("base.meki.gguf"),
            other_sidecar: d.join("other.meki.gguf"),
        };
        convert(&fixture("hf_demo"), &v.model, false);
        convert(&fixture("hf_demo"), &v.base, true);
        convert(&fixture("hf_static"), &d.join("other.gguf"), true);
        v
    })
}

// ---- an independent walk of the GGUF layout ----

#[derive(Clone, Debug)]
struct Kv {
    start: usize,
    key: String,
    /// Offset of the value type id.
    type_at: usize,
    type_id: u32,
    end: usize,
}

#[derive(Clone, Debug)]
struct TInfo {
    start: usize,
    n_dims_at: usize,
    dims_at: usize,
    n_dims: usize,
    type_at: usize,
    offset_at: usize,
    end: usize,
    /// Absolute data range.
    data: std::ops::Range<usize>,
}

#[derive(Debug)]
struct Walk {
    kvs: Vec<Kv>,
    tensors: Vec<TInfo>,
    infos_end: usize,
    data_offset: usize,
    alignment: usize,
}

fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Skips one value of type `ty` at `p`; returns the offset after it.
fn skip_value(b: &[u8], mut p: usize, ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => p + 1,
        2 | 3 => p + 2,
        4..=6 => p + 4,
        10..=12 => p + 8,
        8 => p + 8 + rd_u64(b, p) as usize,
        9 => {
            let et = rd_u32(b, p);
            let n = rd_u64(b, p + 4) as usize;
            p += 12;
            for _ in 0..n {
                p = skip_value(b, p, et);
            }
            p
        }
        t => panic!("valid file has value type {t}"),
    }
}

fn walk(b: &[u8]) -> Walk {
    assert_eq!(&b[..4], b"GGUF");
    let n_t = rd_u64(b, 8) as usize;
    let n_kv = rd_u64(b, 16) as usize;
    let mut p = 24;
    let mut kvs = Vec::new();
    let mut alignment = 32;
    for _ in 0..n_kv {
        let start = p;
        let kl = rd_u64(b, p) as usize;
        let key = String::from_utf8(b[p + 8..p + 8 + kl].to_vec()).unwrap();
        p += 8 + kl;
        let type_at = p;
        let type_id = rd_u32(b, p);
        p = skip_value(b, p + 4, type_id);
        if key == "general.alignment" {
            alignment = rd_u32(b, type_at + 4) as usize;
        }
        kvs.push(Kv {
            start,
            key,
            type_at,
            type_id,
            end: p,
        });
    }
    let mut raw = Vec::new();
    for _ in 0..n_t {
        let start = p;
        let nl = rd_u64(b, p) as usize;
        p += 8 + nl;
        let n_dims_at = p;
        let n_dims = rd_u32(b, p) as usize;
        p += 4;
        let dims_at = p;
        let dims: Vec<u64> = (0..n_dims).map(|i| rd_u64(b, p + 8 * i)).collect();
        p += 8 * n_dims;
        let type_at = p;
        let ty = GgmlType::from_id(rd_u32(b, p)).expect("valid type");
        let offset_at = p + 4;
        let offset = rd_u64(b, offset_at) as usize;
        p += 12;
        let rows: u64 = dims[1..].iter().product();
        let n = (ty.row_bytes(dims[0]).unwrap() * rows) as usize;
        raw.push((
            start, n_dims_at, dims_at, n_dims, type_at, offset_at, p, offset, n,
        ));
    }
    let infos_end = p;
    let data_offset = infos_end.div_ceil(alignment) * alignment;
    let tensors = raw
        .into_iter()
        .map(
            |(start, n_dims_at, dims_at, n_dims, type_at, offset_at, end, off, n)| TInfo {
                start,
                n_dims_at,
                dims_at,
                n_dims,
                type_at,
                offset_at,
                end,
                data: data_offset + off..data_offset + off + n,
            },
        )
        .collect();
    Walk {
        kvs,
        tensors,
        infos_end,
        data_offset,
        alignment,
    }
}

// ---- damage ----

/// What a damaged file must do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Rejected: an error naming the field (containing this text).
    Error(&'static str),
    /// Anything but a crash (a flipped bit may leave a valid file).
    NoCrash,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

/// A deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Inserts the metadata pair `kv` (key, type, value bytes) first, padded to
/// a multiple of the alignment with a longer key, so every other part of
/// the file stays valid.
fn insert_kv(b: &[u8], w: &Walk, key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let base = 8 + key.len() + 4 + value.len();
    let pad = (w.alignment - base % w.alignment) % w.alignment;
    let key = format!("{key}{}", "_".repeat(pad));
    let mut kv = (key.len() as u64).to_le_bytes().to_vec();
    kv.extend_from_slice(key.as_bytes());
    kv.extend_from_slice(&type_id.to_le_bytes());
    kv.extend_from_slice(value);
    assert_eq!(kv.len() % w.alignment, 0);
    let mut out = b[..24].to_vec();
    put_u64(&mut out, 16, rd_u64(b, 16) + 1);
    out.extend_from_slice(&kv);
    out.extend_from_slice(&b[24..]);
    out
}

/// Every damage of one valid GGUF file.
fn gguf_cases(label: &str, b: &[u8], seed: u64) -> Vec<Case> {
    let w = walk(b);
    let mut cases = Vec::new();
    let mut add = |name: String, bytes: Vec<u8>, expect: Expect| {
        cases.push(Case {
            name: format!("{label}: {name}"),
            bytes,
            expect,
        })
    };
    let data_end = w
        .tensors
        .iter()
        .map(|t| t.data.end)
        .max()
        .unwrap_or(w.data_offset);
    assert!(data_end <= b.len());

    // Truncation at every section boundary (and one byte either side).
    let mut cuts = vec![0, 3, 4, 7, 8, 15, 16, 23, 24];
    for kv in &w.kvs {
        cuts.extend([
            kv.start + 4,
            kv.start + 8,
            kv.type_at,
            kv.type_at + 4,
            kv.end - 1,
        ]);
    }
    for t in &w.tensors {
        cuts.extend([
            t.start + 8,
            t.n_dims_at,
            t.dims_at,
            t.type_at,
            t.offset_at,
            t.end - 1,
        ]);
        cuts.extend([t.data.start, t.data.end - 1]);
    }
    cuts.extend([w.infos_end, w.data_offset, data_end - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts.into_iter().filter(|&c| c < data_end) {
        add(
            format!("truncated at byte {c}"),
            b[..c].to_vec(),
            Expect::Error(""),
        );
    }
    // ...and at random offsets.
    let mut rng = Rng(seed);
    for _ in 0..40 {
        let c = rng.below(data_end);
        add(
            format!("truncated at random byte {c}"),
            b[..c].to_vec(),
            Expect::Error(""),
        );
    }

    // Header fields bit-flipped: magic, version, counts.
    let step = if seed == 1 { 1 } else { 7 };
    for bit in (0..24 * 8).step_by(step) {
        let mut d = b.to_vec();
        d[bit / 8] ^= 1 << (bit % 8);
        let field = match bit / 8 {
            0..=3 => "magic",
            4..=7 => "version",
            _ => "",
        };
        // A lower count may still parse as a (different) valid file only if
        // the bytes happen to line up; a flip in the count's top bytes cannot.
        let expect = if (8..24).contains(&(bit / 8)) && bit % 64 < 16 || bit == 32 {
            // (bit 32 turns version 3 into 2, an equally valid GGUF.)
            Expect::NoCrash
        } else {
            Expect::Error(field)
        };
        add(format!("header bit {bit} flipped"), d, expect);
    }
    // Random bit flips anywhere in the metadata and tensor table.
    for _ in 0..40 {
        let mut d = b.to_vec();
        let at = 24 + rng.below(w.infos_end - 24);
        d[at] ^= 1 << rng.below(8);
        add(format!("bit flipped at byte {at}"), d, Expect::NoCrash);
    }

    // Counts that no file can hold.
    for (at, name) in [(8, "tensor count"), (16, "metadata count")] {
        for v in [u64::MAX, 1 << 63, 1 << 40, (b.len() as u64) + 1] {
            let mut d = b.to_vec();
            put_u64(&mut d, at, v);
            add(format!("{name} = {v}"), d, Expect::Error(name));
        }
    }
    // String lengths past the end: a key, a string value, an array length.
    for v in [u64::MAX, 1 << 63, b.len() as u64] {
        let mut d = b.to_vec();
        put_u64(&mut d, w.kvs[0].start, v);
        add(format!("first key length = {v}"), d, Expect::Error("key"));
        if let Some(kv) = w.kvs.iter().find(|k| k.type_id == 8) {
            let mut d = b.to_vec();
            put_u64(&mut d, kv.type_at + 4, v);
            add(
                format!("string {:?} length = {v}", kv.key),
                d,
                Expect::Error(""),
            );
        }
        if let Some(kv) = w.kvs.iter().find(|k| k.type_id == 9) {
            let mut d = b.to_vec();
            put_u64(&mut d, kv.type_at + 8, v);
            add(
                format!("array {:?} length = {v}", kv.key),
                d,
                Expect::Error(""),
            );
        }
        let t = &w.tensors[0];
        let mut d = b.to_vec();
        put_u64(&mut d, t.start, v);
        add(
            format!("tensor name length = {v}"),
            d,
            Expect::Error("tensor"),
        );
    }
    // Unknown value types, in a pair and as an array's element type.
    for v in [13, 255, u32::MAX] {
        let mut d = b.to_vec();
        put_u32(&mut d, w.kvs[0].type_at, v);
        add(format!("value type id {v}"), d, Expect::Error("type"));
        if let Some(kv) = w.kvs.iter().find(|k| k.type_id == 9) {
            let mut d = b.to_vec();
            put_u32(&mut d, kv.type_at + 4, v);
            add(
                format!("array {:?} element type {v}", kv.key),
                d,
                Expect::Error(""),
            );
        }
    }

    // Tensor infos: dims, types, offsets.
    let t2 = w
        .tensors
        .iter()
        .find(|t| t.n_dims == 2)
        .expect("a 2-D tensor")
        .clone();
    for dims in [
        [1u64 << 32, 1 << 32],
        [1 << 62, 4],
        [u64::MAX, 1],
        [256, u64::MAX],
        [1 << 63, 1],
    ] {
        let mut d = b.to_vec();
        put_u64(&mut d, t2.dims_at, dims[0]);
        put_u64(&mut d, t2.dims_at + 8, dims[1]);
        add(format!("dims {dims:?}"), d, Expect::Error("dims"));
    }
    for n in [5, 64, u32::MAX] {
        let mut d = b.to_vec();
        put_u32(&mut d, t2.n_dims_at, n);
        add(format!("n_dims {n}"), d, Expect::Error("n_dims"));
    }
    for ty in [4u32, 5, 39, 1000, u32::MAX] {
        let mut d = b.to_vec();
        put_u32(&mut d, t2.type_at, ty);
        add(format!("tensor type id {ty}"), d, Expect::Error("type"));
    }
    let rel = |t: &TInfo| (t.data.start - w.data_offset) as u64;
    for (what, off) in [
        ("past the end", (b.len() - w.data_offset) as u64),
        ("far past the end", u64::MAX - 31),
        ("misaligned by 1", rel(&t2) + 1),
        (
            "misaligned by half the alignment",
            rel(&t2) + (w.alignment as u64) / 2,
        ),
    ] {
        let mut d = b.to_vec();
        put_u64(&mut d, t2.offset_at, off);
        add(format!("tensor offset {what}"), d, Expect::Error("offset"));
    }
    if w.tensors.len() >= 2 {
        let (a, c) = (&w.tensors[0], &w.tensors[1]);
        let mut d = b.to_vec();
        put_u64(&mut d, c.offset_at, rel(a));
        add("two tensors overlapping".into(), d, Expect::Error("offset"));
    }

    // Inserted pairs: nested arrays, bad alignment, duplicate key.
    let nested = |depth: usize| {
        let mut v = Vec::new();
        for _ in 0..depth {
            v.extend_from_slice(&9u32.to_le_bytes());
            v.extend_from_slice(&1u64.to_le_bytes());
        }
        v.extend_from_slice(&0u32.to_le_bytes()); // innermost: UINT8
        v.extend_from_slice(&1u64.to_le_bytes());
        v.push(7);
        v
    };
    let ok = insert_kv(b, &w, "test.nested_ok", 9, &nested(4));
    add("arrays nested 5 deep (valid)".into(), ok, Expect::NoCrash);
    for depth in [40, 100_000] {
        let d = insert_kv(b, &w, "test.nested", 9, &nested(depth));
        add(
            format!("arrays nested {depth} deep"),
            d,
            Expect::Error("nested"),
        );
    }
    let mut huge_inner = 9u32.to_le_bytes().to_vec(); // array of 2^40 arrays
    huge_inner.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let d = insert_kv(b, &w, "test.many", 9, &huge_inner);
    add("array of 2^40 arrays".into(), d, Expect::Error("count"));
    for a in [0u32, 3, 48] {
        // Unpadded (the key must be exact): the alignment is checked first.
        let mut kv = 17u64.to_le_bytes().to_vec();
        kv.extend_from_slice(b"general.alignment");
        kv.extend_from_slice(&4u32.to_le_bytes());
        kv.extend_from_slice(&a.to_le_bytes());
        let mut d = b[..24].to_vec();
        put_u64(&mut d, 16, rd_u64(b, 16) + 1);
        d.extend_from_slice(&kv);
        d.extend_from_slice(&b[24..]);
        add(
            format!("general.alignment = {a}"),
            d,
            Expect::Error("general.alignment"),
        );
    }
    // The first pair again (unpadded: the duplicate is reported first).
    let k = &w.kvs[0].key;
    let mut kv = (k.len() as u64).to_le_bytes().to_vec();
    kv.extend_from_slice(k.as_bytes());
    kv.extend_from_slice(&b[w.kvs[0].type_at..w.kvs[0].end]);
    let mut d = b[..24].to_vec();
    put_u64(&mut d, 16, rd_u64(b, 16) + 1);
    d.extend_from_slice(&kv);
    d.extend_from_slice(&b[24..]);
    add(
        format!("duplicate key {k:?}"),
        d,
        Expect::Error("duplicate"),
    );
    cases
}

// ---- checks ----

/// Runs a binary under a 1 GiB address-space limit; returns (status, stderr).
fn run(bin: &str, args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RAYON_NUM_THREADS", "1");
    // AddressSanitizer builds reserve terabytes of shadow address space: no
    // limit there (see the README's sanitizer command).
    if std::env::var_os("MEKI_ASAN").is_some() {
        let out = cmd.output().expect("spawn");
        return (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
    }
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let out = cmd.output().expect("spawn");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A process outcome that is not a clean exit 0/1 with a message.
fn crash(
    what: &str,
    status: std::process::ExitStatus,
    stderr: &str,
    must_fail: bool,
) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return Some(format!("{what}: killed by signal {sig}\n{stderr}"));
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        return Some(format!("{what}: panicked\n{stderr}"));
    }
    match status.code() {
        Some(1) if !stderr.trim().is_empty() => None,
        Some(0) if !must_fail => None,
        c => Some(format!("{what}: exit status {c:?}, stderr {stderr:?}")),
    }
}

/// Checks one damaged GGUF in-process; returns a failure description.
fn check_open(case: &Case, path: &Path) -> Option<String> {
    LARGEST.store(0, Ordering::SeqCst);
    let r = GgufFile::open(path);
    let peak = LARGEST.load(Ordering::SeqCst);
    // Parsed structures may take a few times the bytes they come from
    // (String/Vec headers per element), never more.
    let limit = 8 * case.bytes.len() + (64 << 10);
    if peak > limit {
        return Some(format!(
            "{}: an allocation of {peak} bytes from a {}-byte file",
            case.name,
            case.bytes.len()
        ));
    }
    match (r, case.expect) {
        (Ok(_), Expect::NoCrash) => None,
        (Ok(_), Expect::Error(_)) => Some(format!("{}: opened without error", case.name)),
        (Err(e), expect) => {
            let msg = e.to_string();
            let named = match &e {
                GgufError::Format { field, .. } => !field.is_empty() && msg.contains(" at byte "),
                GgufError::Io { .. } => true,
                _ => false,
            };
            let want = match expect {
                Expect::Error(f) => f,
                Expect::NoCrash => "",
            };
            if !named || !msg.to_lowercase().contains(&want.to_lowercase()) {
                Some(format!(
                    "{}: error {msg:?} does not name {want:?}",
                    case.name
                ))
            } else {
                None
            }
        }
    }
}

/// Every case is opened in-process; the binaries (a process each) get every
/// targeted case and one in three truncations and bit flips, or all with
/// `MEKI_MALFORMED_ALL=1`, to keep the suite fast on CI.
fn through_binaries(i: usize, case: &Case) -> bool {
    let sampled = case.name.contains("truncated") || case.name.contains("flip");
    !sampled || i.is_multiple_of(3) || std::env::var("MEKI_MALFORMED_ALL").as_deref() == Ok("1")
}

fn run_gguf_cases(cases: &[Case], dir: &Path, sidecar: Option<&Path>) -> (usize, usize) {
    std::fs::create_dir_all(dir).unwrap();
    let inspect = env!("CARGO_BIN_EXE_meki-convert");
    let runner = env!("CARGO_BIN_EXE_meki-run");
    let mut failures = Vec::new();
    let mut errors = 0;
    for (i, case) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.gguf"));
        std::fs::write(&path, &case.bytes).unwrap();
        if let Some(f) = check_open(case, &path) {
            failures.push(f);
            continue;
        }
        let must_fail = matches!(case.expect, Expect::Error(_));
        if must_fail {
            errors += 1;
        }
        if !through_binaries(i, case) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let (st, err) = run(inspect, &["inspect".as_ref(), path.as_os_str()]);
        if let Some(f) = crash(
            &format!("{}: meki-convert inspect", case.name),
            st,
            &err,
            must_fail,
        ) {
            failures.push(f);
        }
        // The whole loader (model, MeKi memory, tokenizer) and one token.
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-m".as_ref(),
            path.as_os_str(),
            "-p".as_ref(),
            "hi".as_ref(),
            "-n".as_ref(),
            "2".as_ref(),
            "-c".as_ref(),
            "32".as_ref(),
            "-t".as_ref(),
            "1".as_ref(),
            "--temp".as_ref(),
            "0".as_ref(),
        ];
        if let Some(s) = sidecar {
            args.extend(["--meki".as_ref(), s.as_os_str()]);
        }
        let (st, err) = run(runner, &args);
        if let Some(f) = crash(&format!("{}: meki-run", case.name), st, &err, must_fail) {
            failures.push(f);
        }
        let _ = std::fs::remove_file(&path);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    (cases.len(), errors)
}

#[test]
fn damaged_meki_model() {
    let _s = serial();
    let v = valid();
    let b = std::fs::read(&v.model).unwrap();
    let cases = gguf_cases("model", &b, 1);
    let (n, e) = run_gguf_cases(&cases, &scratch().join("model"), None);
    println!("damaged MeKi model: {n} files, {e} of them rejected with the field named, the rest (bit flips that may leave a valid file) no crash");
}

#[test]
fn damaged_backbone_and_sidecar() {
    let _s = serial();
    let v = valid();
    let b = std::fs::read(&v.base).unwrap();
    let cases = gguf_cases("backbone", &b, 2);
    let (n1, _) = run_gguf_cases(&cases, &scratch().join("base"), Some(&v.sidecar));
    // The sidecar damaged, the backbone intact.
    let s = std::fs::read(&v.sidecar).unwrap();
    let cases = gguf_cases("sidecar", &s, 3);
    let dir = scratch().join("side");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.meki.gguf"));
        std::fs::write(&path, &case.bytes).unwrap();
        if let Some(f) = check_open(case, &path) {
            failures.push(f);
            continue;
        }
        if !through_binaries(i, case) {
            continue;
        }
        let (st, err) = run(
            env!("CARGO_BIN_EXE_meki-run"),
            &[
                "-m".as_ref(),
                v.base.as_os_str(),
                "--meki".as_ref(),
                path.as_os_str(),
                "-p".as_ref(),
                "hi".as_ref(),
                "-n".as_ref(),
                "2".as_ref(),
                "-t".as_ref(),
                "1".as_ref(),
            ],
        );
        let must_fail = matches!(case.expect, Expect::Error(_));
        if let Some(f) = crash(&format!("{}: meki-run", case.name), st, &err, must_fail) {
            failures.push(f);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "damaged backbone: {n1} files; damaged sidecar: {} files; no crash",
        cases.len()
    );
}

#[test]
fn sidecar_of_another_model_is_refused() {
    let _s = serial();
    let v = valid();
    let (st, err) = run(
        env!("CARGO_BIN_EXE_meki-run"),
        &[
            "-m".as_ref(),
            v.base.as_os_str(),
            "--meki".as_ref(),
            v.other_sidecar.as_os_str(),
            "-p".as_ref(),
            "hi".as_ref(),
            "-n".as_ref(),
            "1".as_ref(),
        ],
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("belongs to another model"), "{err}");
    assert!(err.contains("other.meki.gguf"), "{err}");
    // The sidecar's identity edited by one character: refused the same way.
    let mut s = std::fs::read(&v.sidecar).unwrap();
    let w = walk(&s);
    let kv = w
        .kvs
        .iter()
        .find(|k| k.key == meki::meki::KEY_BACKBONE_ID)
        .expect("backbone id in the sidecar");
    let at = kv.end - 1;
    s[at] = if s[at] == b'0' { b'1' } else { b'0' };
    let edited = scratch().join("edited.meki.gguf");
    std::fs::write(&edited, &s).unwrap();
    let (st, err) = run(
        env!("CARGO_BIN_EXE_meki-run"),
        &[
            "-m".as_ref(),
            v.base.as_os_str(),
            "--meki".as_ref(),
            edited.as_os_str(),
            "-p".as_ref(),
            "hi".as_ref(),
        ],
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("belongs to another model"), "{err}");
}

// ---- checkpoints ----

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Converts `input`; a damaged checkpoint must fail cleanly and leave no
/// output or temporary file.
fn convert_damaged(name: &str, input: &Path, out_dir: &Path, must_fail: bool) -> Option<String> {
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir_all(out_dir).unwrap();
    let out = out_dir.join("out.gguf");
    let tok = fixture("tokenizer");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "checkpoint".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "-t".as_ref(),
        "1".as_ref(),
    ];
    if !input.join("config.json").is_file() {
        args.extend(["--tokenizer".as_ref(), tok.as_os_str()]);
    }
    let (st, err) = run(env!("CARGO_BIN_EXE_meki-convert"), &args);
    if let Some(f) = crash(
        &format!("{name}: meki-convert checkpoint"),
        st,
        &err,
        must_fail,
    ) {
        return Some(f);
    }
    let left: Vec<_> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if st.code() == Some(1) && !left.is_empty() {
        return Some(format!("{name}: failed but left {left:?}"));
    }
    None
}

fn st_header_end(b: &[u8]) -> usize {
    8 + rd_u64(b, 0) as usize
}

#[test]
fn damaged_safetensors_checkpoints() {
    let _s = serial();
    let src = fixture("hf_demo");
    let st = std::fs::read(src.join("model.safetensors")).unwrap();
    let hend = st_header_end(&st);
    let header = String::from_utf8(st[8..hend].to_vec()).unwrap();
    let mut cases: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut rng = Rng(7);
    for c in [
        0,
        4,
        8,
        9,
        hend / 2,
        hend - 1,
        hend,
        hend + 1,
        st.len() / 2,
        st.len() - 1,
    ] {
        cases.push((
            format!("safetensors truncated at {c}"),
            st[..c].to_vec(),
            true,
        ));
    }
    for _ in 0..8 {
        let c = rng.below(st.len());
        cases.push((
            format!("safetensors truncated at random {c}"),
            st[..c].to_vec(),
            true,
        ));
    }
    for v in [u64::MAX, 1 << 62, st.len() as u64] {
        let mut d = st.clone();
        put_u64(&mut d, 0, v);
        cases.push((format!("header length {v}"), d, true));
    }
    for _ in 0..12 {
        let mut d = st.clone();
        let at = 8 + rng.below(hend - 8);
        d[at] ^= 1 << rng.below(8);
        cases.push((format!("header bit flip at {at}"), d, false));
    }
    // Edits of the JSON text itself (same length, so offsets stay put).
    let edit = |from: &str, to: &str| -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let h = header.replacen(from, to, 1);
        assert_ne!(h, header, "{from} not in the header");
        let mut d = st[..8].to_vec();
        d.extend_from_slice(h.as_bytes());
        d.extend_from_slice(&st[hend..]);
        d
    };
    let emb = header.find("\"model.embed_tokens.weight\"").unwrap();
    let shape_at = emb
        + header[emb..]
            .find("[320, 64]")
            .or(header[emb..].find("[320,64]"))
            .unwrap();
    let shape = &header[shape_at..shape_at + header[shape_at..].find(']').unwrap() + 1];
    for to in ["[0,  0]", "[9,  99999999]"] {
        let to = format!("{to:width$}", width = shape.len());
        cases.push((
            format!("embedding shape {to}"),
            edit(shape, &to[..shape.len()]),
            true,
        ));
    }
    cases.push(("dtype F32 -> I32".into(), edit("\"F32\"", "\"I32\""), true));
    let dir = scratch().join("st");
    let mut failures = Vec::new();
    for (i, (name, bytes, must_fail)) in cases.iter().enumerate() {
        let ck = dir.join(format!("ck{i}"));
        copy_dir(&src, &ck);
        std::fs::write(ck.join("model.safetensors"), bytes).unwrap();
        failures.extend(convert_damaged(
            name,
            &ck,
            &dir.join(format!("out{i}")),
            *must_fail,
        ));
        let _ = std::fs::remove_dir_all(&ck);
    }
    // config.json: sizes that overflow, vanish or disagree with the tensors.
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    let cfg_cases = [
        ("\"hidden_size\": 64", "\"hidden_size\": 0"),
        (
            "\"hidden_size\": 64",
            "\"hidden_size\": 18446744073709551615",
        ),
        ("\"num_attention_heads\": 4", "\"num_attention_heads\": 0"),
        ("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 0"),
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1000000000000",
        ),
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 0"),
        ("\"head_dim\": 16", "\"head_dim\": 4611686018427387904"),
        ("\"intermediate_size\": 96", "\"intermediate_size\": -1"),
        ("\"vocab_size\": 320", "\"vocab_size\": 1e400"),
        ("\"meki_dim\": 32", "\"meki_dim\": 9223372036854775807"),
        ("{", "["),
    ];
    for (i, (from, to)) in cfg_cases.iter().enumerate() {
        let text = cfg.replacen(from, to, 1);
        assert_ne!(text, cfg, "{from}");
        let ck = dir.join(format!("cfg{i}"));
        copy_dir(&src, &ck);
        std::fs::write(ck.join("config.json"), text).unwrap();
        failures.extend(convert_damaged(
            &format!("config.json {to}"),
            &ck,
            &dir.join(format!("cfgout{i}")),
            true,
        ));
        let _ = std::fs::remove_dir_all(&ck);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "damaged safetensors checkpoints: {} cases, no crash",
        cases.len() + cfg_cases.len()
    );
}

#[test]
fn damaged_torch_checkpoints() {
    let _s = serial();
    let pt = fixture("megatron_torch_bf16/model_optim_rng.pt");
    let b = std::fs::read(&pt).unwrap();
    let mut rng = Rng(11);
    let mut cases: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for c in [0, 4, 30, 64, b.len() / 2, b.len() - 22, b.len() - 1] {
        cases.push((format!(".pt truncated at {c}"), b[..c].to_vec(), true));
    }
    for _ in 0..8 {
        let c = rng.below(b.len());
        cases.push((
            format!(".pt truncated at random {c}"),
            b[..c].to_vec(),
            true,
        ));
    }
    // The end-of-central-directory record and the central directory.
    let eocd = b.len() - 22;
    for (off, what) in [
        (10, "entry count"),
        (12, "directory size"),
        (16, "directory offset"),
    ] {
        for v in [u32::MAX, 0x7fff_ffff] {
            let mut d = b.clone();
            let at = eocd + off;
            if off == 10 {
                d[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
            } else {
                put_u32(&mut d, at, v);
            }
            cases.push((format!("zip {what} = {v}"), d, false));
        }
    }
    // Bit flips anywhere (the pickle, the directory, the storages).
    for _ in 0..16 {
        let mut d = b.clone();
        let at = rng.below(b.len());
        d[at] ^= 1 << rng.below(8);
        cases.push((format!(".pt bit flip at {at}"), d, false));
    }
    let dir = scratch().join("pt");
    let mut failures = Vec::new();
    for (i, (name, bytes, must_fail)) in cases.iter().enumerate() {
        let f = dir.join(format!("ck{i}/model_optim_rng.pt"));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, bytes).unwrap();
        failures.extend(convert_damaged(
            name,
            &f,
            &dir.join(format!("out{i}")),
            *must_fail,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("damaged torch checkpoints: {} cases, no crash", cases.len());
}

#[test]
fn hostile_chat_template_is_bounded() {
    let _s = serial();
    let v = valid();
    let f = GgufFile::open(&v.model).unwrap();
    let tok = meki::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    let msgs = [meki::chat::Message {
        role: "user".into(),
        content: "hi".into(),
    }];
    // 10^10 loop iterations: without a bound this renders for hours.
    let src = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
    let t = meki::chat::ChatTemplate::new(src, &tok).unwrap();
    let t0 = std::time::Instant::now();
    let e = t.render(&msgs).expect_err("an endless template must fail");
    assert!(e.contains("fuel"), "{e}");
    assert!(t0.elapsed().as_secs() < 60, "took {:?}", t0.elapsed());
    // Recursion without end: an error, not a stack overflow.
    let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let t = meki::chat::ChatTemplate::new(src, &tok).unwrap();
    assert!(t.render(&msgs).is_err());
    // Every real template of llama.cpp's collection renders within the bound.
    let dir = std::path::PathBuf::from(std::env::var_os("MEKI_LLAMA_CPP").unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
            .into()
    }))
    .join("models/templates");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        assert!(
            std::env::var("MEKI_REQUIRE_REFERENCE").as_deref() != Ok("1"),
            "{}: missing",
            dir.display()
        );
        eprintln!("skipping real templates: {} missing", dir.display());
        return;
    };
    let long: Vec<meki::chat::Message> = (0..200)
        .map(|i| meki::chat::Message {
            role: if i % 2 == 0 { "user" } else { "assistant" }.into(),
            content: format!("message {i} with some words in it"),
        })
        .collect();
    for e in rd {
        let p = e.unwrap().path();
        let src = std::fs::read_to_string(&p).unwrap();
        let Ok(t) = meki::chat::ChatTemplate::new(&src, &tok) else {
            continue;
        };
        if let Err(e) = t.render(&long) {
            assert!(!e.contains("fuel"), "{}: {e}", p.display());
        }
    }
}
