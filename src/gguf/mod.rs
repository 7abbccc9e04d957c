//! The GGUF v2/v3 container: a validating reader over a read-only memory map
//! (tensor data served as zero-copy slices) and a streaming, atomic writer.
//!
//! ```no_run
//! use meki::gguf::{GgufFile, GgufWriter, Value};
//! use meki::kernels::formats::{BlockQ8_0, GgmlType};
//!
//! # fn main() -> Result<(), meki::gguf::GgufError> {
//! // Read: the header is parsed and validated at open, data stays mapped.
//! let model = GgufFile::open("model.gguf")?;
//! let arch = model.metadata().get_str("general.architecture")?;
//! let vocab: &[String] = model.metadata().get_str_array("tokenizer.ggml.tokens")?;
//! let emb = model.tensor("token_embd.weight").expect("tensor");
//! let bytes: &[u8] = model.tensor_data(emb)?; // borrowed from the map
//! if emb.ggml_type == GgmlType::Q8_0 {
//!     let blocks: &[BlockQ8_0] = model.tensor_as(emb)?; // checked cast, no copy
//!     # let _ = blocks;
//! }
//! # let _ = (arch, vocab, bytes);
//!
//! // Write: metadata and tensor infos first, then data tensor by tensor;
//! // the file appears under its name only when `finish` succeeds.
//! let mut out = GgufWriter::create("model-q8_0.gguf")?;
//! out.copy_metadata(model.metadata())?;
//! out.set_kv("general.file_type", Value::U32(7))?;
//! for t in model.tensors() {
//!     out.add_tensor_info(&t.name, &t.dims, t.ggml_type)?;
//! }
//! for t in model.tensors() {
//!     out.write_tensor(&t.name, model.tensor_data(t)?)?;
//! }
//! out.finish()?;
//! # Ok(())
//! # }
//! ```

mod error;
pub mod inspect;
pub mod mmap;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use mmap::{cleanup_on_signal, FileMap};
pub use reader::{
    cast_tensor_data, tensor_n_bytes, GgufFile, GgufHeader, TensorInfo, ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS,
};
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::{GgufWriter, TensorSink, MAX_TENSOR_NAME_BYTES, WRITE_VERSION};
