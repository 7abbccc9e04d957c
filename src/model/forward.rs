//! The forward pass of a llama/qwen decoder over a batch of tokens, with a
//! KV cache. One `Session` is one conversation: its cache grows as tokens
//! are fed, and `rewind` drops cached positions.

use super::attention::{attention, kv_bytes_read, AttnScratch, KvStore, KvType};
use super::group::{matvec_group, Product};
use super::ops::{self, linear, PreparedInput};
use super::profile::{Lap, Stage, StageProfile};
use super::weights::Weight;
use super::Model;
use crate::kernels;
use crate::kernels::vec::{RopeMode, RopeTable};
use crate::meki::{GateInput, MekiMemory};
use std::sync::Mutex;

/// Buffers of the forward pass, kept between calls so that a decode step
/// allocates nothing once they have reached their size. Activations hold one
/// row per token of the batch, of the width in brackets.
#[derive(Default)]
struct Scratch {
    /// The residual stream [d].
    x: Vec<f32>,
    /// `x` normalized, the input of a block's products [d].
    xn: Vec<f32>,
    /// Query, key and value [q_dim, kv_dim, kv_dim].
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, the input of Wo [q_dim].
    att: Vec<f32>,
    /// A block's output before it is added to `x` [d].
    proj: Vec<f32>,
    /// FFN: W_gate h, W_up h, and silu(gate) * up, the input of W_down [n_ff].
    gate: Vec<f32>,
    up: Vec<f32>,
    ffh: Vec<f32>,
    /// MeKi (names of MEKI.md): W_gate u, then g = sigmoid(W_gate u), then
    /// v = e + g, the input of W_out [d_mem].
    meki_g: Vec<f32>,
    /// MeKi W_out v [d].
    meki_y: Vec<f32>,
    /// MeKi e = T_l[x_t], one table row (one token at a time) [d_mem].
    meki_e: Vec<f32>,
    /// One rotation table per token of the batch (shared by all layers).
    rope: Vec<RopeTable>,
    angles: Vec<(f32, f32)>,
    /// The current products' inputs, quantized once for all the matrices
    /// that read them: [0] the block's input (`xn`, `att`, `ffh`), [1] the
    /// MeKi branch's own (the residual `x` for a Megatron gate, `v` for W_out).
    prepared: [PreparedInput; 2],
    /// Per-thread attention rows (scores, a head copy).
    attn: Vec<Mutex<AttnScratch>>,
}

/// Which input of the FFN block, `[h, x]`, the MeKi gate reads.
fn gate_input_index(mem: &MekiMemory) -> usize {
    match mem.gate_input {
        GateInput::FfnNorm => 0,
        GateInput::Residual => 1,
    }
}

/// Tokens per unit of the per-token element-wise work spread over the pool:
/// two units per thread (one unit, run inline, for a single token).
fn tokens_per_chunk(n: usize, threads: usize) -> usize {
    n.div_ceil(2 * threads.max(1)).max(1)
}

impl Scratch {
    /// Sets every buffer to its length for a call of `n` tokens (`d_mem`:
    /// the MeKi memory's width, 0 without one). Growing writes the new
    /// elements (a buffer's first growth takes its page faults).
    fn size_for(&mut self, c: &super::Config, d_mem: usize, n: usize) {
        let (d, qd, kvd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let meki_d = if d_mem > 0 { d } else { 0 };
        for (v, len) in [
            (&mut self.x, n * d),
            (&mut self.xn, n * d),
            (&mut self.q, n * qd),
            (&mut self.k, n * kvd),
            (&mut self.v, n * kvd),
            (&mut self.att, n * qd),
            (&mut self.proj, n * d),
            (&mut self.gate, n * ff),
            (&mut self.up, n * ff),
            (&mut self.ffh, n * ff),
            (&mut self.meki_g, n * d_mem),
            (&mut self.meki_y, n * meki_d),
            (&mut self.meki_e, d_mem),
        ] {
            v.resize(len, 0.0);
        }
    }
}

/// A conversation's state: KV cache and position.
pub struct Session<'m> {
    model: &'m Model,
    n_ctx: usize,
    n_past: usize,
    cache: Vec<KvStore>,
    scratch: Scratch,
    /// Time per stage (`set_profiling`), kept apart for one-token calls
    /// (decode) and larger batches: [decode, batch].
    profile: Option<Box<[StageProfile; 2]>>,
    profiling: bool,
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
            .map(|_| KvStore::new(kv, n_ctx, c.n_head_kv, c.head_dim))
            .collect();
        Session {
            model,
            n_ctx,
            n_past: 0,
            cache,
            scratch: Scratch::default(),
            profile: None,
            profiling: false,
        }
    }

    /// Prepares for forward calls of up to `n` tokens that store
    /// `positions` positions from the current one: sizes and writes the
    /// work buffers and writes those KV cache positions, so that the calls
    /// do not spend their time on first page faults (the buffers: ~20 ms of
    /// a 570-token prompt of the 0.6B shape; the cache pages 1.5-2% more of
    /// a prefill, ~0.4% of a decode step). llama.cpp's context likewise
    /// reserves its buffers when it is created. Longer calls and further
    /// positions still work: they fault as they go.
    pub fn reserve(&mut self, n: usize, positions: usize) {
        for cache in &mut self.cache {
            cache.touch(self.n_past, self.n_past.saturating_add(positions));
        }
        let d_mem = self.model.meki.as_ref().map_or(0, |m| m.d_mem);
        self.scratch.size_for(&self.model.config, d_mem, n);
    }

    /// Time the stages of the forward calls from now on (`true`) or stop
    /// (`false`; what was timed so far is kept).
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        if on && self.profile.is_none() {
            self.profile = Some(Box::default());
        }
    }

    /// The time per stage of the profiled one-token calls (decode steps),
    /// if profiling was ever switched on.
    pub fn decode_profile(&self) -> Option<&StageProfile> {
        self.profile.as_deref().map(|p| &p[0])
    }

    /// The same for calls of more than one token (prompt batches).
    pub fn batch_profile(&self) -> Option<&StageProfile> {
        self.profile.as_deref().map(|p| &p[1])
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
        let mut logits = Vec::new();
        self.forward_into(tokens, want, &mut logits)?;
        Ok(logits)
    }

    /// [`Session::forward`] into `logits` (resized to `n_vocab` per
    /// requested position; every value overwritten). A decode loop reuses
    /// one buffer: a fresh 600 KB vector per token (152K logits) cost a
    /// zero fill and a free, ~0.8% of a 0.6B step.
    pub fn forward_into(
        &mut self,
        tokens: &[u32],
        want: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<(), String> {
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
        let profile = match (self.profiling, self.profile.as_deref_mut()) {
            (true, Some(p)) => Some(&mut p[usize::from(n > 1)]),
            _ => None,
        };
        let mut lap = Lap::start(profile, n);
        // Widths: model, all query heads, all key (or value) heads, one head.
        let (d, qd, kvd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim);
        // Norm weights and biases are f32 vectors in the map.
        let f32s = |wt: &'m Weight| -> &'m [f32] { wt.f32s(file) };

        // MeKi rows are known from the token ids alone: start reading them now.
        if let Some(mem) = &model.meki {
            mem.prefetch(file, tokens);
        }

        let s = &mut self.scratch;
        s.size_for(c, model.meki.as_ref().map_or(0, |m| m.d_mem), n);
        let (x, xn, q, k, v) = (
            &mut s.x[..],
            &mut s.xn[..],
            &mut s.q[..],
            &mut s.k[..],
            &mut s.v[..],
        );
        let (att, proj) = (&mut s.att[..], &mut s.proj[..]);
        let (gate, up, ffh) = (&mut s.gate[..], &mut s.up[..], &mut s.ffh[..]);
        let prepared = &mut s.prepared;

        // Embedding lookup: one row of token_embd per token.
        let embd = w.token_embd.bytes(file);
        let row_bytes = w.token_embd.row_bytes();
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &embd[tok as usize * row_bytes..(tok as usize + 1) * row_bytes];
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
        lap.mark(Stage::Embed);
        lap.read(Stage::Embed, || n * row_bytes);

        for (l, lw) in w.layers.iter().enumerate() {
            // A decode step's table row of this layer: into the CPU caches
            // now, read after the attention and the FFN products.
            if let (1, Some(mem)) = (n, &model.meki) {
                mem.prefetch_row(file, tokens[0], l);
            }
            // Attention block: x += Wo attn(norm(x)).
            let attn_norm = f32s(&lw.attn_norm);
            for (xr, nr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
                kernels::vec::rms_norm(xr, attn_norm, c.rms_eps, nr);
            }
            lap.mark(Stage::AttnNorm);
            // Q, K and V read xn: quantized once for the three. Decode runs
            // them as one dispatch (plain and repacked matrices alike).
            prepared[0].reset();
            if n == 1 {
                let (wq, wk, wv) = (&lw.wq, &lw.wk, &lw.wv);
                matvec_group(
                    pool,
                    &[xn],
                    &mut prepared[..1],
                    [
                        Product {
                            file,
                            w: wq,
                            input: 0,
                            y: &mut *q,
                        },
                        Product {
                            file,
                            w: wk,
                            input: 0,
                            y: &mut *k,
                        },
                        Product {
                            file,
                            w: wv,
                            input: 0,
                            y: &mut *v,
                        },
                    ],
                );
            } else {
                linear(pool, file, &lw.wq, xn, n, &mut prepared[0], q);
                linear(pool, file, &lw.wk, xn, n, &mut prepared[0], k);
                linear(pool, file, &lw.wv, xn, n, &mut prepared[0], v);
            }
            lap.mark(Stage::Qkv);
            lap.read(Stage::Qkv, || {
                [&lw.wq, &lw.wk, &lw.wv]
                    .iter()
                    .map(|w| w.product_bytes())
                    .sum()
            });
            if n == 1 {
                // The cache lines the token's keys and values go to (cold:
                // the weights streamed through the caches since the last
                // token), loaded while its norms and rotations run.
                self.cache[l].prefetch_position(self.n_past);
            }
            // Q/K/V biases (Qwen2).
            for (out, b, width) in [
                (&mut *q, &lw.bq, qd),
                (&mut *k, &lw.bk, kvd),
                (&mut *v, &lw.bv, kvd),
            ] {
                if let Some(b) = b {
                    for row in out.chunks_exact_mut(width) {
                        kernels::vec::add(row, f32s(b));
                    }
                }
            }
            // Per token: Qwen3's per-head q/k norm, rotation, then K and V
            // into the cache at the token's position.
            for t in 0..n {
                let pos = self.n_past + t;
                let qt = &mut q[t * qd..(t + 1) * qd];
                let kt = &mut k[t * kvd..(t + 1) * kvd];
                if let Some(qn) = &lw.q_norm {
                    ops::rms_norm_heads(qt, hd, f32s(qn), c.rms_eps);
                }
                if let Some(kn) = &lw.k_norm {
                    ops::rms_norm_heads(kt, hd, f32s(kn), c.rms_eps);
                }
                kernels::vec::rope_table(qt, hd, &rope[t]);
                kernels::vec::rope_table(kt, hd, &rope[t]);
                self.cache[l].store(pos, kt, &v[t * kvd..(t + 1) * kvd]);
            }
            lap.mark(Stage::QkvPost);
            // att = softmax(q K^T / sqrt(hd)) V over the cached positions
            // (causal within the batch).
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
            lap.mark(Stage::Attention);
            lap.read(Stage::Attention, || {
                kv_bytes_read(c, &self.cache[l], self.n_past, n)
            });
            prepared[0].reset();
            linear(pool, file, &lw.wo, att, n, &mut prepared[0], proj);
            kernels::vec::add(x, proj);
            lap.mark(Stage::Wo);
            lap.read(Stage::Wo, || lw.wo.product_bytes());

            // Feed-forward block: x += W_down (silu(W_gate h) * W_up h), h = norm(x).
            let ffn_norm = f32s(&lw.ffn_norm);
            for (xr, nr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)) {
                kernels::vec::rms_norm(xr, ffn_norm, c.rms_eps, nr);
            }
            lap.mark(Stage::FfnNorm);
            // MeKi branch, parallel to the FFN (MEKI.md): e = T_l[x_t] (a table
            // row), g = sigmoid(W_gate u) with u = h (demo form) or the
            // residual x (Megatron form), y = RMSNorm_post(W_out (e + g)).
            // Added to x after the FFN.
            let meki = model
                .meki
                .as_ref()
                .map(|mem| (mem, &mem.layers[l], mem.file(file)));
            let d_mem = meki.map_or(0, |(mem, _, _)| mem.d_mem);
            let (meki_g, meki_y, meki_e) = (&mut meki_g[..], &mut meki_y[..], &mut meki_e[..]);

            // 1. The products that read the block's input: W_gate h, W_up h
            //    and MeKi W_gate u. inputs[i] is prepared in prepared[i].
            let inputs: [&[f32]; 2] = [xn, x];
            prepared[0].reset();
            prepared[1].reset();
            if n == 1 {
                let (wg, wu) = (&lw.ffn_gate, &lw.ffn_up);
                let ffn_gate = Product {
                    file,
                    w: wg,
                    input: 0,
                    y: &mut *gate,
                };
                let ffn_up = Product {
                    file,
                    w: wu,
                    input: 0,
                    y: &mut *up,
                };
                match meki {
                    Some((mem, ml, mfile)) => {
                        let meki_gate = Product {
                            file: mfile,
                            w: &ml.gate,
                            input: gate_input_index(mem),
                            y: &mut *meki_g,
                        };
                        matvec_group(pool, &inputs, prepared, [ffn_gate, ffn_up, meki_gate]);
                    }
                    None => matvec_group(pool, &inputs, prepared, [ffn_gate, ffn_up]),
                }
            } else {
                linear(pool, file, &lw.ffn_gate, xn, n, &mut prepared[0], gate);
                linear(pool, file, &lw.ffn_up, xn, n, &mut prepared[0], up);
                if let Some((mem, ml, mfile)) = meki {
                    let i = gate_input_index(mem);
                    linear(
                        pool,
                        mfile,
                        &ml.gate,
                        inputs[i],
                        n,
                        &mut prepared[i],
                        meki_g,
                    );
                }
            }

            lap.mark(Stage::FfnIn);
            lap.read(Stage::FfnIn, || {
                let meki_in = meki.map_or(0, |(_, ml, _)| ml.gate.product_bytes());
                lw.ffn_gate.product_bytes() + lw.ffn_up.product_bytes() + meki_in
            });

            // 2. Element-wise: SwiGLU; MeKi v = e + g, in place of W_gate u.
            kernels::vec::silu_mul(gate, up, ffh);
            lap.mark(Stage::Silu);
            if let Some((mem, _, _)) = meki {
                if n == 1 {
                    kernels::vec::sigmoid(meki_g);
                    mem.gather(file, tokens[0], l, meki_e);
                    kernels::vec::add(meki_g, meki_e);
                } else {
                    // Prefill: the same per token, spread over the pool (the
                    // twin has no such serial work to hide it behind).
                    // Each token's row is in another page of the table: ask
                    // for the row a few tokens ahead while this one runs.
                    const AHEAD: usize = 4;
                    let per = tokens_per_chunk(n, pool.n_threads());
                    pool.run_chunks_mut(meki_g, per * d_mem, &|ci, rows| {
                        let mut e = vec![0f32; d_mem];
                        let t0 = ci * per;
                        let t1 = t0 + rows.len() / d_mem;
                        for &tok in &tokens[t0..t1.min(t0 + AHEAD)] {
                            mem.prefetch_row(file, tok, l);
                        }
                        for (j, v) in rows.chunks_exact_mut(d_mem).enumerate() {
                            if let Some(&tok) = tokens[..t1].get(t0 + j + AHEAD) {
                                mem.prefetch_row(file, tok, l);
                            }
                            kernels::vec::sigmoid(v);
                            mem.gather(file, tokens[t0 + j], l, &mut e);
                            kernels::vec::add(v, &e);
                        }
                    });
                }
            }
            let meki_v = &*meki_g;
            lap.mark(Stage::MekiMix);

            // 3. The output products: W_down, MeKi W_out.
            prepared[0].reset();
            prepared[1].reset();
            if n == 1 {
                let down = Product {
                    file,
                    w: &lw.ffn_down,
                    input: 0,
                    y: &mut *proj,
                };
                let inputs: [&[f32]; 2] = [ffh, meki_v];
                match meki {
                    Some((_, ml, mfile)) => {
                        let out = Product {
                            file: mfile,
                            w: &ml.out,
                            input: 1,
                            y: &mut *meki_y,
                        };
                        matvec_group(pool, &inputs, prepared, [down, out]);
                    }
                    None => matvec_group(pool, &inputs, prepared, [down]),
                }
            } else {
                linear(pool, file, &lw.ffn_down, ffh, n, &mut prepared[0], proj);
                if let Some((_, ml, mfile)) = meki {
                    linear(pool, mfile, &ml.out, meki_v, n, &mut prepared[1], meki_y);
                }
            }
            lap.mark(Stage::FfnOut);
            lap.read(Stage::FfnOut, || {
                let meki_out = meki.map_or(0, |(_, ml, _)| ml.out.product_bytes());
                lw.ffn_down.product_bytes() + meki_out
            });

            // 4. x += FFN + RMSNorm_post(MeKi).
            match meki {
                None => kernels::vec::add(x, proj),
                Some((_, ml, mfile)) if n == 1 => {
                    let post = ml.post_norm.f32s(mfile);
                    kernels::vec::add(x, proj);
                    kernels::vec::rms_norm(meki_y, post, c.rms_eps, proj);
                    kernels::vec::add(x, proj);
                }
                Some((_, ml, mfile)) => {
                    // Prefill: the same per token, in one pass over the
                    // pool (the twin's one serial add has no MeKi part).
                    let post = ml.post_norm.f32s(mfile);
                    let per = tokens_per_chunk(n, pool.n_threads());
                    let (proj, meki_y) = (&*proj, &*meki_y);
                    pool.run_chunks_mut(x, per * d, &|ci, rows| {
                        let mut normed = vec![0f32; d];
                        for (j, xr) in rows.chunks_exact_mut(d).enumerate() {
                            let t = ci * per + j;
                            kernels::vec::add(xr, &proj[t * d..(t + 1) * d]);
                            let y = &meki_y[t * d..(t + 1) * d];
                            kernels::vec::rms_norm(y, post, c.rms_eps, &mut normed);
                            kernels::vec::add(xr, &normed);
                        }
                    });
                }
            }
            lap.mark(Stage::Residual);
        }
        self.n_past += n;

        // Output head on the requested positions.
        let first = match want {
            Logits::Last => n - 1,
            Logits::All => 0,
        };
        let m = n - first;
        let hn = &mut xn[..m * d];
        let out_norm = f32s(&w.output_norm);
        for (src, dst) in x[first * d..].chunks_exact(d).zip(hn.chunks_exact_mut(d)) {
            kernels::vec::rms_norm(src, out_norm, c.rms_eps, dst);
        }
        if logits.len() != m * c.n_vocab {
            logits.clear();
            logits.resize(m * c.n_vocab, 0.0);
        }
        prepared[0].reset();
        linear(pool, file, &w.output, hn, m, &mut prepared[0], logits);
        lap.mark(Stage::Head);
        lap.read(Stage::Head, || w.output.product_bytes());
        Ok(())
    }
}
