//! The engine's view of a model's MeKi memory: the folded tables, gathered
//! row by row straight from the mapped file, and the per-layer gate, output
//! projection and post-norm.
//!
//! The tensors live in the model file itself or in a sidecar
//! (`NAME.meki.gguf`) whose recorded backbone id must equal the model's.

use super::identity::backbone_id;
use crate::gguf::GgufFile;
use crate::kernels::formats::GgmlType;
use crate::model::weights::{
    AfterFfn, ArenaJob, LayerExtra, Loader, Placement, RepackMode, Weight,
};
use crate::model::Config;
use std::path::Path;

/// What the gate reads (the checkpoint's form decides; see MEKI.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateInput {
    /// `u = H = RMSNorm_ffn(A)` (demo/HF form).
    FfnNorm,
    /// `u = A`, the un-normalized residual after attention (Megatron form).
    Residual,
}

pub struct MekiLayer {
    pub gate: Weight,
    pub out: Weight,
    pub post_norm: Weight,
}

pub struct MekiMemory {
    /// The sidecar holding the tensors; `None` when they are in the model file.
    pub sidecar: Option<GgufFile>,
    pub form: String,
    pub gate_input: GateInput,
    pub d_mem: usize,
    /// `[n_layer * d_mem, n_vocab]`, token-major.
    pub table: Weight,
    pub layers: Vec<MekiLayer>,
}

impl MekiMemory {
    /// The MeKi memory of `model_file`, from the file itself or its sidecar;
    /// `Ok(None)` when the model has none (a dense model).
    pub fn load(
        model_file: &GgufFile,
        path: &Path,
        c: &Config,
    ) -> Result<Option<MekiMemory>, String> {
        if model_file.metadata().contains_key(super::KEY_VERSION) {
            return Self::from_file(model_file, None, c).map(Some);
        }
        let side = super::sidecar_path(path);
        if !side.exists() {
            return Ok(None);
        }
        Self::load_sidecar(model_file, &side, c).map(Some)
    }

    /// Load an explicit sidecar, refusing one made for another backbone.
    pub fn load_sidecar(
        model_file: &GgufFile,
        side: &Path,
        c: &Config,
    ) -> Result<MekiMemory, String> {
        let file =
            GgufFile::open(side).map_err(|e| format!("MeKi sidecar {}: {e}", side.display()))?;
        let want = file
            .metadata()
            .get_str(super::KEY_BACKBONE_ID)
            .map_err(|e| format!("MeKi sidecar {}: {e}", side.display()))?
            .to_string();
        let have = backbone_id(model_file)?;
        if want != have {
            return Err(format!(
                "MeKi sidecar {} belongs to another model (its backbone id {want} != this model's {have})",
                side.display()
            ));
        }
        Self::from_file(&file, None, c).map(|mut m| {
            m.sidecar = Some(file);
            m
        })
    }

    fn from_file(
        file: &GgufFile,
        sidecar: Option<GgufFile>,
        c: &Config,
    ) -> Result<MekiMemory, String> {
        let md = file.metadata();
        let err = |e: crate::gguf::GgufError| format!("MeKi metadata: {e}");
        let version = md.get_uint(super::KEY_VERSION).map_err(err)?;
        if version != super::VERSION as u64 {
            return Err(format!(
                "MeKi format version {version} is not supported (this meki reads {})",
                super::VERSION
            ));
        }
        let form = md.get_str(super::KEY_FORM).map_err(err)?.to_string();
        let gate_input = match md.get_str(super::KEY_GATE_INPUT).map_err(err)? {
            "ffn_norm" => GateInput::FfnNorm,
            "residual" => GateInput::Residual,
            other => {
                return Err(format!(
                    "{}: unknown gate input '{other}'",
                    super::KEY_GATE_INPUT
                ))
            }
        };
        let layout = md.get_str(super::KEY_TABLE_LAYOUT).map_err(err)?;
        if layout != "token_major" {
            return Err(format!(
                "{}: layout '{layout}' is not supported",
                super::KEY_TABLE_LAYOUT
            ));
        }
        let d_mem = md.get_uint(super::KEY_DIM).map_err(err)? as usize;
        let n_layer = md.get_uint(super::KEY_N_LAYER).map_err(err)? as usize;
        if n_layer != c.n_layer {
            return Err(format!(
                "MeKi tables have {n_layer} layers, the model has {}",
                c.n_layer
            ));
        }
        if d_mem == 0 || d_mem > 1 << 16 {
            return Err(format!("{} = {d_mem} is out of range", super::KEY_DIM));
        }
        let l = Loader::new(file);
        let width = n_layer
            .checked_mul(d_mem)
            .ok_or("MeKi table width overflows")?;
        let table = l.get(super::TENSOR_TABLE, width, c.n_vocab)?;
        if !matches!(table.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0) {
            return Err(format!(
                "{} has type {}; MeKi tables are f32, f16 or q8_0",
                super::TENSOR_TABLE,
                table.ty
            ));
        }
        if !d_mem.is_multiple_of(table.ty.block_size()) {
            return Err(format!(
                "d_mem {d_mem} is not a multiple of the {} block size",
                table.ty
            ));
        }
        let mut layers = Vec::with_capacity(n_layer.min(4096));
        for i in 0..n_layer {
            layers.push(MekiLayer {
                gate: l.get(&super::gate_name(i), c.n_embd, d_mem)?,
                out: l.get(&super::out_name(i), d_mem, c.n_embd)?,
                post_norm: l.vector(&super::post_norm_name(i), c.n_embd)?,
            });
        }
        Ok(MekiMemory {
            sidecar,
            form,
            gate_input,
            d_mem,
            table,
            layers,
        })
    }

    /// Where the projections go in the model's weight arena
    /// ([`ModelWeights::load`]'s extras; `src` reads this memory's file):
    /// each layer's W_gate right after its FFN up matrix, W_out after its
    /// FFN down matrix. Decode reads them right after those, so the weight
    /// stream goes on instead of starting again in an arena of their own
    /// (0.6B Q4_0, 1 thread, `meki-bench twin --profile`: MeKi's excess
    /// over the twin in the two FFN stages 228 us a step against 294).
    /// Repacked unless MEKI_REPACK=0: Q4_0 and Q8_0 always (the interleaved
    /// kernels keep one lane per row, so their short rows, d_mem / 32
    /// blocks, cost no horizontal sums: about 2x faster per multiply-add
    /// than the plain tiles for these shapes), other types by the
    /// backbone's rule (`Packed::preferred`); k-quant files' Q5_0 W_out
    /// widened to Q8_0 (the plain Q5_0 kernel ran it at ~1/3 of the
    /// repacked Q8_0 rate in prefill). Other projections are not placed:
    /// they are read from the map.
    ///
    /// [`ModelWeights::load`]: crate::model::weights::ModelWeights::load
    pub(crate) fn arena_jobs<'j, 'f>(
        layers: &'j mut [MekiLayer],
        src: &'j Loader<'f>,
    ) -> Vec<LayerExtra<'j, 'f>> {
        let repack = match RepackMode::from_env() {
            RepackMode::Off => return Vec::new(),
            mode => mode == RepackMode::All,
        };
        let all_for = |w: &Weight| repack || matches!(w.ty, GgmlType::Q4_0 | GgmlType::Q8_0);
        let mut jobs = Vec::new();
        for (i, layer) in layers.iter_mut().enumerate() {
            for (w, after) in [
                (&mut layer.gate, AfterFfn::Up),
                (&mut layer.out, AfterFfn::Down),
            ] {
                let how = if w.repack_wanted(all_for(w)) {
                    Placement::Repack
                } else if w.widen_wanted() {
                    Placement::WidenQ8_0
                } else {
                    continue;
                };
                jobs.push(LayerExtra {
                    layer: i,
                    after,
                    job: ArenaJob { src, w, how },
                });
            }
        }
        jobs
    }

    /// The file the MeKi tensors are in.
    pub fn file<'a>(&'a self, model_file: &'a GgufFile) -> &'a GgufFile {
        self.sidecar.as_ref().unwrap_or(model_file)
    }

    /// The bytes of layer `layer`'s table row for `token` (token-major: the
    /// rows of one token's layers follow each other).
    fn row_bytes<'a>(&'a self, model_file: &'a GgufFile, token: u32, layer: usize) -> &'a [u8] {
        let bytes = self.table.bytes(self.file(model_file));
        let row = self.table.row_bytes();
        let seg = row / self.layers.len();
        let start = token as usize * row + layer * seg;
        &bytes[start..start + seg]
    }

    /// Copy layer `layer`'s table row for `token` into `out` (`d_mem` values).
    pub fn gather(&self, model_file: &GgufFile, token: u32, layer: usize, out: &mut [f32]) {
        let row = self.row_bytes(model_file, token, layer);
        crate::model::ops::dequantize_row(self.table.ty, row, out);
    }

    /// Start loading layer `layer`'s table row of `token` into the CPU
    /// caches (a decode step calls it before the layer's attention, so the
    /// gather after the FFN products finds the row in L1/L2, not in DRAM).
    pub fn prefetch_row(&self, model_file: &GgufFile, token: u32, layer: usize) {
        let row = self.row_bytes(model_file, token, layer);
        crate::kernels::vec::prefetch_rows(row, row.len(), 1, row.len());
    }

    /// Ask the kernel to start reading the table rows of `tokens` (all layers:
    /// one contiguous range per token in the token-major layout) before layer 0
    /// needs them, so storage latency overlaps the attention of early layers.
    pub fn prefetch(&self, model_file: &GgufFile, tokens: &[u32]) {
        let file = self.file(model_file);
        let row = self.table.row_bytes();
        for &t in tokens {
            file.advise_willneed(self.table.offset_in_file() + t as usize * row, row);
        }
    }
}
