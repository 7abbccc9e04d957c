//! GGUF reader: parses and validates the header, then serves tensor data as
//! zero-copy slices of a read-only memory map.

use super::error::{GgufError, Result};
use super::mmap::FileMap;
use super::value::{Array, Metadata, Value, ValueType};
use crate::kernels::formats::GgmlType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key that overrides the data alignment (UINT32, power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted (bounds the parser's recursion).
pub const MAX_ARRAY_DEPTH: usize = 32;

/// Smallest encoded metadata pair: key length, type id, one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoded tensor info: name length, n_dims, type id, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as stored: `ne0` (the contiguous row length) first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data (`rows * row_bytes`), without alignment padding.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Product of the dimensions (validated not to overflow at load).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Bytes of a tensor of `dims` (ne0 first) and type `ty`, validating what
/// ggml requires: at most [`MAX_DIMS`] dims, each and their product below
/// 2^63, and rows made of whole blocks. Errors are plain messages; callers
/// add field and offset.
pub fn tensor_n_bytes(dims: &[u64], ty: GgmlType) -> std::result::Result<u64, String> {
    if dims.len() > MAX_DIMS {
        return Err(format!("{} dims, at most {MAX_DIMS} allowed", dims.len()));
    }
    let mut n: u64 = 1;
    for &d in dims {
        if d > i64::MAX as u64 {
            return Err(format!("dim {d} exceeds 2^63-1"));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| format!("element count of dims {dims:?} overflows 2^63-1"))?;
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    let row = ty.row_bytes(ne0).ok_or_else(|| {
        format!(
            "row length {ne0} is not a multiple of the {} block size {}",
            ty.name(),
            ty.block_size()
        )
    })?;
    let rows: u64 = dims.iter().skip(1).product(); // bounded by n above
    row.checked_mul(rows)
        .ok_or_else(|| format!("byte size of dims {dims:?} overflows u64"))
}

/// Everything before the data section: version, metadata, tensor table.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    /// Format version (2 or 3; both have the same little-endian layout).
    pub version: u32,
    pub metadata: Metadata,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment in bytes (`general.alignment` or 32).
    pub alignment: u64,
    /// Absolute byte offset of the data section.
    pub data_offset: u64,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Parses and validates the header of the GGUF file `bytes`, including
    /// that every tensor's data lies inside `bytes` without overlap.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader> {
        Parser {
            cur: Cursor { buf: bytes, pos: 0 },
        }
        .parse()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute byte range of `info`'s data in the file.
    pub fn tensor_range(&self, info: &TensorInfo) -> Option<std::ops::Range<usize>> {
        let start = self.data_offset.checked_add(info.offset)?;
        let end = start.checked_add(info.n_bytes)?;
        Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }
}

/// A GGUF file opened for reading: the validated header plus a read-only
/// map of the file. Tensor data is never copied.
pub struct GgufFile {
    header: GgufHeader,
    map: FileMap,
    path: PathBuf,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("header", &self.header)
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and validates its header (see [`GgufHeader::parse`]).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| GgufError::io(path, e))?;
        // Sizes are validated at open: every tensor's data must lie inside
        // the file as it is now (a later truncation is reported by the map's
        // SIGBUS handler, see `FileMap`).
        let map = FileMap::map(&file, path).map_err(|e| GgufError::io(path, e))?;
        let header = GgufHeader::parse(&map)?;
        Ok(GgufFile {
            header,
            map,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }

    /// The whole mapped file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.map
    }

    /// Hint that `len` bytes at `offset` will be read soon (`madvise(WILLNEED)`:
    /// the kernel starts reading them from storage without blocking). Out-of-range
    /// requests and platforms without the call are ignored: this is only a hint.
    pub fn advise_willneed(&self, offset: usize, len: usize) {
        self.map.advise_willneed(offset, len);
    }

    /// Prefaults `len` bytes at `offset` ([`FileMap::populate`]): data every
    /// token reads, whose page faults would otherwise land in the first
    /// forward pass. Out-of-range requests are ignored.
    pub fn populate(&self, offset: usize, len: usize) {
        self.map.populate(offset, len);
    }

    /// Drops `offset..offset + len` of the file from this process's map and
    /// from the page cache ([`FileMap::evict`]): benchmarks of cold storage.
    pub fn evict(&self, offset: usize, len: usize) -> Result<()> {
        let io = |e| GgufError::io(&self.path, e);
        let file = std::fs::File::open(&self.path).map_err(io)?;
        self.map.evict(&file, offset, len).map_err(io)
    }

    /// The data bytes of `info` (a tensor of this file), borrowed from the map.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        self.header
            .tensor_range(info)
            .and_then(|r| self.map.get(r))
            .ok_or_else(|| GgufError::Tensor {
                name: info.name.clone(),
                message: format!("data range not inside {}", self.path.display()),
            })
    }

    /// The data bytes of the tensor called `name`.
    pub fn tensor_data_by_name(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor(name).ok_or_else(|| GgufError::Tensor {
            name: name.to_string(),
            message: "no such tensor".into(),
        })?;
        self.tensor_data(info)
    }

    /// The data of `info` viewed as elements `T` (`f32`, `half::f16`,
    /// `BlockQ4_0`...): `T` must be as large as one block of the tensor's
    /// type, and the data suitably aligned (an error, not a copy, if not).
    pub fn tensor_as<T: bytemuck::Pod>(&self, info: &TensorInfo) -> Result<&[T]> {
        cast_tensor_data(info, self.tensor_data(info)?)
    }
}

/// Views tensor bytes as `T`, checking that `T` has the size of one block of
/// `info.ggml_type` and that `data` is aligned for `T`.
pub fn cast_tensor_data<'a, T: bytemuck::Pod>(
    info: &TensorInfo,
    data: &'a [u8],
) -> Result<&'a [T]> {
    let err = |message: String| GgufError::Tensor {
        name: info.name.clone(),
        message,
    };
    if std::mem::size_of::<T>() != info.ggml_type.type_size() {
        return Err(err(format!(
            "cannot view {} data as {} ({} bytes per element, {} has {} per block)",
            info.ggml_type,
            std::any::type_name::<T>(),
            std::mem::size_of::<T>(),
            info.ggml_type,
            info.ggml_type.type_size()
        )));
    }
    bytemuck::try_cast_slice(data).map_err(|e| {
        let ty = std::any::type_name::<T>();
        err(match e {
            bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned => format!(
                "cannot view data as {ty}: address {:p} is not aligned to {} bytes \
                 (file alignment too small?)",
                data.as_ptr(),
                std::mem::align_of::<T>()
            ),
            bytemuck::PodCastError::OutputSliceWouldHaveSlop => format!(
                "cannot view data as {ty}: {} bytes is not a multiple of {}",
                data.len(),
                std::mem::size_of::<T>()
            ),
            other => format!("cannot view data as {ty}: {other:?}"),
        })
    })
}

/// Bounds-checked little-endian reads; every failure names its field.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: impl FnOnce() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::format(
                field(),
                self.pos as u64,
                format!(
                    "truncated: needs {n} bytes, only {} left in the {}-byte file",
                    self.remaining(),
                    self.buf.len()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, which fits in usize
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, field: impl FnOnce() -> String) -> Result<[u8; N]> {
        let b = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, field: impl FnOnce() -> String) -> Result<u32> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: impl FnOnce() -> String) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes.
    fn string(&mut self, field: impl Fn() -> String) -> Result<String> {
        let at = self.pos as u64;
        let len = self.u64(|| format!("{} length", field()))?;
        let bytes = self.take(len, || format!("{} ({len} bytes from byte {at})", field()))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(GgufError::format(
                field(),
                at,
                format!(
                    "not valid UTF-8 (bad byte at offset {} of the string)",
                    e.valid_up_to()
                ),
            )),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in
    /// what is left, so `count` may size an allocation.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        at: u64,
        field: impl FnOnce() -> String,
    ) -> Result<usize> {
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|need| need <= self.remaining());
        if !fits {
            return Err(GgufError::format(
                field(),
                at,
                format!(
                    "count {count} exceeds what the remaining {} bytes could hold ({min_size} bytes each at least)",
                    self.remaining()
                ),
            ));
        }
        Ok(count as usize) // count <= remaining, which fits in usize
    }
}

struct Parser<'a> {
    cur: Cursor<'a>,
}

impl Parser<'_> {
    fn parse(mut self) -> Result<GgufHeader> {
        let magic = self.cur.array::<4>(|| "magic".into())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::format(
                "magic",
                0,
                format!("bad magic {magic:02x?}, expected \"GGUF\" (47 47 55 46)"),
            ));
        }
        let version = self.cur.u32(|| "version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(GgufError::format(
                    "version",
                    4,
                    "GGUF v1 is not supported (only v2 and v3); re-convert the model",
                ))
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(GgufError::format(
                    "version",
                    4,
                    format!("big-endian GGUF v{} is not supported", v.swap_bytes()),
                ))
            }
            v => {
                return Err(GgufError::format(
                    "version",
                    4,
                    format!("unsupported version {v} (only 2 and 3)"),
                ))
            }
        }
        let tensor_count = self.cur.u64(|| "tensor count".into())?;
        let kv_count = self.cur.u64(|| "metadata count".into())?;
        // The tensor count is bounded once the metadata is read.
        let n_kv = self
            .cur
            .check_count(kv_count, MIN_KV_BYTES, 16, || "metadata count".into())?;

        let mut metadata = Metadata::new();
        let mut alignment_at = None;
        for i in 0..n_kv {
            let at = self.cur.pos as u64;
            let key = self.cur.string(|| format!("metadata[{i}] key"))?;
            let field = || format!("metadata {key:?}");
            let type_at = self.cur.pos as u64;
            let type_id = self.cur.u32(|| format!("{} type", field()))?;
            let ty = ValueType::from_id(type_id).ok_or_else(|| {
                GgufError::format(
                    format!("{} type", field()),
                    type_at,
                    format!("unknown value type id {type_id}"),
                )
            })?;
            let value = self.value(ty, &field, 0)?;
            if metadata.contains_key(&key) {
                return Err(GgufError::format(field(), at, "duplicate key"));
            }
            if key == ALIGNMENT_KEY {
                alignment_at = Some(at);
            }
            metadata.set(key, value);
        }

        let alignment = match (metadata.get(ALIGNMENT_KEY), alignment_at) {
            (Some(v), Some(at)) => match *v {
                Value::U32(a) if a.is_power_of_two() => u64::from(a),
                _ => {
                    return Err(GgufError::format(
                        format!("metadata {ALIGNMENT_KEY:?}"),
                        at,
                        format!(
                            "must be a UINT32 nonzero power of two, found {} {v:?}",
                            v.type_label()
                        ),
                    ))
                }
            },
            _ => DEFAULT_ALIGNMENT,
        };

        let n_tensors = self
            .cur
            .check_count(tensor_count, MIN_TENSOR_INFO_BYTES, 8, || {
                "tensor count".into()
            })?;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut info_offsets = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let at = self.cur.pos as u64;
            let info = self.tensor_info(i)?;
            if tensor_index.insert(info.name.clone(), i).is_some() {
                return Err(GgufError::format(
                    format!("tensor {:?} name", info.name),
                    at,
                    "duplicate tensor name",
                ));
            }
            tensors.push(info);
            info_offsets.push(at);
        }

        let end_of_infos = self.cur.pos as u64;
        let data_offset = end_of_infos.div_ceil(alignment) * alignment; // < 2^64: pos is a usize
        let file_len = self.cur.buf.len() as u64;

        for (info, &at) in tensors.iter().zip(&info_offsets) {
            let field = || format!("tensor {:?} offset", info.name);
            if info.offset % alignment != 0 {
                return Err(GgufError::format(
                    field(),
                    at,
                    format!(
                        "data offset {} is not a multiple of the alignment {alignment}",
                        info.offset
                    ),
                ));
            }
            let end = data_offset
                .checked_add(info.offset)
                .and_then(|s| s.checked_add(info.n_bytes));
            if !matches!(end, Some(end) if end <= file_len) {
                return Err(GgufError::format(
                    field(),
                    at,
                    format!(
                        "data (offset {} + {} bytes after the data section at byte {data_offset}) \
                         ends past the end of the {file_len}-byte file",
                        info.offset, info.n_bytes
                    ),
                ));
            }
        }

        // Overlaps: sort the non-empty ranges by start.
        let mut order: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].n_bytes > 0)
            .collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for pair in order.windows(2) {
            let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
            if a.offset + a.n_bytes > b.offset {
                return Err(GgufError::format(
                    format!("tensor {:?} offset", b.name),
                    info_offsets[pair[1]],
                    format!(
                        "data [{}, {}) overlaps tensor {:?} data [{}, {})",
                        b.offset,
                        b.offset + b.n_bytes,
                        a.name,
                        a.offset,
                        a.offset + a.n_bytes
                    ),
                ));
            }
        }

        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            tensor_index,
        })
    }

    /// A value of type `ty` (the type id already read).
    fn value(&mut self, ty: ValueType, field: &dyn Fn() -> String, depth: usize) -> Result<Value> {
        let size = ty.min_encoded_size();
        let v = match ty {
            ValueType::String => return self.cur.string(field).map(Value::String),
            ValueType::Array => return self.array(field, depth).map(Value::Array),
            _ => self.cur.take(size, field)?,
        };
        Ok(match ty {
            ValueType::U8 => Value::U8(v[0]),
            ValueType::I8 => Value::I8(v[0] as i8),
            // Like llama.cpp, any nonzero byte is true.
            ValueType::Bool => Value::Bool(v[0] != 0),
            ValueType::U16 => Value::U16(u16::from_le_bytes([v[0], v[1]])),
            ValueType::I16 => Value::I16(i16::from_le_bytes([v[0], v[1]])),
            ValueType::U32 => Value::U32(u32::from_le_bytes(v.try_into().expect("4 bytes"))),
            ValueType::I32 => Value::I32(i32::from_le_bytes(v.try_into().expect("4 bytes"))),
            ValueType::F32 => Value::F32(f32::from_le_bytes(v.try_into().expect("4 bytes"))),
            ValueType::U64 => Value::U64(u64::from_le_bytes(v.try_into().expect("8 bytes"))),
            ValueType::I64 => Value::I64(i64::from_le_bytes(v.try_into().expect("8 bytes"))),
            ValueType::F64 => Value::F64(f64::from_le_bytes(v.try_into().expect("8 bytes"))),
            ValueType::String | ValueType::Array => unreachable!("handled above"),
        })
    }

    /// An array body: element type id, u64 count, elements.
    fn array(&mut self, field: &dyn Fn() -> String, depth: usize) -> Result<Array> {
        let at = self.cur.pos as u64;
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::format(
                field(),
                at,
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            ));
        }
        let type_id = self.cur.u32(|| format!("{} array element type", field()))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| {
            GgufError::format(
                format!("{} array element type", field()),
                at,
                format!("unknown value type id {type_id}"),
            )
        })?;
        let count_at = self.cur.pos as u64;
        let count = self.cur.u64(|| format!("{} array length", field()))?;
        let n = self
            .cur
            .check_count(count, ty.min_encoded_size(), count_at, || {
                format!("{} array length", field())
            })?;
        let elem_field = |i: usize| move || format!("{}[{i}]", field());
        // Fixed-size elements: one bounds check, then decode the whole run.
        let mut fixed = |size: u64| {
            self.cur
                .take(n as u64 * size, || format!("{} array data", field()))
        };
        Ok(match ty {
            ValueType::U8 => Array::U8(fixed(1)?.to_vec()),
            ValueType::I8 => Array::I8(fixed(1)?.iter().map(|&b| b as i8).collect()),
            ValueType::Bool => Array::Bool(fixed(1)?.iter().map(|&b| b != 0).collect()),
            ValueType::U16 => Array::U16(le_chunks(fixed(2)?, u16::from_le_bytes)),
            ValueType::I16 => Array::I16(le_chunks(fixed(2)?, i16::from_le_bytes)),
            ValueType::U32 => Array::U32(le_chunks(fixed(4)?, u32::from_le_bytes)),
            ValueType::I32 => Array::I32(le_chunks(fixed(4)?, i32::from_le_bytes)),
            ValueType::F32 => Array::F32(le_chunks(fixed(4)?, f32::from_le_bytes)),
            ValueType::U64 => Array::U64(le_chunks(fixed(8)?, u64::from_le_bytes)),
            ValueType::I64 => Array::I64(le_chunks(fixed(8)?, i64::from_le_bytes)),
            ValueType::F64 => Array::F64(le_chunks(fixed(8)?, f64::from_le_bytes)),
            ValueType::String => {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(self.cur.string(elem_field(i))?);
                }
                Array::String(out)
            }
            ValueType::Array => {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(self.array(&elem_field(i), depth + 1)?);
                }
                Array::Array(out)
            }
        })
    }

    fn tensor_info(&mut self, i: usize) -> Result<TensorInfo> {
        let name = self.cur.string(|| format!("tensor[{i}] name"))?;
        let field = |what: &str| format!("tensor {name:?} {what}");
        let n_dims_at = self.cur.pos as u64;
        let n_dims = self.cur.u32(|| field("n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::format(
                field("n_dims"),
                n_dims_at,
                format!("{n_dims} dims, at most {MAX_DIMS} allowed"),
            ));
        }
        let dims_at = self.cur.pos as u64;
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(self.cur.u64(|| field(&format!("dims[{d}]")))?);
        }
        let type_at = self.cur.pos as u64;
        let type_id = self.cur.u32(|| field("type"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            GgufError::format(
                field("type"),
                type_at,
                format!("unknown or unsupported ggml type id {type_id}"),
            )
        })?;
        let offset = self.cur.u64(|| field("offset"))?;
        let n_bytes = tensor_n_bytes(&dims, ggml_type)
            .map_err(|m| GgufError::format(field("dims"), dims_at, m))?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        })
    }
}

fn le_chunks<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}
