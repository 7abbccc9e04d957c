//! Decode-step products grouped into one thread-pool dispatch.
//!
//! In a decode step several matrices read inputs that are ready at the same
//! time: Q, K and V read the attention norm; the FFN gate and up and the
//! MeKi gate read the FFN norm (or the residual); the FFN down and the MeKi
//! output read their own small vectors. Each group runs as one
//! `matvec_multi` (one wake-up and one barrier, small jobs filling the gaps
//! of large ones), with every input quantized once per activation type.

use super::weights::Weight;
use crate::gguf::GgufFile;
use crate::kernels::formats::GgmlType;
use crate::kernels::multi::{matvec_multi, MatvecJob, MAX_JOBS};
use crate::kernels::{self, ThreadPool};

/// One input vector quantized to the activation types of the weights that
/// read it (at most a few: e.g. Q8_0 and Q8_K in a mixed Q4_K_M layer).
/// Buffers are kept between calls: a decode step allocates nothing.
#[derive(Default)]
pub struct QuantizedInput {
    slots: Vec<(GgmlType, Vec<u8>)>,
    used: usize,
}

impl QuantizedInput {
    /// Forget the previous input.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Make sure `x` is available quantized for weights of type `w_ty`.
    fn prepare(&mut self, w_ty: GgmlType, x: &[f32]) {
        let act = kernels::vec_dot_type(w_ty).expect("weight types checked at load");
        if self.slots[..self.used].iter().any(|(a, _)| *a == act) {
            return;
        }
        if self.used == self.slots.len() {
            self.slots.push((act, Vec::new()));
        }
        let (slot_act, bytes) = &mut self.slots[self.used];
        *slot_act = act;
        if act == GgmlType::F32 {
            bytes.clear();
            bytes.extend_from_slice(bytemuck::cast_slice(x));
        } else {
            let len = act
                .row_bytes(x.len() as u64)
                .expect("shape checked at load") as usize;
            bytes.resize(len, 0);
            kernels::quantize_activations(kernels::isa(), act, x, bytes)
                .unwrap_or_else(|e| panic!("quantize {act} activations: {e}"));
        }
        self.used += 1;
    }

    fn bytes(&self, w_ty: GgmlType) -> &[u8] {
        let act = kernels::vec_dot_type(w_ty).expect("weight types checked at load");
        let (_, b) = self.slots[..self.used]
            .iter()
            .find(|(a, _)| *a == act)
            .expect("prepared before use");
        b
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
    // Repacked matrices run on their own kernel (`ops`), which reads the
    // packed copy: the map's pages of those matrices are never touched.
    if products.iter().any(|p| p.w.packed.is_some()) {
        for p in products {
            super::ops::linear_once(pool, p.file, p.w, inputs[p.input], 1, p.y);
        }
        return;
    }
    for p in &products {
        quant[p.input].prepare(p.w.ty, &inputs[p.input][..p.w.cols]);
    }
    let quant = &*quant;
    let mut jobs = products.map(|p| MatvecJob {
        w: p.w.bytes(p.file),
        ty: p.w.ty,
        rows: p.w.rows,
        cols: p.w.cols,
        xq: quant[p.input].bytes(p.w.ty),
        y: p.y,
    });
    // Shapes and types were checked at load, so an error here is a bug.
    if let Err(e) = matvec_multi(kernels::isa(), pool, &mut jobs) {
        panic!("matvec group: {e}");
    }
}
