//! The decoder: hyper-parameters, weights in the map, and the forward pass.
//!
//! Read [`forward::Session::forward`] top to bottom for the whole computation
//! of one batch of tokens (llama2.c style).

pub mod config;
pub mod forward;
pub mod ops;
pub mod weights;

pub use config::{Arch, Config, RopeOrder};
pub use forward::{KvType, Session};
pub use weights::{LayerWeights, ModelWeights, Weight};

use crate::gguf::GgufFile;
use std::path::Path;

/// A loaded model: the mapped file, its hyper-parameters and tensor locations.
/// Nothing is copied out of the map at load.
pub struct Model {
    pub file: GgufFile,
    pub config: Config,
    pub weights: ModelWeights,
}

impl Model {
    pub fn open(path: impl AsRef<Path>) -> Result<Model, String> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_file(file)
    }

    pub fn from_file(file: GgufFile) -> Result<Model, String> {
        let config = Config::from_metadata(file.metadata())?;
        let weights = ModelWeights::load(&file, &config)?;
        Ok(Model {
            file,
            config,
            weights,
        })
    }
}
