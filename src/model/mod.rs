//! The decoder: hyper-parameters, weights in the map, and the forward pass.
//!
//! Read [`forward::Session::forward`] top to bottom for the whole computation
//! of one batch of tokens (llama2.c style).

pub mod arena;
mod attention;
pub mod config;
pub mod forward;
mod group;
pub mod ops;
pub mod profile;
pub mod weights;

pub use attention::KvType;
pub use config::{Arch, Config, RopeOrder};
pub use forward::Session;
pub use weights::{LayerWeights, ModelWeights, Weight};

use crate::gguf::GgufFile;
use crate::kernels::ThreadPool;
use crate::meki::MekiMemory;
use std::path::Path;

/// A loaded model: the mapped file, its hyper-parameters and tensor locations.
/// Nothing is copied out of the map at load.
pub struct Model {
    pub file: GgufFile,
    pub config: Config,
    pub weights: ModelWeights,
    /// The MeKi memory, when the model has one and it is enabled.
    pub meki: Option<MekiMemory>,
    /// Worker threads of the matrix products.
    pub pool: ThreadPool,
}

/// Where a model's MeKi tensors come from.
#[derive(Clone, Debug, Default)]
pub enum MekiSource {
    /// The model file itself, or else the sidecar `NAME.meki.gguf` beside it.
    #[default]
    Auto,
    /// An explicit sidecar file.
    Sidecar(std::path::PathBuf),
    /// Run the backbone alone (`--no-meki`).
    Disabled,
}

impl Model {
    /// Open a model with its MeKi memory, if it has one.
    pub fn open(path: impl AsRef<Path>) -> Result<Model, String> {
        Self::open_with(path, &MekiSource::Auto, 0)
    }

    /// Open a model; `threads` = 0 uses every core.
    pub fn open_with(
        path: impl AsRef<Path>,
        meki: &MekiSource,
        threads: usize,
    ) -> Result<Model, String> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = Config::from_metadata(file.metadata())?;
        let mut meki = match meki {
            MekiSource::Auto => MekiMemory::load(&file, path, &config)?,
            MekiSource::Sidecar(side) => Some(MekiMemory::load_sidecar(&file, side, &config)?),
            MekiSource::Disabled => None,
        };
        // MeKi's projections go into the backbone's weight arena, beside the
        // FFN matrices read just before them.
        let weights = match meki.as_mut() {
            Some(MekiMemory {
                sidecar, layers, ..
            }) => {
                let src = weights::Loader::new(sidecar.as_ref().unwrap_or(&file));
                ModelWeights::load(&file, &config, MekiMemory::arena_jobs(layers, &src))?
            }
            None => ModelWeights::load(&file, &config, Vec::new())?,
        };
        Ok(Model {
            file,
            config,
            weights,
            meki,
            pool: if threads == 0 {
                ThreadPool::with_available_parallelism()
            } else {
                ThreadPool::new(threads)
            },
        })
    }
}
