//! The one error type of the GGUF container.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Format errors name the field and the byte offset where it starts, so a
/// broken file can be diagnosed with a hex dump.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An operating-system error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not form a valid GGUF file.
    #[error("{field} at byte {offset}: {message}")]
    Format {
        field: String,
        offset: u64,
        message: String,
    },
    /// A metadata key is missing or holds another type than asked for.
    #[error("metadata key {key:?}: {message}")]
    Metadata { key: String, message: String },
    /// A tensor is missing, or its data cannot be viewed as asked.
    #[error("tensor {name:?}: {message}")]
    Tensor { name: String, message: String },
    /// The writer was used out of order or given inconsistent data.
    #[error("GGUF writer: {0}")]
    Writer(String),
}

impl GgufError {
    pub(crate) fn format(
        field: impl Into<String>,
        offset: u64,
        message: impl Into<String>,
    ) -> Self {
        GgufError::Format {
            field: field.into(),
            offset,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn metadata(key: &str, message: impl Into<String>) -> Self {
        GgufError::Metadata {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Result alias of the GGUF module.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
