//! Decode-step products grouped into one thread-pool dispatch.
//!
//! In a decode step several matrices read inputs that are ready at the same
//! time: Q, K and V read the attention norm; the FFN gate and up and the
//! MeKi gate read the FFN norm (or the residual); the FFN down and the MeKi
//! output read their own small vectors. Each group runs as one
//! `matvec_multi` (one wake-up and one barrier, small jobs filling the gaps
//! of large ones), with every input prepared once per activation format
//! ([`PreparedInput`]). Repacked matrices ([`Weight::packed`]) join the
//! group with their own prepared rows; the map's pages of those matrices are
//! never touched.

use super::ops::{Form, PreparedInput};
use super::weights::Weight;
use crate::gguf::GgufFile;
use crate::kernels::multi::{matvec_multi, Job, MatvecJob, PackedJob, MAX_JOBS};
use crate::kernels::{self, ThreadPool};

/// `y = W x` of one matrix of a group; `input` indexes the group's inputs.
pub struct Product<'a> {
    pub file: &'a GgufFile,
    pub w: &'a Weight,
    pub input: usize,
    pub y: &'a mut [f32],
}

/// Run `products` (one token each) as one dispatch of `pool`. `inputs[i]`
/// is the f32 vector of input `i`, `prepared[i]` its prepared forms (filled
/// on demand; reset them when an input changes).
pub fn matvec_group<const N: usize>(
    pool: &ThreadPool,
    inputs: &[&[f32]],
    prepared: &mut [PreparedInput],
    products: [Product<'_>; N],
) {
    const { assert!(N <= MAX_JOBS) };
    let products = products.map(|p| {
        let form = Form::of(p.w);
        let slot = prepared[p.input].prepare(pool, form, inputs[p.input], 1, p.w.cols);
        (p, form, slot)
    });
    let prepared = &*prepared;
    let mut jobs = products.map(|(p, form, slot)| {
        let x = prepared[p.input].bytes(slot);
        match form {
            Form::Packed(packed) => Job::from(PackedJob {
                w: packed,
                acts: x,
                y: p.y,
            }),
            Form::Plain(_) => Job::from(MatvecJob {
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
