//! The fold (re-parameterization, MEKI.md "The fold"): for every vocabulary
//! row v and layer l,
//! `T_l[v] = alpha_l * RMSNorm_mix(M_l[v] + beta_l * G_l(E[v]))`,
//! `G_l(z) = W_down (silu(W_g z) * (W_up z))`, with `z = RMSNorm_g(E[v])` in the
//! Megatron form and `z = E[v]` in the demo form. All arithmetic in f32 (sums of
//! squares in f64); the products are blocked GEMMs over blocks of rows.

use super::checkpoint::{Checkpoint, Form, MekiSpec, Part};
use super::gemm::{gemm_nt, PackedB};
use rayon::prelude::*;

/// Vocabulary rows per parallel work item: a multiple of the GEMM's 6-row
/// micro-tile, so no tile computes padding rows.
pub const ROWS_PER_TASK: usize = 96;

/// One layer's fold weights, f32, the SwiGLU matrices packed.
pub struct LayerFold {
    pub d: usize,
    pub d_mem: usize,
    pub eps: f32,
    pub alpha: f32,
    pub beta: f32,
    pub mix: Vec<f32>,
    pub has_static: bool,
    /// G's input RMSNorm weight (Megatron form).
    pub g_norm: Option<Vec<f32>>,
    /// (W_g, W_up, W_down), absent for the static-only variant.
    pub g: Option<(PackedB, PackedB, PackedB)>,
}

impl LayerFold {
    pub fn load(ck: &Checkpoint, spec: MekiSpec, l: usize) -> Result<LayerFold, String> {
        let d = ck.hp.n_embd;
        let dm = spec.d_mem;
        let g = if spec.variant.has_dynamic() {
            let wg = ck.load(Part::MekiGGate(l))?;
            let wu = ck.load(Part::MekiGUp(l))?;
            let wd = ck.load(Part::MekiGDown(l))?;
            Some((
                PackedB::pack(&wg.data, d / 2, d),
                PackedB::pack(&wu.data, d / 2, d),
                PackedB::pack(&wd.data, dm, d / 2),
            ))
        } else {
            None
        };
        let g_norm = if spec.variant.has_dynamic() && spec.form == Form::Megatron {
            Some(ck.load(Part::MekiGNorm(l))?.data)
        } else {
            None
        };
        Ok(LayerFold {
            d,
            d_mem: dm,
            eps: ck.hp.eps,
            alpha: ck.scalar(Part::MekiAlpha(l))?,
            beta: ck.scalar(Part::MekiBeta(l))?,
            mix: ck.load(Part::MekiMix(l))?.data,
            has_static: spec.variant.has_static(),
            g_norm,
            g,
        })
    }

    /// Folds `rows` vocabulary rows: `emb` is `rows x d` (E), `stat` is
    /// `rows x d_mem` (M, when the variant has it). Row r's result goes to
    /// `out[r * out_stride + out_off ..][..d_mem]`.
    pub fn fold_rows(
        &self,
        emb: &[f32],
        stat: Option<&[f32]>,
        rows: usize,
        out: &mut [f32],
        out_stride: usize,
        out_off: usize,
    ) {
        let (d, dm) = (self.d, self.d_mem);
        let mut mem = vec![0f32; rows * dm];
        if let Some((wg, wu, wd)) = &self.g {
            let z: std::borrow::Cow<[f32]> = match &self.g_norm {
                Some(w) => {
                    let mut z = emb[..rows * d].to_vec();
                    for row in z.chunks_exact_mut(d) {
                        rms_norm(row, w, self.eps);
                    }
                    z.into()
                }
                None => (&emb[..rows * d]).into(),
            };
            let h = d / 2;
            let mut hg = vec![0f32; rows * h];
            let mut hu = vec![0f32; rows * h];
            gemm_nt(&z, rows, wg, &mut hg);
            gemm_nt(&z, rows, wu, &mut hu);
            for (g, u) in hg.iter_mut().zip(&hu) {
                *g = silu(*g) * u;
            }
            gemm_nt(&hg, rows, wd, &mut mem);
            if self.beta != 1.0 {
                mem.iter_mut().for_each(|x| *x *= self.beta);
            }
        }
        if let (true, Some(m)) = (self.has_static, stat) {
            for (x, s) in mem.iter_mut().zip(m) {
                *x += s;
            }
        }
        for (r, row) in mem.chunks_exact_mut(dm).enumerate() {
            rms_norm(row, &self.mix, self.eps);
            let dst = &mut out[r * out_stride + out_off..][..dm];
            for (o, x) in dst.iter_mut().zip(row.iter()) {
                *o = self.alpha * x;
            }
        }
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x * w / sqrt(mean(x^2) + eps)`, in place.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let ss: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let inv = (1.0 / (ss / x.len() as f64 + f64::from(eps)).sqrt()) as f32;
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * inv * g;
    }
}

/// Folds vocabulary rows `v0 .. v0 + n` of every layer into `out`
/// (`n x (n_layer * d_mem)`, token-major like the GGUF table), in parallel
/// over blocks of [`ROWS_PER_TASK`] rows on the current rayon pool. Layer
/// weights are loaded one layer at a time (memory: one layer's f32 weights
/// plus the block), `progress(l)` is called after each layer.
pub fn fold_block(
    ck: &Checkpoint,
    spec: MekiSpec,
    v0: usize,
    n: usize,
    out: &mut [f32],
    mut progress: impl FnMut(usize),
) -> Result<(), String> {
    let d = ck.hp.n_embd;
    let dm = spec.d_mem;
    let n_layer = ck.hp.n_layer;
    let stride = n_layer * dm;
    let emb = ck.rows(Part::Embd, v0, n)?;
    for l in 0..n_layer {
        let lf = LayerFold::load(ck, spec, l)?;
        let stat = if spec.variant.has_static() {
            Some(ck.rows(Part::MekiStatic(l), v0, n)?)
        } else {
            None
        };
        out[..n * stride]
            .par_chunks_mut(ROWS_PER_TASK * stride)
            .enumerate()
            .for_each(|(i, o)| {
                let r0 = i * ROWS_PER_TASK;
                let rows = o.len() / stride;
                let s = stat.as_ref().map(|s| &s[r0 * dm..(r0 + rows) * dm]);
                lf.fold_rows(&emb[r0 * d..(r0 + rows) * d], s, rows, o, stride, l * dm);
            });
        progress(l);
    }
    Ok(())
}
