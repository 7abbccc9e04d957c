//! The model's tensors, located (not copied) in the mapped GGUF file.
//!
//! A [`Weight`] is a checked byte range of the map plus its ggml type and
//! shape; the forward pass resolves it to a slice with [`Weight::bytes`].
//! Every shape is checked against the hyper-parameters at load, so the
//! kernels never see a row that is shorter than they expect.
//!
//! Matrices for which repacking pays ([`Packed::preferred`]: Q4_0, Q4_K,
//! Q6_K and Q8_0 on AVX2) are copied once at load into an interleaved layout
//! ([`Weight::packed`]), as llama.cpp's CPU backend does (`CPU_REPACK`);
//! prefill runs ~2x (Q4_0) / ~1.4x (Q4_K_M, Q8_0 end to end) faster, and
//! decode is not slower (Q6_K, re-encoded in quant planes, decodes faster:
//! see `meki_kernels::repack`). `MEKI_REPACK=0` keeps every matrix in the
//! map; `MEKI_REPACK=all` repacks every type that has a kernel
//! ([`Packed::supported`]; today the same set).
//!
//! The repacked matrices are not separate heap allocations: the loader plans
//! their sizes, then places them all in one weight arena ([`super::arena`]:
//! one anonymous region, 2 MiB aligned, advised `MADV_HUGEPAGE` on Linux and
//! Android) and fills it in parallel (`pread`, so the file pages are never
//! mapped in). MeKi's projections go into the same arena, each right after
//! the FFN matrix that decode reads before it (`LayerExtra`), so a layer's
//! weights are one stream in read order (until s21 they had an arena of
//! their own, and every layer's decode jumped there and back). With transparent
//! huge pages in `madvise` mode decode streams the weights through 2 MiB
//! pages. `MEKI_HUGEPAGES=0` skips the advice (4 KiB pages; A/B in one
//! binary). The output head (with tied embeddings `token_embd`, whose rows
//! the embedding lookup then reads from the copy too) is copied into the
//! arena as it is: read in full every token, it gains from the huge pages
//! too, and its file pages are never mapped, so the resident set does not
//! grow. A head of a type the layers repack (a Q8_0 file's; since s22
//! also the Q6_K head of Q4_0 and Q4_K_M files) is repacked instead (s19:
//! one-thread decode 1.03-1.05x at 0.6B for Q8_0), and the embedding
//! rows are read from the map. `MEKI_COPY_OUTPUT=0` leaves a head that is
//! not repacked in the map. The layer matrices that
//! are not repacked (F16, Q5_0, ...) are copied as they are for the same
//! reason (0.6B F16 decode 1.08x at 1 thread on the EPYC, neutral at 2,
//! where both ways read at the VM's bandwidth); `MEKI_COPY_WEIGHTS=0`
//! leaves them in the map. MeKi tables always stay in the map: they are
//! storage, a few rows read per token.

use super::arena::{self, Arena, ArenaPlan, ArenaSlice};
use super::config::{Arch, Config};
use crate::gguf::GgufFile;
use crate::kernels::formats::legacy::widen_row_q5_0_to_q8_0;
use crate::kernels::formats::{BlockQ5_0, BlockQ8_0, GgmlType};
use crate::kernels::repack::{Packed, SharedRegion};
use bytemuck::Zeroable;
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
    /// The matrix copied as it is into the weight arena (the output head,
    /// see [`copy_output_wanted`]); [`Weight::bytes`] then reads the copy.
    copied: Option<ArenaSlice>,
}

impl Weight {
    /// The tensor's bytes in its GGUF layout: the arena copy if it has one,
    /// else the map.
    pub fn bytes<'a>(&'a self, file: &'a GgufFile) -> &'a [u8] {
        match &self.copied {
            Some(c) => c.bytes(),
            None => &file.as_bytes()[self.range.clone()],
        }
    }

    /// The values of a 1-D F32 tensor (a norm weight or a bias): the copy
    /// made at load, else the mapped bytes.
    pub fn f32s<'a>(&'a self, file: &'a GgufFile) -> &'a [f32] {
        match &self.values {
            Some(v) => v,
            None => bytemuck::cast_slice(self.bytes(file)),
        }
    }

    /// Whether products read this matrix through the map (it has neither a
    /// repacked nor a copied arena copy).
    fn mapped(&self) -> bool {
        self.packed.is_none() && self.copied.is_none() && self.values.is_none()
    }

    /// Bytes a product with this matrix reads: its repacked copy's, else
    /// its GGUF bytes (in the map or the arena copy).
    pub fn product_bytes(&self) -> usize {
        match &self.packed {
            Some(p) => p.n_bytes(),
            None => self.range.len(),
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

    /// Whether the active kernel family repacks this matrix: every type
    /// with an interleaved kernel if `all`, else those for which it pays
    /// ([`Packed::preferred`]).
    pub(crate) fn repack_wanted(&self, all: bool) -> bool {
        let isa = crate::kernels::isa();
        if all {
            Packed::supported(isa, self.ty, self.rows, self.cols)
        } else {
            Packed::preferred(isa, self.ty, self.rows, self.cols)
        }
    }

    /// The type of the repacked copy: the matrix's own, or Q8_0 where it
    /// is widened ([`Placement::WidenQ8_0`]).
    fn packed_type(&self, how: Placement) -> GgmlType {
        match how {
            Placement::WidenQ8_0 => GgmlType::Q8_0,
            _ => self.ty,
        }
    }

    /// Whether this Q5_0 matrix runs faster widened to Q8_0 and repacked
    /// ([`Placement::WidenQ8_0`]): the active kernel family must repack Q8_0
    /// of this shape.
    pub(crate) fn widen_wanted(&self) -> bool {
        self.ty == GgmlType::Q5_0
            && Packed::preferred(crate::kernels::isa(), GgmlType::Q8_0, self.rows, self.cols)
    }

    /// Bytes the matrix takes in the arena as `how` places it.
    fn arena_bytes(&self, how: Placement) -> Result<usize, String> {
        match how {
            Placement::Repack | Placement::WidenQ8_0 => {
                Packed::byte_len(self.packed_type(how), self.rows, self.cols)
                    .map_err(|e| format!("repacking tensor '{}': {e}", self.name))
            }
            Placement::Copy => Ok(self.range.len()),
        }
    }

    /// Writes the matrix into `dst` (its arena bytes) as `how` places it,
    /// reading the file with `pread` (else through the map).
    fn fill_arena(
        &self,
        file: &GgufFile,
        reader: Option<&SourceReader>,
        how: Placement,
        dst: &mut [u8],
    ) -> Result<(), String> {
        let name = &self.name;
        if how == Placement::Copy {
            if reader.is_some_and(|f| f.read_into(self.range.start, dst)) {
                return Ok(());
            }
            dst.copy_from_slice(&file.as_bytes()[self.range.clone()]);
            return Ok(());
        }
        let err = |e: crate::kernels::KernelError| format!("repacking tensor '{name}': {e}");
        let rb = self.row_bytes();
        // Rows read in pieces of whole 8-row groups (~256 KiB).
        let step = ((256 << 10) / (8 * rb).max(1)).max(1) * 8;
        let mut buf = Vec::new();
        let mut wide: Vec<BlockQ8_0> = Vec::new();
        let ty = self.packed_type(how);
        for r0 in (0..self.rows).step_by(step) {
            let r1 = (r0 + step).min(self.rows);
            let range = self.range.start + r0 * rb..self.range.start + r1 * rb;
            let src = match reader.and_then(|f| f.read(range.clone(), &mut buf)) {
                Some(b) => b,
                None => &file.as_bytes()[range],
            };
            let src = match how {
                Placement::WidenQ8_0 => {
                    // Q5_0 blocks are 22 bytes, 2-aligned at best: copy
                    // them out rather than cast in place.
                    let blocks: Vec<BlockQ5_0> = src
                        .chunks_exact(std::mem::size_of::<BlockQ5_0>())
                        .map(bytemuck::pod_read_unaligned)
                        .collect();
                    wide.resize(blocks.len(), BlockQ8_0::zeroed());
                    widen_row_q5_0_to_q8_0(&blocks, &mut wide);
                    bytemuck::cast_slice(&wide)
                }
                _ => src,
            };
            Packed::fill_into(ty, self.rows, self.cols, dst, r0, src).map_err(err)?;
        }
        Ok(())
    }
}

/// How a matrix is placed in the weight arena.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Placement {
    /// Repacked into its interleaved layout ([`Weight::packed`]).
    Repack,
    /// A Q5_0 matrix rewritten as Q8_0 blocks of the same values
    /// (`widen_row_q5_0_to_q8_0`), then repacked as Q8_0: for small
    /// matrices (the MeKi projections of k-quant files), where the repacked
    /// Q8_0 kernels beat the plain Q5_0 ones by more than the 1.5x bytes cost.
    WidenQ8_0,
    /// Copied as it is (the output head, see [`copy_output_wanted`]; the
    /// layer matrices not repacked, see [`copy_weights_wanted`]).
    Copy,
}

/// Whether the output head is copied into the weight arena (env
/// `MEKI_COPY_OUTPUT`, default on; see the module docs).
pub(crate) fn copy_output_wanted() -> bool {
    crate::env_switch("MEKI_COPY_OUTPUT")
}

/// Whether the layer matrices that are not repacked (F16, Q5_0, Q5_K, ...)
/// are copied into the weight arena as they are (env `MEKI_COPY_WEIGHTS`,
/// default on; see the module docs).
pub(crate) fn copy_weights_wanted() -> bool {
    crate::env_switch("MEKI_COPY_WEIGHTS")
}

/// Whether the matrices read through the map are prefaulted at load (env
/// `MEKI_PREFAULT`, default on; [`crate::gguf::FileMap::populate`]).
pub(crate) fn prefault_wanted() -> bool {
    crate::env_switch("MEKI_PREFAULT")
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
        self.read_into(range.start, buf).then_some(buf)
    }

    /// Fills `dst` from file offset `at`; false if the read failed.
    fn read_into(&self, at: usize, dst: &mut [u8]) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.0.read_exact_at(dst, at as u64).is_ok()
        }
        #[cfg(not(unix))]
        {
            let _ = (at, dst);
            false
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

impl LayerWeights {
    /// The layer's seven matrices.
    pub fn matrices(&self) -> [&Weight; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
        ]
    }

    /// The same seven matrices, for placing them at load.
    fn matrices_mut(&mut self) -> [&mut Weight; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.ffn_gate,
            &mut self.ffn_up,
            &mut self.ffn_down,
        ]
    }
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
            copied: None,
        }))
    }
}

/// A matrix to place in a weight arena: its source file's loader, the
/// weight and how.
pub(crate) struct ArenaJob<'j, 'f> {
    pub src: &'j Loader<'f>,
    pub w: &'j mut Weight,
    pub how: Placement,
}

/// Which FFN matrix of a layer a [`LayerExtra`] follows in the arena.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AfterFfn {
    Up,
    Down,
}

/// A matrix of another part of the model (MeKi's projections) placed in
/// the backbone's weight arena right after one of layer `layer`'s FFN
/// matrices.
pub(crate) struct LayerExtra<'j, 'f> {
    pub layer: usize,
    pub after: AfterFfn,
    pub job: ArenaJob<'j, 'f>,
}

/// Moves the jobs of `extras` that follow layer `layer`'s `after` matrix to
/// the end of `jobs`, in their order.
fn move_extras<'j, 'f>(
    extras: &mut Vec<LayerExtra<'j, 'f>>,
    jobs: &mut Vec<ArenaJob<'j, 'f>>,
    layer: usize,
    after: AfterFfn,
) {
    let mut k = 0;
    while k < extras.len() {
        if extras[k].layer == layer && extras[k].after == after {
            jobs.push(extras.remove(k).job);
        } else {
            k += 1;
        }
    }
}

/// Places the matrices of `jobs`, in their order, in one new weight arena
/// ([`arena`] module): sizes planned first, the arena allocated once,
/// filled in parallel (each matrix from its own file), then shared by the
/// matrices ([`Weight::packed`] for repacked ones, [`Weight::bytes`] reads
/// copied ones). `what` names the arena in errors.
pub(crate) fn place(jobs: Vec<ArenaJob<'_, '_>>, what: &str) -> Result<(), String> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut plan = ArenaPlan::default();
    for j in &jobs {
        plan.push(j.w.arena_bytes(j.how)?)?;
    }
    let mut arena = Arena::allocate(&plan, arena::huge_pages_wanted(), what)?;
    let slices = arena.split_mut(&plan)?;
    jobs.par_iter().zip(slices).try_for_each(|(j, dst)| {
        j.w.fill_arena(j.src.file, j.src.reader.as_ref(), j.how, dst)
    })?;
    let arena = Arc::new(arena);
    for (ArenaJob { w, how, .. }, range) in jobs.into_iter().zip(plan.ranges()) {
        match how {
            Placement::Repack | Placement::WidenQ8_0 => {
                let region: SharedRegion = arena.clone();
                let ty = w.packed_type(how);
                let p = Packed::from_shared(ty, w.rows, w.cols, region, range.start)
                    .map_err(|e| format!("repacking tensor '{}': {e}", w.name))?;
                w.packed = Some(Arc::new(p));
            }
            Placement::Copy => {
                w.copied = ArenaSlice::new(arena.clone(), range.clone());
            }
        }
    }
    Ok(())
}

impl ModelWeights {
    /// The model's weights; `extras` go into the same weight arena, each
    /// right after the FFN matrix it names (in the order given).
    pub(crate) fn load(
        file: &GgufFile,
        c: &Config,
        extras: Vec<LayerExtra<'_, '_>>,
    ) -> Result<ModelWeights, String> {
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
        let mut output = output;
        let mut jobs = Vec::new();
        let mode = RepackMode::from_env();
        // Where a matrix goes: repacked where its type pays, whatever the
        // copy knobs (so they never change a kernel; a repacked tied head's
        // embedding rows are then read from the map), else copied as it is
        // if `copy` says so, else left in the map.
        let placement = |w: &Weight, copy: bool| {
            if mode != RepackMode::Off && w.repack_wanted(mode == RepackMode::All) {
                Some(Placement::Repack)
            } else {
                copy.then_some(Placement::Copy)
            }
        };
        let copy_rest = copy_weights_wanted();
        let mut extras = extras;
        for (i, lw) in layers.iter_mut().enumerate() {
            let [wq, wk, wv, wo, gate, up, down] = lw.matrices_mut();
            for w in [wq, wk, wv, wo, gate, up] {
                if let Some(how) = placement(w, copy_rest) {
                    jobs.push(ArenaJob { src: &l, w, how });
                }
            }
            move_extras(&mut extras, &mut jobs, i, AfterFfn::Up);
            if let Some(how) = placement(down, copy_rest) {
                jobs.push(ArenaJob {
                    src: &l,
                    w: down,
                    how,
                });
            }
            move_extras(&mut extras, &mut jobs, i, AfterFfn::Down);
        }
        // Extras of layers the model does not have (none from MeKi, whose
        // layer count is checked): at the end.
        jobs.extend(extras.into_iter().map(|e| e.job));
        if let Some(how) = placement(&output, copy_output_wanted()) {
            jobs.push(ArenaJob {
                src: &l,
                w: &mut output,
                how,
            });
        }
        place(jobs, "model weights")?;
        if prefault_wanted() {
            // The matrices read through the map, all read every token: their
            // page faults at load rather than in the first forward pass
            // (measured: ~0.1 s of the 1.7B F16 shape's first pass).
            let matrices = layers.iter().flat_map(|lw| lw.matrices());
            for w in matrices.chain([&output]).filter(|w| w.mapped()) {
                file.populate(w.range.start, w.range.len());
            }
        }
        let mut token_embd = token_embd;
        if tied_output {
            // The embedding rows are read from the same copy.
            token_embd.copied = output.copied.clone();
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
