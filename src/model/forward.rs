//! The forward pass of a llama/qwen decoder over a batch of tokens, with a
//! KV cache. One `Session` is one conversation: its cache grows as tokens
//! are fed, and `rewind` drops cached positions.

use super::ops::{self, linear};
use super::weights::Weight;
use super::Model;
use crate::kernels;
use crate::meki::GateInput;
use half::f16;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

/// One layer's cached keys and values, position-major: row `p` holds all KV
/// heads of position `p` (`kv_dim` values).
enum KvStore {
    F16 { k: Vec<f16>, v: Vec<f16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

impl KvStore {
    fn new(ty: KvType, n: usize) -> KvStore {
        match ty {
            KvType::F16 => KvStore::F16 {
                k: vec![f16::ZERO; n],
                v: vec![f16::ZERO; n],
            },
            KvType::F32 => KvStore::F32 {
                k: vec![0.0; n],
                v: vec![0.0; n],
            },
        }
    }

    fn store(&mut self, at: usize, k_row: &[f32], v_row: &[f32]) {
        let n = k_row.len();
        match self {
            KvStore::F16 { k, v } => {
                for i in 0..n {
                    k[at + i] = f16::from_f32(k_row[i]);
                    v[at + i] = f16::from_f32(v_row[i]);
                }
            }
            KvStore::F32 { k, v } => {
                k[at..at + n].copy_from_slice(k_row);
                v[at..at + n].copy_from_slice(v_row);
            }
        }
    }

    fn key(&self, at: usize, out: &mut [f32]) {
        let len = out.len();
        match self {
            KvStore::F16 { k, .. } => {
                for (o, h) in out.iter_mut().zip(&k[at..at + len]) {
                    *o = h.to_f32();
                }
            }
            KvStore::F32 { k, .. } => out.copy_from_slice(&k[at..at + len]),
        }
    }

    fn value_axpy(&self, at: usize, w: f32, out: &mut [f32]) {
        let len = out.len();
        match self {
            KvStore::F16 { v, .. } => {
                for (o, h) in out.iter_mut().zip(&v[at..at + len]) {
                    *o += w * h.to_f32();
                }
            }
            KvStore::F32 { v, .. } => {
                for (o, x) in out.iter_mut().zip(&v[at..at + len]) {
                    *o += w * x;
                }
            }
        }
    }
}

/// A conversation's state: KV cache and position.
pub struct Session<'m> {
    model: &'m Model,
    n_ctx: usize,
    n_past: usize,
    cache: Vec<KvStore>,
}

/// Which positions of a batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token (generation).
    Last,
    /// Every token (perplexity).
    All,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, kv: KvType) -> Session<'m> {
        let c = &model.config;
        let cache = (0..c.n_layer)
            .map(|_| KvStore::new(kv, n_ctx * c.kv_dim()))
            .collect();
        Session {
            model,
            n_ctx,
            n_past: 0,
            cache,
        }
    }

    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forget cached positions from `n` on.
    pub fn rewind(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    /// Run `tokens` at positions `n_past..`, append them to the cache, and
    /// return the logits (`n_vocab` per requested position).
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>, String> {
        let model = self.model;
        let c = &model.config;
        let w = &model.weights;
        let file = &model.file;
        let pool = &model.pool;
        let n = tokens.len();
        if n == 0 {
            return Err("empty batch".into());
        }
        if self.n_past + n > self.n_ctx {
            return Err(format!(
                "context full: {} cached + {n} new tokens > context size {}",
                self.n_past, self.n_ctx
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(format!(
                "token id {bad} out of range (vocabulary has {} entries)",
                c.n_vocab
            ));
        }
        let (d, qd, kvd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim);
        let vec = |wt: &Weight| -> &[f32] { bytemuck::cast_slice(wt.bytes(file)) };

        // MeKi rows are known from the token ids alone: start reading them now.
        if let Some(mem) = &model.meki {
            mem.prefetch(file, tokens);
        }

        // Embedding lookup: one row of token_embd per token.
        let mut x = vec![0f32; n * d];
        let emb = w.token_embd.bytes(file);
        let rb = w.token_embd.row_bytes();
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &emb[tok as usize * rb..(tok as usize + 1) * rb];
            ops::dequantize_row(w.token_embd.ty, row, &mut x[t * d..(t + 1) * d]);
        }

        let mut xn = vec![0f32; n * d];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut proj = vec![0f32; n * d];
        let mut gate = vec![0f32; n * c.n_ff];
        let mut up = vec![0f32; n * c.n_ff];
        let mut scores = vec![0f32; self.n_past + n];
        let mut key = vec![0f32; hd];
        let scale = 1.0 / (hd as f32).sqrt();
        let group = c.n_head / c.n_head_kv;
        let neox = c.rope_order == super::RopeOrder::Neox;
        let (mut meki_g, mut meki_y) = (Vec::new(), Vec::new());
        let mut meki_e = vec![0f32; model.meki.as_ref().map_or(0, |m| m.d_mem)];

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention block: x += Wo attn(norm(x)).
            for t in 0..n {
                ops::rms_norm(
                    &x[t * d..(t + 1) * d],
                    vec(&lw.attn_norm),
                    c.rms_eps,
                    &mut xn[t * d..(t + 1) * d],
                );
            }
            linear(pool, file, &lw.wq, &xn, n, &mut q);
            linear(pool, file, &lw.wk, &xn, n, &mut k);
            linear(pool, file, &lw.wv, &xn, n, &mut v);
            for (out, b, width) in [
                (&mut q, &lw.bq, qd),
                (&mut k, &lw.bk, kvd),
                (&mut v, &lw.bv, kvd),
            ] {
                if let Some(b) = b {
                    for row in out.chunks_exact_mut(width) {
                        for (o, bi) in row.iter_mut().zip(vec(b)) {
                            *o += bi;
                        }
                    }
                }
            }
            for t in 0..n {
                let pos = self.n_past + t;
                for head in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                    if let Some(qn) = &lw.q_norm {
                        ops::rms_norm_inplace(head, vec(qn), c.rms_eps);
                    }
                    ops::rope(head, pos, c.rope_base, c.rope_freq_scale, neox);
                }
                for head in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                    if let Some(kn) = &lw.k_norm {
                        ops::rms_norm_inplace(head, vec(kn), c.rms_eps);
                    }
                    ops::rope(head, pos, c.rope_base, c.rope_freq_scale, neox);
                }
                self.cache[l].store(
                    pos * kvd,
                    &k[t * kvd..(t + 1) * kvd],
                    &v[t * kvd..(t + 1) * kvd],
                );
            }
            let cache = &self.cache[l];
            for t in 0..n {
                let pos = self.n_past + t;
                for h in 0..c.n_head {
                    let g = h / group;
                    let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                    let s = &mut scores[..=pos];
                    let out = &mut att[t * qd + h * hd..t * qd + (h + 1) * hd];
                    match cache {
                        // f16 cache: the SIMD kernels read the cached rows in place.
                        KvStore::F16 { k, v } => {
                            let at = g * hd;
                            let row = kvd * 2;
                            let kb: &[u8] = bytemuck::cast_slice(&k[at..]);
                            kernels::vec::attn_scores(qh, kb, row, scale, s);
                            ops::softmax_inplace(s);
                            let vb: &[u8] = bytemuck::cast_slice(&v[at..]);
                            kernels::vec::attn_weighted_sum(s, vb, row, out);
                        }
                        KvStore::F32 { .. } => {
                            for (j, sj) in s.iter_mut().enumerate() {
                                cache.key(j * kvd + g * hd, &mut key);
                                *sj = ops::dot(qh, &key) * scale;
                            }
                            ops::softmax_inplace(s);
                            out.fill(0.0);
                            for (j, &p) in s.iter().enumerate() {
                                cache.value_axpy(j * kvd + g * hd, p, out);
                            }
                        }
                    }
                }
            }
            linear(pool, file, &lw.wo, &att, n, &mut proj);
            for (xi, pi) in x.iter_mut().zip(&proj) {
                *xi += pi;
            }

            // Feed-forward block: x += W_down (silu(W_gate h) * W_up h), h = norm(x).
            for t in 0..n {
                ops::rms_norm(
                    &x[t * d..(t + 1) * d],
                    vec(&lw.ffn_norm),
                    c.rms_eps,
                    &mut xn[t * d..(t + 1) * d],
                );
            }
            // MeKi branch, parallel to the FFN: y = RMSNorm_post(W_out (T_l[x_t] + sigmoid(W_gate u))),
            // with u = h (demo form) or the residual x (Megatron form). Added after the FFN.
            if let Some(mem) = &model.meki {
                let ml = &mem.layers[l];
                let u = match mem.gate_input {
                    GateInput::FfnNorm => &xn,
                    GateInput::Residual => &x,
                };
                let dm = mem.d_mem;
                let mfile = mem.file(file);
                meki_g.resize(n * dm, 0.0);
                meki_y.resize(n * d, 0.0);
                linear(pool, mfile, &ml.gate, u, n, &mut meki_g);
                for (t, &tok) in tokens.iter().enumerate() {
                    mem.gather(file, tok, l, &mut meki_e);
                    for (gi, ei) in meki_g[t * dm..(t + 1) * dm].iter_mut().zip(&meki_e) {
                        *gi = ops::sigmoid(*gi) + ei;
                    }
                }
                linear(pool, mfile, &ml.out, &meki_g, n, &mut meki_y);
                let post: &[f32] = bytemuck::cast_slice(ml.post_norm.bytes(mfile));
                for row in meki_y.chunks_exact_mut(d) {
                    ops::rms_norm_inplace(row, post, c.rms_eps);
                }
            }
            linear(pool, file, &lw.ffn_gate, &xn, n, &mut gate);
            linear(pool, file, &lw.ffn_up, &xn, n, &mut up);
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = ops::silu(*g) * u;
            }
            linear(pool, file, &lw.ffn_down, &gate, n, &mut proj);
            for (xi, pi) in x.iter_mut().zip(&proj) {
                *xi += pi;
            }
            if model.meki.is_some() {
                for (xi, yi) in x.iter_mut().zip(&meki_y) {
                    *xi += yi;
                }
            }
        }
        self.n_past += n;

        // Output head on the requested positions.
        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
        };
        let m = n - first;
        let mut hn = vec![0f32; m * d];
        for t in 0..m {
            let src = &x[(first + t) * d..(first + t + 1) * d];
            ops::rms_norm(
                src,
                vec(&w.output_norm),
                c.rms_eps,
                &mut hn[t * d..(t + 1) * d],
            );
        }
        let mut logits = vec![0f32; m * c.n_vocab];
        linear(pool, file, &w.output, &hn, m, &mut logits);
        Ok(logits)
    }
}
