//! The model's tensors, located (not copied) in the mapped GGUF file.
//!
//! A [`Weight`] is a checked byte range of the map plus its ggml type and
//! shape; the forward pass resolves it to a slice with [`Weight::bytes`].
//! Every shape is checked against the hyper-parameters at load, so the
//! kernels never see a row that is shorter than they expect.
//!
//! Matrices for which repacking pays ([`Packed::preferred`]: Q4_0, Q4_K and
//! Q8_0 on AVX2) are copied once at load into an interleaved layout
//! ([`Weight::packed`]), as llama.cpp's CPU backend does (`CPU_REPACK`);
//! prefill runs ~2x (Q4_0) / ~1.4x (Q4_K_M, Q8_0 end to end) faster, and
//! decode is not slower. `MEKI_REPACK=0` keeps every matrix in the map;
//! `MEKI_REPACK=all` also repacks the other types that have a kernel
//! ([`Packed::supported`]: Q6_K, faster prefill, slower decode).

use super::config::{Arch, Config};
use crate::gguf::GgufFile;
use crate::kernels::formats::GgmlType;
use crate::kernels::repack::Packed;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// A 1-D or 2-D tensor in the map: `rows` rows of `cols` elements (ggml
/// `ne0 = cols`, `ne1 = rows`), i.e. a linear layer `cols -> rows`.
#[derive(Clone, Debug)]
pub struct Weight {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    range: Range<usize>,
    /// The matrix repacked for its interleaved kernel, if it has one; the
    /// products then read this copy instead of the map.
    pub packed: Option<Arc<Packed>>,
    /// A 1-D F32 tensor's values, copied at load (see [`Loader::vector`]).
    values: Option<Arc<[f32]>>,
}

impl Weight {
    pub fn bytes<'a>(&self, file: &'a GgufFile) -> &'a [u8] {
        &file.as_bytes()[self.range.clone()]
    }

    /// The values of a 1-D F32 tensor (a norm weight or a bias): the copy
    /// made at load, else the mapped bytes.
    pub fn f32s<'a>(&'a self, file: &'a GgufFile) -> &'a [f32] {
        match &self.values {
            Some(v) => v,
            None => bytemuck::cast_slice(self.bytes(file)),
        }
    }

    /// Byte offset of the data in the file.
    pub fn offset_in_file(&self) -> usize {
        self.range.start
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.range.len() / self.rows.max(1)
    }

    /// Copies the matrix into its interleaved layout when the active kernel
    /// family has one for its type and shape.
    fn repack(
        &mut self,
        file: &GgufFile,
        reader: Option<&SourceReader>,
        all: bool,
    ) -> Result<(), String> {
        let isa = crate::kernels::isa();
        let wanted = if all {
            Packed::supported(isa, self.ty, self.rows, self.cols)
        } else {
            Packed::preferred(isa, self.ty, self.rows, self.cols)
        };
        if !wanted {
            return Ok(());
        }
        let name = &self.name;
        let err = |e: crate::kernels::KernelError| format!("repacking tensor '{name}': {e}");
        let mut p = Packed::zeroed(self.ty, self.rows, self.cols).map_err(err)?;
        let rb = self.row_bytes();
        // Rows read in pieces of whole 8-row groups (~256 KiB).
        let step = ((256 << 10) / (8 * rb).max(1)).max(1) * 8;
        let mut buf = Vec::new();
        for r0 in (0..self.rows).step_by(step) {
            let r1 = (r0 + step).min(self.rows);
            let range = self.range.start + r0 * rb..self.range.start + r1 * rb;
            let src = match reader.and_then(|f| f.read(range.clone(), &mut buf)) {
                Some(b) => b,
                None => &file.as_bytes()[range],
            };
            p.fill(r0, src).map_err(err)?;
        }
        self.packed = Some(Arc::new(p));
        Ok(())
    }
}

/// The model file opened for `pread`: a repacked matrix's source bytes are
/// read through it rather than through the map, so their pages never enter
/// this process's resident set (the packed copy replaces them; llama.cpp's
/// resident set holds both). Reads fall back to the map (`None`) if the file
/// cannot be read or is no longer the size it was mapped at.
struct SourceReader(std::fs::File);

impl SourceReader {
    fn open(file: &GgufFile) -> Option<SourceReader> {
        let f = std::fs::File::open(file.path()).ok()?;
        (f.metadata().ok()?.len() == file.as_bytes().len() as u64).then_some(SourceReader(f))
    }

    fn read<'b>(&self, range: Range<usize>, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
        buf.resize(range.len(), 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.0.read_exact_at(buf, range.start as u64).ok()?;
            Some(buf)
        }
        #[cfg(not(unix))]
        {
            None
        }
    }
}

/// Per-layer weights of a llama/qwen decoder block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Weight,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    /// Qwen2's q/k/v biases.
    pub bq: Option<Weight>,
    pub bk: Option<Weight>,
    pub bv: Option<Weight>,
    /// Qwen3's per-head RMSNorm of q and k.
    pub q_norm: Option<Weight>,
    pub k_norm: Option<Weight>,
    pub wo: Weight,
    pub ffn_norm: Weight,
    pub ffn_gate: Weight,
    pub ffn_up: Weight,
    pub ffn_down: Weight,
}

#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub token_embd: Weight,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Weight,
    /// The output head; `token_embd` when tied.
    pub output: Weight,
    pub tied_output: bool,
}

/// Which matrices are repacked at load (env `MEKI_REPACK`, see the module
/// docs): `0` none, `all` every one with a kernel, else the preferred ones.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepackMode {
    Off,
    Preferred,
    All,
}

impl RepackMode {
    pub(crate) fn from_env() -> RepackMode {
        match std::env::var("MEKI_REPACK").unwrap_or_default().trim() {
            "0" => RepackMode::Off,
            "all" => RepackMode::All,
            _ => RepackMode::Preferred,
        }
    }
}

/// Looks tensors up by llama.cpp name and checks type and shape.
pub(crate) struct Loader<'a> {
    pub file: &'a GgufFile,
    /// The file opened once for the vectors' `pread`s (`None`: read them
    /// through the map).
    reader: Option<SourceReader>,
}

impl<'a> Loader<'a> {
    pub fn new(file: &'a GgufFile) -> Loader<'a> {
        Loader {
            file,
            reader: SourceReader::open(file),
        }
    }

    pub fn get(&self, name: &str, cols: usize, rows: usize) -> Result<Weight, String> {
        self.find(name, cols, rows)?.ok_or_else(|| {
            format!(
                "tensor '{name}' is missing from {}",
                self.file.path().display()
            )
        })
    }

    /// A 1-D vector of `n` elements, which must be F32 (norm weights, biases).
    pub fn vector(&self, name: &str, n: usize) -> Result<Weight, String> {
        let w = self.get(name, n, 1)?;
        if w.ty != GgmlType::F32 {
            return Err(format!(
                "tensor '{name}' is {} (1-D tensors must be F32)",
                w.ty
            ));
        }
        if w.range.start % std::mem::align_of::<f32>() != 0 {
            return Err(format!("tensor '{name}' data is not 4-byte aligned"));
        }
        // Copied out with pread: read through the map, each of these small
        // tensors would fault in (and keep resident) the pages of the large
        // weights around it, which repacked matrices otherwise never touch.
        let mut buf = Vec::new();
        let bytes = match self
            .reader
            .as_ref()
            .and_then(|f| f.read(w.range.clone(), &mut buf))
        {
            Some(b) => b,
            None => w.bytes(self.file),
        };
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Weight {
            values: Some(values.into()),
            ..w
        })
    }

    /// Repacks `w` ([`Weight::packed`]) if its kernel family has an
    /// interleaved kernel for it: every such matrix if `all`, else those for
    /// which it pays ([`Packed::preferred`]).
    pub fn repack(&self, w: &mut Weight, all: bool) -> Result<(), String> {
        w.repack(self.file, self.reader.as_ref(), all)
    }

    pub fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Weight>, String> {
        match self.file.tensor(name) {
            Some(_) => self.vector(name, n).map(Some),
            None => Ok(None),
        }
    }

    pub fn find(&self, name: &str, cols: usize, rows: usize) -> Result<Option<Weight>, String> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let mut dims: Vec<u64> = info.dims.clone();
        while dims.len() > 1 && dims.last() == Some(&1) {
            dims.pop();
        }
        let want: Vec<u64> = if rows == 1 {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        if dims != want {
            return Err(format!(
                "tensor '{name}' has shape {:?}, expected {:?} (ne0 first)",
                info.dims, want
            ));
        }
        if !matches!(
            info.ggml_type,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
        ) {
            return Err(format!(
                "tensor '{name}' has type {}, which meki-run cannot compute with",
                info.ggml_type
            ));
        }
        let range = self
            .file
            .header()
            .tensor_range(info)
            .ok_or_else(|| format!("tensor '{name}' data lies outside the file"))?;
        Ok(Some(Weight {
            name: name.to_string(),
            ty: info.ggml_type,
            rows,
            cols,
            range,
            packed: None,
            values: None,
        }))
    }
}

impl ModelWeights {
    pub fn load(file: &GgufFile, c: &Config) -> Result<ModelWeights, String> {
        let l = Loader::new(file);
        let token_embd = l.get("token_embd.weight", c.n_embd, c.n_vocab)?;
        let output_norm = l.vector("output_norm.weight", c.n_embd)?;
        let (output, tied_output) = match l.find("output.weight", c.n_embd, c.n_vocab)? {
            Some(w) => (w, false),
            None => (token_embd.clone(), true),
        };
        let mut layers = Vec::with_capacity(c.n_layer.min(4096));
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qwen2 = c.arch == Arch::Qwen2;
            let qwen3 = c.arch == Arch::Qwen3;
            let bias = |s: &str, len: usize| -> Result<Option<Weight>, String> {
                if qwen2 {
                    l.vector(&n(s), len).map(Some)
                } else {
                    l.opt_vector(&n(s), len)
                }
            };
            let head_norm = |s: &str| -> Result<Option<Weight>, String> {
                if qwen3 {
                    l.vector(&n(s), c.head_dim).map(Some)
                } else {
                    l.opt_vector(&n(s), c.head_dim)
                }
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), c.n_embd)?,
                wq: l.get(&n("attn_q.weight"), c.n_embd, c.q_dim())?,
                wk: l.get(&n("attn_k.weight"), c.n_embd, c.kv_dim())?,
                wv: l.get(&n("attn_v.weight"), c.n_embd, c.kv_dim())?,
                bq: bias("attn_q.bias", c.q_dim())?,
                bk: bias("attn_k.bias", c.kv_dim())?,
                bv: bias("attn_v.bias", c.kv_dim())?,
                q_norm: head_norm("attn_q_norm.weight")?,
                k_norm: head_norm("attn_k_norm.weight")?,
                wo: l.get(&n("attn_output.weight"), c.q_dim(), c.n_embd)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), c.n_embd)?,
                ffn_gate: l.get(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                ffn_up: l.get(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                ffn_down: l.get(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
            });
        }
        let mode = RepackMode::from_env();
        if mode != RepackMode::Off {
            let all = mode == RepackMode::All;
            layers.par_iter_mut().try_for_each(|lw| {
                for w in [
                    &mut lw.wq,
                    &mut lw.wk,
                    &mut lw.wv,
                    &mut lw.wo,
                    &mut lw.ffn_gate,
                    &mut lw.ffn_up,
                    &mut lw.ffn_down,
                ] {
                    l.repack(w, all)?;
                }
                Ok::<(), String>(())
            })?;
        }
        Ok(ModelWeights {
            token_embd,
            layers,
            output_norm,
            output,
            tied_output,
        })
    }
}
