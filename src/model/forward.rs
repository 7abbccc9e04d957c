//! The forward pass of a llama/qwen decoder over a batch of tokens, with a
//! KV cache. One `Session` is one conversation: its cache grows as tokens
//! are fed, and `rewind` drops cached positions.

use super::ops::{self, linear, linear_once, SharedActs};
use super::weights::Weight;
use super::Model;
use crate::kernels::vec::{RopeMode, RopeTable};
use crate::kernels::{self, ThreadPool};
use crate::meki::GateInput;
use half::f16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Buffers of the forward pass, kept between calls so that a decode step
/// allocates nothing once they have reached their size.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    ffh: Vec<f32>,
    meki_g: Vec<f32>,
    meki_y: Vec<f32>,
    meki_e: Vec<f32>,
    /// One rotation table per token of the batch (shared by all layers).
    rope: Vec<RopeTable>,
    angles: Vec<(f32, f32)>,
    /// Activations quantized once for several matrices of the same input.
    acts: SharedActs,
    /// Per-thread attention rows (scores, a head copy).
    attn: Vec<Mutex<AttnScratch>>,
}

#[derive(Default)]
struct AttnScratch {
    scores: Vec<f32>,
    key: Vec<f32>,
}

fn resize(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// A conversation's state: KV cache and position.
pub struct Session<'m> {
    model: &'m Model,
    n_ctx: usize,
    n_past: usize,
    cache: Vec<KvStore>,
    scratch: Scratch,
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
            scratch: Scratch::default(),
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

        let s = &mut self.scratch;
        let x = resize(&mut s.x, n * d);
        let xn = resize(&mut s.xn, n * d);
        let q = resize(&mut s.q, n * qd);
        let k = resize(&mut s.k, n * kvd);
        let v = resize(&mut s.v, n * kvd);
        let att = resize(&mut s.att, n * qd);
        let proj = resize(&mut s.proj, n * d);
        let gate = resize(&mut s.gate, n * c.n_ff);
        let up = resize(&mut s.up, n * c.n_ff);
        let ffh = resize(&mut s.ffh, n * c.n_ff);
        let acts = &mut s.acts;

        // Embedding lookup: one row of token_embd per token.
        let emb = w.token_embd.bytes(file);
        let rb = w.token_embd.row_bytes();
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &emb[tok as usize * rb..(tok as usize + 1) * rb];
            ops::dequantize_row(w.token_embd.ty, row, &mut x[t * d..(t + 1) * d]);
        }

        // Rotation tables of the batch's positions, once for all layers.
        let mode = match c.rope_order {
            super::RopeOrder::Neox => RopeMode::Neox,
            super::RopeOrder::Normal => RopeMode::Normal,
        };
        s.rope.resize_with(n, RopeTable::default);
        for (t, table) in s.rope.iter_mut().enumerate() {
            ops::rope_angles(
                self.n_past + t,
                c.n_rot,
                c.rope_base,
                c.rope_freq_scale,
                &mut s.angles,
            );
            table.set(&s.angles, mode);
        }
        let rope = &s.rope[..n];
        s.attn.resize_with(pool.n_threads(), Default::default);
        let attn_scratch = &s.attn[..];
        let (meki_g, meki_y, meki_e) = (&mut s.meki_g, &mut s.meki_y, &mut s.meki_e);

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention block: x += Wo attn(norm(x)).
            let attn_norm = vec(&lw.attn_norm);
            for (xr, nr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
                kernels::vec::rms_norm(xr, attn_norm, c.rms_eps, nr);
            }
            acts.reset();
            linear(pool, file, &lw.wq, xn, n, acts, q);
            linear(pool, file, &lw.wk, xn, n, acts, k);
            linear(pool, file, &lw.wv, xn, n, acts, v);
            for (out, b, width) in [
                (&mut *q, &lw.bq, qd),
                (&mut *k, &lw.bk, kvd),
                (&mut *v, &lw.bv, kvd),
            ] {
                if let Some(b) = b {
                    for row in out.chunks_exact_mut(width) {
                        kernels::vec::add(row, vec(b));
                    }
                }
            }
            for t in 0..n {
                let pos = self.n_past + t;
                let qt = &mut q[t * qd..(t + 1) * qd];
                let kt = &mut k[t * kvd..(t + 1) * kvd];
                if let Some(qn) = &lw.q_norm {
                    ops::rms_norm_heads(qt, hd, vec(qn), c.rms_eps);
                }
                if let Some(kn) = &lw.k_norm {
                    ops::rms_norm_heads(kt, hd, vec(kn), c.rms_eps);
                }
                kernels::vec::rope_table(qt, hd, &rope[t]);
                kernels::vec::rope_table(kt, hd, &rope[t]);
                self.cache[l].store(pos * kvd, kt, &v[t * kvd..(t + 1) * kvd]);
            }
            attention(
                pool,
                c,
                &self.cache[l],
                self.n_past,
                n,
                q,
                att,
                attn_scratch,
            );
            acts.reset();
            linear(pool, file, &lw.wo, att, n, acts, proj);
            kernels::vec::add(x, proj);

            // Feed-forward block: x += W_down (silu(W_gate h) * W_up h), h = norm(x).
            let ffn_norm = vec(&lw.ffn_norm);
            for (xr, nr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
                kernels::vec::rms_norm(xr, ffn_norm, c.rms_eps, nr);
            }
            acts.reset();
            // MeKi branch, parallel to the FFN: y = RMSNorm_post(W_out (T_l[x_t] + sigmoid(W_gate u))),
            // with u = h (demo form) or the residual x (Megatron form). Added after the FFN.
            if let Some(mem) = &model.meki {
                let ml = &mem.layers[l];
                let dm = mem.d_mem;
                let mfile = mem.file(file);
                let g = resize(meki_g, n * dm);
                let y = resize(meki_y, n * d);
                let e = resize(meki_e, dm);
                match mem.gate_input {
                    GateInput::FfnNorm => linear(pool, mfile, &ml.gate, xn, n, acts, g),
                    GateInput::Residual => linear_once(pool, mfile, &ml.gate, x, n, g),
                }
                kernels::vec::sigmoid(g);
                for (t, &tok) in tokens.iter().enumerate() {
                    mem.gather(file, tok, l, e);
                    kernels::vec::add(&mut g[t * dm..(t + 1) * dm], e);
                }
                linear_once(pool, mfile, &ml.out, g, n, y);
                let post: &[f32] = bytemuck::cast_slice(ml.post_norm.bytes(mfile));
                for row in y.chunks_exact_mut(d) {
                    ops::rms_norm_inplace(row, post, c.rms_eps);
                }
            }
            linear(pool, file, &lw.ffn_gate, xn, n, acts, gate);
            linear(pool, file, &lw.ffn_up, xn, n, acts, up);
            kernels::vec::silu_mul(gate, up, ffh);
            linear_once(pool, file, &lw.ffn_down, ffh, n, proj);
            kernels::vec::add(x, proj);
            if model.meki.is_some() {
                kernels::vec::add(x, &meki_y[..n * d]);
            }
        }
        self.n_past += n;

        // Output head on the requested positions.
        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
        };
        let m = n - first;
        let hn = &mut xn[..m * d];
        let out_norm = vec(&w.output_norm);
        for (src, dst) in x[first * d..].chunks_exact(d).zip(hn.chunks_exact_mut(d)) {
            kernels::vec::rms_norm(src, out_norm, c.rms_eps, dst);
        }
        let mut logits = vec![0f32; m * c.n_vocab];
        linear_once(pool, file, &w.output, hn, m, &mut logits);
        Ok(logits)
    }
}

/// Causal attention of the batch's `n` query rows (positions `n_past..`)
/// over the cache, split over the pool's threads by (token, KV head): each
/// unit computes the `group` query heads that share one KV head, so its
/// cached rows are read once and stay in cache for the group.
#[allow(clippy::too_many_arguments)]
fn attention(
    pool: &ThreadPool,
    c: &super::Config,
    cache: &KvStore,
    n_past: usize,
    n: usize,
    q: &[f32],
    att: &mut [f32],
    scratch: &[Mutex<AttnScratch>],
) {
    let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
    let group = c.n_head / c.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    // One output slice per unit; each is locked by the one thread that claims it.
    let units: Vec<Mutex<&mut [f32]>> = att.chunks_exact_mut(group * hd).map(Mutex::new).collect();
    let n_units = units.len();
    debug_assert_eq!(n_units, n * c.n_head_kv);
    let next = AtomicUsize::new(0);
    pool.run(&|tid, _| {
        let mut mine = scratch[tid].lock().unwrap_or_else(|e| e.into_inner());
        let AttnScratch { scores, key } = &mut *mine;
        loop {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= n_units {
                break;
            }
            let (t, g) = (u / c.n_head_kv, u % c.n_head_kv);
            let len = n_past + t + 1;
            scores.resize(len.max(scores.len()), 0.0);
            key.resize(hd, 0.0);
            let s = &mut scores[..len];
            let mut out = units[u].lock().unwrap_or_else(|e| e.into_inner());
            for (j, oh) in out.chunks_exact_mut(hd).enumerate() {
                let h = g * group + j;
                let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                match cache {
                    // f16 cache: the SIMD kernels read the cached rows in place.
                    KvStore::F16 { k, v } => {
                        let at = g * hd;
                        let row = kvd * 2;
                        let kb: &[u8] = bytemuck::cast_slice(&k[at..]);
                        kernels::vec::attn_scores(qh, kb, row, scale, s);
                        kernels::vec::softmax(s);
                        let vb: &[u8] = bytemuck::cast_slice(&v[at..]);
                        kernels::vec::attn_weighted_sum(s, vb, row, oh);
                    }
                    KvStore::F32 { .. } => {
                        for (jj, sj) in s.iter_mut().enumerate() {
                            cache.key(jj * kvd + g * hd, key);
                            *sj = ops::dot(qh, key) * scale;
                        }
                        kernels::vec::softmax(s);
                        oh.fill(0.0);
                        for (jj, &p) in s.iter().enumerate() {
                            cache.value_axpy(jj * kvd + g * hd, p, oh);
                        }
                    }
                }
            }
        }
    });
}
