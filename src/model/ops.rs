//! Numeric building blocks of the forward pass, on f32 activations.
//!
//! `linear` is the only heavy operation; its input is prepared once per
//! activation format by [`PreparedInput`] and shared by the matrices that
//! read it. The element-wise operations run on the per-token vector kernels
//! of `meki-kernels` (called from `forward.rs`), except a few small ones kept
//! here in plain code.

use super::weights::Weight;
use crate::gguf::GgufFile;
use crate::kernels::formats::{self, GgmlType};
use crate::kernels::repack::{self, Packed};
use crate::kernels::{self, ThreadPool};

/// How a matrix reads its input.
#[derive(Clone, Copy)]
pub(super) enum Form<'w> {
    /// Rows quantized to this activation type ([`kernels::vec_dot_type`];
    /// f32 bytes for float weights), for a matrix in its GGUF layout.
    Plain(GgmlType),
    /// Rows prepared for this repacked matrix ([`Packed::prepare_rows`]).
    Packed(&'w Packed),
}

impl<'w> Form<'w> {
    /// The form `w` reads.
    pub(super) fn of(w: &'w Weight) -> Form<'w> {
        match &w.packed {
            Some(p) => Form::Packed(p),
            None => Form::Plain(kernels::vec_dot_type(w.ty).expect("weight types checked at load")),
        }
    }

    fn format(self) -> Format {
        match self {
            Form::Plain(act) => Format::Plain(act),
            Form::Packed(p) => Format::Packed(p.act_kind()),
        }
    }

    /// Bytes of one prepared row of `cols` elements.
    fn row_bytes(self, cols: usize) -> usize {
        match self {
            Form::Plain(act) => act.row_bytes(cols as u64).expect("shape checked at load") as usize,
            Form::Packed(p) => p.act_row_bytes(),
        }
    }

    /// Prepares the rows of `x` (`cols` elements each) into `out` (one
    /// [`Form::row_bytes`] row each).
    fn prepare_rows(self, x: &[f32], cols: usize, out: &mut [u8]) {
        let isa = kernels::isa();
        let r = match self {
            Form::Packed(p) => p.prepare_rows(isa, x, out),
            Form::Plain(GgmlType::F32) => {
                out.copy_from_slice(bytemuck::cast_slice(x));
                Ok(())
            }
            Form::Plain(act) => {
                let rb = self.row_bytes(cols);
                x.chunks_exact(cols)
                    .zip(out.chunks_exact_mut(rb))
                    .try_for_each(|(xr, dst)| kernels::quantize_activations(isa, act, xr, dst))
            }
        };
        // Shapes and types were checked at load, so an error here is a bug.
        r.unwrap_or_else(|e| panic!("preparing activations: {e}"));
    }
}

/// The bytes a [`Form`] reads: matrices of equal formats (and columns) can
/// share one prepared input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain(GgmlType),
    /// Prepared rows of this [`Packed::act_kind`].
    Packed(GgmlType),
}

/// An f32 input (one or more tokens) prepared once per format that the
/// matrices reading it take, so that Q, K and V (or the FFN gate, up and the
/// MeKi gate) quantize it once, not once per matrix. There are at most a few
/// formats per input: e.g. Q8_0 and Q8_K rows in a Q4_K_M layer, or plain
/// and repacked rows. [`PreparedInput::reset`] when the input changes.
/// Buffers are kept between calls: a decode step allocates nothing for them.
#[derive(Default)]
pub struct PreparedInput {
    slots: Vec<Slot>,
    /// Slots `..used` hold the current input.
    used: usize,
}

/// The input in one format.
struct Slot {
    format: Format,
    tokens: usize,
    cols: usize,
    /// Bytes of `buf` in use. The buffer keeps its largest size: formats of
    /// different lengths take turns in a slot, and growing a `Vec` back
    /// would zero-fill it every time.
    len: usize,
    buf: Vec<u8>,
}

impl PreparedInput {
    /// Forget the previous input.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// The slot holding `x` (`n` rows of `cols`) in `form`, prepared now
    /// (split over the pool by pieces of rows, about four per thread) unless
    /// an earlier matrix of the same format already did it.
    pub(super) fn prepare(
        &mut self,
        pool: &ThreadPool,
        form: Form<'_>,
        x: &[f32],
        n: usize,
        cols: usize,
    ) -> usize {
        let format = form.format();
        let ready = |s: &Slot| s.format == format && s.tokens == n && s.cols == cols;
        if let Some(i) = self.slots[..self.used].iter().position(ready) {
            return i;
        }
        if self.used == self.slots.len() {
            self.slots.push(Slot {
                format,
                tokens: 0,
                cols: 0,
                len: 0,
                buf: Vec::new(),
            });
        }
        let rb = form.row_bytes(cols);
        let slot = &mut self.slots[self.used];
        (slot.format, slot.tokens, slot.cols, slot.len) = (format, n, cols, n * rb);
        if slot.buf.len() < slot.len {
            slot.buf.resize(slot.len, 0);
        }
        let per = n.div_ceil(4 * pool.n_threads()).max(1);
        pool.run_chunks_mut(&mut slot.buf[..slot.len], per * rb, &|piece, rows| {
            let first = piece * per;
            let xs = &x[first * cols..(first + rows.len() / rb) * cols];
            form.prepare_rows(xs, cols, rows);
        });
        self.used += 1;
        self.used - 1
    }

    /// The bytes of slot `i` (from [`PreparedInput::prepare`]).
    pub(super) fn bytes(&self, i: usize) -> &[u8] {
        let slot = &self.slots[i];
        &slot.buf[..slot.len]
    }
}

/// `y[t] = W x[t]` for `n` tokens (`x`: `n x w.cols`, `y`: `n x w.rows`),
/// with `x` prepared in `input` (shared with the other matrices that read
/// it). Runs on the kernels of `meki-kernels` (activations quantized to the
/// weight type's pair, as ggml does), split over the pool's threads by rows.
pub fn linear(
    pool: &ThreadPool,
    file: &GgufFile,
    w: &Weight,
    x: &[f32],
    n: usize,
    input: &mut PreparedInput,
    y: &mut [f32],
) {
    let form = Form::of(w);
    let slot = input.prepare(pool, form, x, n, w.cols);
    let acts = input.bytes(slot);
    let isa = kernels::isa();
    let r = match form {
        Form::Packed(p) => repack::matmul(isa, pool, p, n, acts, y),
        Form::Plain(_) => {
            let bytes = w.bytes(file);
            kernels::matmul::matmul_quantized(isa, pool, bytes, w.ty, w.rows, w.cols, n, acts, y)
        }
    };
    // Shapes and types were checked at load, so a kernel error is a bug here.
    if let Err(e) = r {
        panic!("linear {}: {e}", w.name);
    }
}

/// One row of a weight, embedding or MeKi table as f32: F16 and Q8_0 rows
/// on the SIMD converters of [`kernels::vec`] (the same values as the
/// reference dequantizers: one exact conversion or one product per element),
/// other types on [`formats::dequantize_row`].
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F16 => kernels::vec::f16_to_f32(src, dst),
        GgmlType::Q8_0 => kernels::vec::q8_0_to_f32(src, dst),
        // Types and row lengths are checked when the model is loaded.
        _ => formats::dequantize_row(ty, src, dst).expect("weight type and shape checked at load"),
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: vectorizes and keeps rounding error small.
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// In-place RMSNorm of one row.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    // The sum of squares in f64 (as ggml's rms_norm), in eight partial sums
    // side by side: one running sum is a chain of dependent adds (~4 cycles
    // each; Qwen3's q/k norms of 24 heads took ~3 us a layer), eight
    // vectorize. The f32 mean rounds the same unless the f64 sums differ
    // right at an f32 rounding boundary.
    let mut acc = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v as f64) * (v as f64);
        }
    }
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    let sum = acc.iter().sum::<f64>() + rest;
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// Rotation angles (cos, sin) of position `pos` for `n_rot` dimensions,
/// ggml's recurrence (`theta *= theta_scale` per pair, cos/sin in f32).
pub fn rope_angles(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    out: &mut Vec<(f32, f32)>,
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    out.clear();
    for _ in 0..n_rot / 2 {
        let (s, c) = (freq_scale * theta).sin_cos();
        out.push((c, s));
        theta *= theta_scale;
    }
}

/// In-place RMSNorm of each head of `x` (Qwen3's q/k norm).
pub fn rms_norm_heads(x: &mut [f32], head_dim: usize, w: &[f32], eps: f32) {
    for head in x.chunks_exact_mut(head_dim) {
        rms_norm_inplace(head, w, eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_inplace_matches_one_f64_sum() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        // Head sizes, lengths with a remainder, and values of mixed scale.
        for n in [1, 7, 8, 13, 64, 128, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| rnd() * if i % 5 == 0 { 300.0 } else { 1.0 })
                .collect();
            let w: Vec<f32> = (0..n).map(|_| 1.0 + 0.5 * rnd()).collect();
            let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let scale = 1.0 / ((sum / n as f64) as f32 + 1e-6).sqrt();
            let want: Vec<f32> = x.iter().zip(&w).map(|(&v, &g)| v * scale * g).collect();
            let mut got = x.clone();
            rms_norm_inplace(&mut got, &w, 1e-6);
            assert_eq!(got, want, "n = {n}");
        }
    }
}
