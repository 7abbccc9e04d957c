//! Streaming, atomic GGUF v3 writer.
//!
//! Metadata and tensor infos are declared first; tensor data then streams
//! through one tensor at a time in declaration order, so a converter never
//! holds a whole model in memory. Everything goes to a temporary file beside
//! the target, which `finish` fsyncs and renames into place: readers see the
//! old file or the complete new one, never a partial one.

use super::error::{GgufError, Result};
use super::reader::{tensor_n_bytes, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT};
use super::value::{Array, Metadata, Value};
use crate::kernels::formats::GgmlType;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// ggml's `GGML_MAX_NAME`: llama.cpp refuses tensor names this long or longer.
pub const MAX_TENSOR_NAME_BYTES: usize = 64;

/// GGUF version written.
pub const WRITE_VERSION: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Metadata and tensor infos may still be added.
    Declaring,
    /// Header written; the next tensor to write is `next`.
    Writing { next: usize },
    /// An error or an abandoned tensor stream left the file inconsistent.
    Poisoned,
}

/// Writes a GGUF file; see the module docs. Dropping it before
/// [`GgufWriter::finish`] removes the temporary file and leaves the target
/// untouched.
pub struct GgufWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    state: State,
    alignment: u64,
    /// Bytes written to the file so far.
    pos: u64,
    data_offset: u64,
    /// The temporary file has been renamed to `path`.
    committed: bool,
}

impl GgufWriter {
    /// Starts writing `path` (through a temporary file `.NAME.tmp-PID` beside it).
    pub fn create(path: impl AsRef<Path>) -> Result<GgufWriter> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_name()
            .ok_or_else(|| GgufError::Writer(format!("{}: not a file path", path.display())))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp_path = path.with_file_name(tmp_name);
        // Removed by a terminating signal too (see `mmap::cleanup_on_signal`);
        // registered before it exists, so a signal that arrives once the file
        // is visible always finds it in the list.
        super::mmap::register_temp_file(&tmp_path);
        let file = File::create(&tmp_path).map_err(|e| {
            super::mmap::unregister_temp_file(&tmp_path);
            GgufError::io(&tmp_path, e)
        })?;
        Ok(GgufWriter {
            path,
            tmp_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            metadata: Metadata::new(),
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
            state: State::Declaring,
            alignment: DEFAULT_ALIGNMENT,
            pos: 0,
            data_offset: 0,
            committed: false,
        })
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    fn declaring(&self, what: &str) -> Result<()> {
        match self.state {
            State::Declaring => Ok(()),
            _ => Err(GgufError::Writer(format!(
                "{what}: the header has already been written"
            ))),
        }
    }

    /// Metadata declared so far, in order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Appends a metadata pair; a key given twice is an error.
    pub fn add_kv(&mut self, key: &str, value: impl Into<Value>) -> Result<()> {
        self.declaring(key)?;
        self.metadata.push(key, value)
    }

    /// Sets a metadata pair: replaces the value in place if `key` exists,
    /// appends it otherwise (to override e.g. `general.file_type` after
    /// [`GgufWriter::copy_metadata`]).
    pub fn set_kv(&mut self, key: &str, value: impl Into<Value>) -> Result<()> {
        self.declaring(key)?;
        self.metadata.set(key, value);
        Ok(())
    }

    /// Removes a metadata pair, if present.
    pub fn remove_kv(&mut self, key: &str) -> Result<Option<Value>> {
        self.declaring(key)?;
        Ok(self.metadata.remove(key))
    }

    /// Appends every pair of `metadata` (e.g. a reader's), in order.
    pub fn copy_metadata(&mut self, metadata: &Metadata) -> Result<()> {
        for (k, v) in metadata.iter() {
            self.add_kv(k, v.clone())?;
        }
        Ok(())
    }

    /// Declares the next tensor: `dims` with `ne0` first, as stored.
    pub fn add_tensor_info(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<()> {
        self.declaring(name)?;
        let err = |m: String| GgufError::Writer(format!("tensor {name:?}: {m}"));
        if name.len() >= MAX_TENSOR_NAME_BYTES {
            return Err(err(format!(
                "name is {} bytes, llama.cpp allows at most {}",
                name.len(),
                MAX_TENSOR_NAME_BYTES - 1
            )));
        }
        if self.tensor_index.contains_key(name) {
            return Err(err("declared twice".into()));
        }
        let n_bytes = tensor_n_bytes(dims, ggml_type).map_err(err)?;
        self.tensor_index
            .insert(name.to_string(), self.tensors.len());
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            offset: 0, // set when the header is written
            n_bytes,
        });
        Ok(())
    }

    /// Tensor infos declared so far (offsets are final once data is written).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Absolute offset of the data section, once the header is written.
    pub fn data_offset(&self) -> Option<u64> {
        match self.state {
            State::Declaring => None,
            _ => Some(self.data_offset),
        }
    }

    /// Data alignment in effect (final once the header is written).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    fn out(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("output open until finish")
    }

    /// Writes `bytes` at the current position, poisoning the writer on failure.
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.out().write_all(bytes) {
            self.state = State::Poisoned;
            return Err(GgufError::io(&self.tmp_path, e));
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad_to_alignment(&mut self) -> Result<()> {
        let pad = (self.pos.div_ceil(self.alignment) * self.alignment - self.pos) as usize;
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = pad;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.put(&ZEROS[..n])?;
            left -= n;
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<()> {
        self.declaring("header")?;
        self.alignment = match self.metadata.get(ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(&Value::U32(a)) if a.is_power_of_two() => u64::from(a),
            Some(v) => {
                return Err(GgufError::metadata(
                    ALIGNMENT_KEY,
                    format!(
                        "must be a UINT32 nonzero power of two, found {} {v:?}",
                        v.type_label()
                    ),
                ))
            }
        };
        let mut offset = 0u64;
        for t in &mut self.tensors {
            t.offset = offset;
            offset = t
                .n_bytes
                .div_ceil(self.alignment)
                .checked_mul(self.alignment)
                .and_then(|n| n.checked_add(offset))
                .ok_or_else(|| GgufError::Writer("total tensor data overflows u64".into()))?;
        }

        let mut head = Vec::with_capacity(4096);
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        // Encoded in chunks: a vocabulary can take tens of MB.
        let metadata = std::mem::take(&mut self.metadata);
        let mut written = Ok(());
        for (key, value) in metadata.iter() {
            encode_string(&mut head, key);
            encode_value(&mut head, value);
            if head.len() >= 1 << 20 {
                written = self.put(&head);
                head.clear();
                if written.is_err() {
                    break;
                }
            }
        }
        self.metadata = metadata;
        written?;
        for t in &self.tensors {
            encode_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&(t.ggml_type as u32).to_le_bytes());
            head.extend_from_slice(&t.offset.to_le_bytes());
        }
        self.put(&head)?;
        self.pad_to_alignment()?;
        self.data_offset = self.pos;
        self.state = State::Writing { next: 0 };
        Ok(())
    }

    /// Checks that `name` is the next tensor due and returns its index,
    /// writing the header first if needed.
    fn begin_tensor(&mut self, name: &str) -> Result<usize> {
        if self.state == State::Declaring {
            self.write_header()?;
        }
        let next = match self.state {
            State::Writing { next } => next,
            State::Poisoned => {
                return Err(GgufError::Writer(
                    "an earlier error left the file incomplete".into(),
                ))
            }
            State::Declaring => unreachable!("header written above"),
        };
        match self.tensors.get(next) {
            Some(t) if t.name == name => {
                debug_assert_eq!(self.pos, self.data_offset + t.offset);
                Ok(next)
            }
            Some(t) => Err(GgufError::Writer(format!(
                "tensor {name:?} written out of order: {:?} is next",
                t.name
            ))),
            None => Err(GgufError::Writer(format!(
                "tensor {name:?}: {}",
                if self.tensor_index.contains_key(name) {
                    "already written"
                } else {
                    "never declared"
                }
            ))),
        }
    }

    fn end_tensor(&mut self, index: usize) -> Result<()> {
        self.pad_to_alignment()?;
        self.state = State::Writing { next: index + 1 };
        Ok(())
    }

    /// Writes the whole data of the next tensor, which must be `name` and
    /// exactly its declared size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let i = self.begin_tensor(name)?;
        let want = self.tensors[i].n_bytes;
        if data.len() as u64 != want {
            return Err(GgufError::Writer(format!(
                "tensor {name:?}: got {} bytes, declared {want}",
                data.len()
            )));
        }
        self.put(data)?;
        self.end_tensor(i)
    }

    /// Streams the data of the next tensor, `name`, in pieces: write exactly
    /// its declared size into the returned sink, then call
    /// [`TensorSink::finish`]. Dropping the sink unfinished poisons the writer.
    pub fn tensor_writer(&mut self, name: &str) -> Result<TensorSink<'_>> {
        let index = self.begin_tensor(name)?;
        let remaining = self.tensors[index].n_bytes;
        Ok(TensorSink {
            writer: self,
            index,
            remaining,
            done: false,
        })
    }

    /// Writes the header if no tensor did, checks every declared tensor was
    /// written, then flushes, fsyncs and renames the file into place.
    pub fn finish(mut self) -> Result<()> {
        if self.state == State::Declaring {
            self.write_header()?;
        }
        match self.state {
            State::Writing { next } if next == self.tensors.len() => {}
            State::Writing { next } => {
                return Err(GgufError::Writer(format!(
                    "tensor {:?} declared but its data was never written",
                    self.tensors[next].name
                )))
            }
            _ => {
                return Err(GgufError::Writer(
                    "an earlier error left the file incomplete".into(),
                ))
            }
        }
        let tmp = self.tmp_path.clone();
        let out = self.out.take().expect("output open until finish");
        let file = out
            .into_inner()
            .map_err(|e| GgufError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| GgufError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|e| GgufError::io(&self.path, e))?;
        self.committed = true;
        super::mmap::unregister_temp_file(&tmp);
        // Make the rename itself durable (best effort: not all systems allow it).
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.committed {
            drop(self.out.take()); // close before unlinking
            let _ = std::fs::remove_file(&self.tmp_path);
            super::mmap::unregister_temp_file(&self.tmp_path);
        }
    }
}

/// Streaming sink for one tensor's data (see [`GgufWriter::tensor_writer`]).
pub struct TensorSink<'w> {
    writer: &'w mut GgufWriter,
    index: usize,
    remaining: u64,
    done: bool,
}

impl TensorSink<'_> {
    /// Bytes still due.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Checks the declared size was written in full, then pads to alignment.
    pub fn finish(mut self) -> Result<()> {
        if self.remaining != 0 {
            let name = self.writer.tensors[self.index].name.clone();
            return Err(GgufError::Writer(format!(
                "tensor {name:?}: {} bytes short of the declared {}",
                self.remaining, self.writer.tensors[self.index].n_bytes
            )));
        }
        self.done = true;
        self.writer.end_tensor(self.index)
    }
}

impl Write for TensorSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.remaining {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "tensor {:?}: {} bytes more than declared",
                    self.writer.tensors[self.index].name,
                    buf.len() as u64 - self.remaining
                ),
            ));
        }
        self.writer.put(buf).map_err(std::io::Error::other)?;
        self.remaining -= buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(()) // flushed by GgufWriter::finish
    }
}

impl Drop for TensorSink<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.writer.state = State::Poisoned;
        }
    }
}

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Type id, then the payload.
fn encode_value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => encode_string(out, s),
        Value::Array(a) => encode_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Element type id, u64 length, elements (nested arrays without a type id
/// of their own, as an array body each).
fn encode_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::Bool(v) => out.extend(v.iter().map(|&x| u8::from(x))),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
        Array::String(v) => v.iter().for_each(|s| encode_string(out, s)),
        Array::Array(v) => v.iter().for_each(|x| encode_array(out, x)),
    }
}
