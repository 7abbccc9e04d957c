//! Decode-step products grouped into one thread-pool dispatch.
//!
//! In a decode step several matrices read inputs that are ready at the same
//! time: Q, K and V read the attention norm; the FFN gate and up and the
//! MeKi gate read the FFN norm (or the residual); the FFN down and the MeKi
//! output read their own small vectors. Each group runs as one
//! `matvec_multi` (one wake-up and one barrier, small jobs filling the gaps
//! of large ones), with every input quantized once per activation format.
//! Repacked matrices ([`Weight::packed`]) join the group with their own
//! prepared input; the map's pages of those matrices are never touched.

use super::weights::Weight;
use crate::gguf::GgufFile;
use crate::kernels::formats::GgmlType;
use crate::kernels::multi::{matvec_multi, Job, MatvecJob, PackedJob, MAX_JOBS};
use crate::kernels::repack::Packed;
use crate::kernels::{self, ThreadPool};

/// How a matrix reads its input.
#[derive(Clone, Copy)]
enum Form<'w> {
    /// Rows quantized to this activation type ([`kernels::vec_dot_type`];
    /// f32 bytes for float weights), for a matrix in its GGUF layout.
    Plain(GgmlType),
    /// Rows prepared for this repacked matrix ([`Packed::prepare_rows`]).
    Packed(&'w Packed),
}

/// The bytes of a [`Form`]: matrices whose forms have equal formats read
/// the same prepared input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain(GgmlType),
    /// Prepared rows of this [`Packed::act_kind`].
    Packed(GgmlType),
}

impl<'w> Form<'w> {
    /// The form `w` reads.
    fn of(w: &'w Weight) -> Form<'w> {
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
}

/// One input vector quantized to the activation formats of the weights that
/// read it (at most a few: e.g. Q8_0 and Q8_K in a mixed Q4_K_M layer, or
/// plain and repacked forms). Buffers are kept between calls: a decode step
/// allocates nothing for them.
#[derive(Default)]
pub struct QuantizedInput {
    /// Format, bytes in use, buffer (kept at its largest size: formats of
    /// different lengths take turns in a slot, and growing a `Vec` back
    /// would zero-fill it every time).
    slots: Vec<(Format, usize, Vec<u8>)>,
    used: usize,
}

impl QuantizedInput {
    /// Forget the previous input.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Make sure `x` is available in the form `w` reads.
    fn prepare(&mut self, w: &Weight, x: &[f32]) {
        let form = Form::of(w);
        let format = form.format();
        if self.slots[..self.used].iter().any(|(f, _, _)| *f == format) {
            return;
        }
        if self.used == self.slots.len() {
            self.slots.push((format, 0, Vec::new()));
        }
        let len = match form {
            Form::Packed(p) => p.act_row_bytes(),
            Form::Plain(act) => act
                .row_bytes(x.len() as u64)
                .expect("shape checked at load") as usize,
        };
        let (slot_format, slot_len, buf) = &mut self.slots[self.used];
        *slot_format = format;
        *slot_len = len;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let bytes = &mut buf[..len];
        let isa = kernels::isa();
        match form {
            Form::Packed(p) => p
                .prepare_rows(isa, x, bytes)
                .unwrap_or_else(|e| panic!("prepare {} input: {e}", w.name)),
            Form::Plain(GgmlType::F32) => bytes.copy_from_slice(bytemuck::cast_slice(x)),
            Form::Plain(act) => kernels::quantize_activations(isa, act, x, bytes)
                .unwrap_or_else(|e| panic!("quantize {act} activations: {e}")),
        }
        self.used += 1;
    }

    fn bytes(&self, w: &Weight) -> &[u8] {
        let format = Form::of(w).format();
        let (_, len, b) = self.slots[..self.used]
            .iter()
            .find(|(f, _, _)| *f == format)
            .expect("prepared before use");
        &b[..*len]
    }
}

/// `y = W x` of one matrix of a group; `input` indexes the group's inputs.
pub struct Product<'a> {
    pub file: &'a GgufFile,
    pub w: &'a Weight,
    pub input: usize,
    pub y: &'a mut [f32],
}

/// Run `products` (one token each) as one dispatch of `pool`. `inputs[i]`
/// is the f32 vector of input `i`, `quant[i]` its quantized forms (filled on
/// demand; reset them when an input changes).
pub fn matvec_group<const N: usize>(
    pool: &ThreadPool,
    inputs: &[&[f32]],
    quant: &mut [&mut QuantizedInput],
    products: [Product<'_>; N],
) {
    const { assert!(N <= MAX_JOBS) };
    for p in &products {
        quant[p.input].prepare(p.w, &inputs[p.input][..p.w.cols]);
    }
    let quant = &*quant;
    let mut jobs = products.map(|p| {
        let x = quant[p.input].bytes(p.w);
        match &p.w.packed {
            Some(packed) => Job::from(PackedJob {
                w: packed,
                acts: x,
                y: p.y,
            }),
            None => Job::from(MatvecJob {
                w: p.w.bytes(p.file),
                ty: p.w.ty,
                rows: p.w.rows,
                cols: p.w.cols,
                xq: x,
                y: p.y,
            }),
        }
    });
    // Shapes and types were checked at load, so an error here is a bug.
    if let Err(e) = matvec_multi(kernels::isa(), pool, &mut jobs) {
        panic!("matvec group: {e}");
    }
}
