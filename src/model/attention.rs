//! Causal self-attention over the KV cache: the cache's storage (f16 or
//! f32 rows, position-major) and the attention of a batch of query rows.

use crate::kernels::{self, ThreadPool};
use half::f16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

/// One layer's cached keys and values, head-major: KV head `g`'s rows
/// (`head_dim` values per position) are one contiguous run of `cap`
/// positions, so a block of positions of one head is one sequential read.
/// (Position-major rows put a head's 256 bytes every `kv_dim` values: at
/// depth the decode attention waited on those strided loads.)
pub(super) struct KvStore {
    /// Positions held per head.
    cap: usize,
    n_kv: usize,
    head_dim: usize,
    data: KvData,
}

/// The cached keys and values, in the cache's element type.
enum KvData {
    F16 { k: Vec<f16>, v: Vec<f16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

impl KvStore {
    /// A cache of `cap` positions of `n_kv` heads of `head_dim` values.
    pub(super) fn new(ty: KvType, cap: usize, n_kv: usize, head_dim: usize) -> KvStore {
        let n = cap * n_kv * head_dim;
        // Zeroed allocations (`alloc_zeroed`: fresh pages from the OS, not
        // written here): a page becomes resident when a position on it is
        // first written, so the resident cache grows with the context used,
        // not the context size. `vec![f16::ZERO; n]` wrote every element
        // (f16 is not one of the types `vec!` knows to be zero): the
        // default 4096-token cache of the 0.6B shape took 437 MiB of
        // resident memory and 0.3-0.5 s before the first token.
        // `Session::reserve` writes the positions a prompt will use before
        // it runs ([`KvStore::touch`]): a page first touched while the
        // prompt is stored costs a fault inside the forward pass (1.5-2% of
        // a 570-token prefill of the 0.6B shape).
        let data = match ty {
            KvType::F16 => KvData::F16 {
                k: bytemuck::zeroed_vec(n),
                v: bytemuck::zeroed_vec(n),
            },
            KvType::F32 => KvData::F32 {
                k: bytemuck::zeroed_vec(n),
                v: bytemuck::zeroed_vec(n),
            },
        };
        KvStore {
            cap,
            n_kv,
            head_dim,
            data,
        }
    }

    /// Writes zeros over positions `from..to` (clamped to the capacity) of
    /// every head: makes their pages resident now. Only for positions not
    /// yet stored (the zeros replace nothing a reader needs).
    pub(super) fn touch(&mut self, from: usize, to: usize) {
        let to = to.min(self.cap);
        if from >= to {
            return;
        }
        for g in 0..self.n_kv {
            // All-zero bytes are 0.0 in f16 and f32 alike.
            for run in self.head_runs_mut(g, from, to - from) {
                run.fill(0);
            }
        }
    }

    /// Head `g`'s keys and values at positions `j0..j0 + n`, as bytes.
    fn head_runs(&self, g: usize, j0: usize, n: usize) -> [&[u8]; 2] {
        let span = self.span(g, j0, n);
        match &self.data {
            KvData::F16 { k, v } => [
                bytemuck::cast_slice(&k[span.clone()]),
                bytemuck::cast_slice(&v[span]),
            ],
            KvData::F32 { k, v } => [
                bytemuck::cast_slice(&k[span.clone()]),
                bytemuck::cast_slice(&v[span]),
            ],
        }
    }

    /// [`KvStore::head_runs`], writable.
    fn head_runs_mut(&mut self, g: usize, j0: usize, n: usize) -> [&mut [u8]; 2] {
        let span = self.span(g, j0, n);
        match &mut self.data {
            KvData::F16 { k, v } => [
                bytemuck::cast_slice_mut(&mut k[span.clone()]),
                bytemuck::cast_slice_mut(&mut v[span]),
            ],
            KvData::F32 { k, v } => [
                bytemuck::cast_slice_mut(&mut k[span.clone()]),
                bytemuck::cast_slice_mut(&mut v[span]),
            ],
        }
    }

    /// Bytes of keys and values one position holds (all heads).
    pub(super) fn bytes_per_position(&self) -> usize {
        let elem = match &self.data {
            KvData::F16 { .. } => 2,
            KvData::F32 { .. } => 4,
        };
        2 * self.n_kv * self.head_dim * elem
    }

    /// Index of value `i` of head `g` at position `pos`.
    fn index(&self, pos: usize, g: usize, i: usize) -> usize {
        (g * self.cap + pos) * self.head_dim + i
    }

    /// The elements of head `g`'s positions `j0..j0 + n`.
    fn span(&self, g: usize, j0: usize, n: usize) -> std::ops::Range<usize> {
        let at = self.index(j0, g, 0);
        at..at + n * self.head_dim
    }

    /// Hints the CPU to load the cache lines of position `pos` of every
    /// head's keys and values, which [`KvStore::store`] writes next.
    pub(super) fn prefetch_position(&self, pos: usize) {
        if pos >= self.cap {
            return;
        }
        for g in 0..self.n_kv {
            for run in self.head_runs(g, pos, 1) {
                kernels::vec::prefetch_rows(run, run.len(), 1, run.len());
            }
        }
    }

    /// Stores position `pos`'s keys and values (all heads, `kv_dim` each).
    pub(super) fn store(&mut self, pos: usize, k_row: &[f32], v_row: &[f32]) {
        let hd = self.head_dim;
        debug_assert!(pos < self.cap && k_row.len() == self.n_kv * hd);
        for g in 0..self.n_kv {
            let dst = self.span(g, pos, 1);
            let (ks, vs) = (&k_row[g * hd..(g + 1) * hd], &v_row[g * hd..(g + 1) * hd]);
            match &mut self.data {
                // F16C / fp16 conversion where the CPU has it, rounding to
                // nearest even as f16::from_f32.
                KvData::F16 { k, v } => {
                    kernels::vec::f32_to_f16(ks, &mut k[dst.clone()]);
                    kernels::vec::f32_to_f16(vs, &mut v[dst]);
                }
                KvData::F32 { k, v } => {
                    k[dst.clone()].copy_from_slice(ks);
                    v[dst].copy_from_slice(vs);
                }
            }
        }
    }
}

/// Query positions per tile: the tile's query rows (tokens x the query heads
/// of one KV head) share every K/V block loaded.
const TILE_ROWS: usize = 16;
/// Cached positions per block of a tile of several tokens: the block's keys
/// (256 rows of head_dim, 64 KiB in f16), then its values, stay in L2 while
/// all rows of the tile use them.
const BLOCK: usize = 256;
/// Cached positions per block of a single token (decode): its few rows read
/// each key and value once, straight from memory, so longer blocks: fewer
/// switches between the key and value streams and less softmax bookkeeping
/// (depth 4096, 1 EPYC core: 1.15 ms per 0.6B-shape layer, 1.22 with 256).
const DECODE_BLOCK: usize = 512;

/// Largest element (8 lanes side by side, so that it vectorizes).
fn max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &b) in m.iter_mut().zip(c) {
            *a = if b > *a { b } else { *a };
        }
    }
    let r = chunks.remainder().iter();
    m.iter().chain(r).fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Tokens per query tile of a batch of `n` ([`TILE_ROWS`] query rows: the
/// tokens times the query heads of one KV head).
fn tile_tokens(c: &super::Config, n: usize) -> usize {
    (TILE_ROWS / (c.n_head / c.n_head_kv).max(1)).clamp(1, n.max(1))
}

/// Bytes of cached keys and values [`attention`] reads for `n` query tokens
/// at positions `n_past..`: each tile of tokens reads the positions its last
/// token sees once (for the profile's rates).
pub(super) fn kv_bytes_read(c: &super::Config, cache: &KvStore, n_past: usize, n: usize) -> usize {
    let tile = tile_tokens(c, n);
    let positions: usize = (0..n)
        .step_by(tile)
        .map(|t0| n_past + (t0 + tile).min(n))
        .sum();
    positions * cache.bytes_per_position()
}

/// Per-thread buffers of [`attention`], kept between calls.
#[derive(Default)]
pub(super) struct AttnScratch {
    /// The tile's query rows, pre-scaled by 1/sqrt(head_dim).
    q: Vec<f32>,
    /// Scores, then probabilities, of a block (rows x block).
    s: Vec<f32>,
    /// Running max and sum of each row's softmax.
    m: Vec<f32>,
    l: Vec<f32>,
    /// Outputs of the units this thread computed (one unit after the
    /// other, rows of `unit_len`), copied into `att` after the parallel run.
    out: Vec<f32>,
    done: Vec<usize>,
}

/// Causal attention of the batch's `n` query rows (positions `n_past..`)
/// over the cache, flash-attention style: the queries are cut into tiles of
/// a few consecutive tokens, and each (tile, KV head) unit runs an online
/// softmax over the cached positions block by block, so every K/V block is
/// read once for all the tile's query rows (the `group` query heads of the
/// KV head at each of its tokens). Units are spread over the pool's threads.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    pool: &ThreadPool,
    c: &super::Config,
    cache: &KvStore,
    n_past: usize,
    n: usize,
    q: &[f32],
    att: &mut [f32],
    scratch: &[Mutex<AttnScratch>],
) {
    let (qd, hd, n_kv) = (c.q_dim(), c.head_dim, c.n_head_kv);
    debug_assert!(cache.n_kv == n_kv && cache.head_dim == hd && n_past + n <= cache.cap);
    let group = c.n_head / n_kv;
    let tile = tile_tokens(c, n);
    let n_tiles = n.div_ceil(tile);
    let n_units = n_tiles * n_kv;
    let unit_len = tile * group * hd;
    let block = if tile == 1 { DECODE_BLOCK } else { BLOCK };
    let scale = 1.0 / (hd as f32).sqrt();
    for sc in scratch {
        sc.lock().unwrap_or_else(|e| e.into_inner()).done.clear();
    }
    let next = AtomicUsize::new(0);
    pool.run_joined(&|tid, _| {
        let mut mine = scratch[tid].lock().unwrap_or_else(|e| e.into_inner());
        let sc = &mut *mine;
        loop {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= n_units {
                break;
            }
            let (ti, g) = (u / n_kv, u % n_kv);
            let t0 = ti * tile;
            let t1 = (t0 + tile).min(n);
            let rows = (t1 - t0) * group;
            let at = sc.out.len();
            sc.out.resize(at + unit_len, 0.0);
            sc.done.push(u);
            sc.q.resize(rows * hd, 0.0);
            for (t, dst) in (t0..t1).zip(sc.q.chunks_exact_mut(group * hd)) {
                let src = &q[t * qd + g * group * hd..t * qd + (g + 1) * group * hd];
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s * scale);
            }
            let o = &mut sc.out[at..at + rows * hd];
            o.fill(0.0);
            sc.m.clear();
            sc.m.resize(rows, f32::NEG_INFINITY);
            sc.l.clear();
            sc.l.resize(rows, 0.0);
            sc.s.resize(rows * block, 0.0);
            // Keys visible to row i (token t0 + i / group): n_past + t + 1.
            let visible = |i: usize| n_past + t0 + i / group + 1;
            let end = visible(rows - 1);
            let mut j0 = 0;
            while j0 < end {
                let nb = block.min(end - j0);
                // Rows that see none of the block (tokens before its first
                // position) come first; they skip it.
                let r0 = (0..rows).find(|&i| visible(i) > j0).unwrap_or(rows);
                // This KV head's rows from the block on, read in place: one
                // contiguous run, of which the kernels compute the block's
                // `nb` rows and prefetch ahead into the rest.
                let span = cache.span(g, j0, end - j0);
                let s = &mut sc.s[r0 * nb..rows * nb];
                let qt = &sc.q[r0 * hd..];
                match &cache.data {
                    KvData::F16 { k, .. } => {
                        let kb: &[u8] = bytemuck::cast_slice(&k[span.clone()]);
                        kernels::vec::attn_tile_scores_f16(qt, hd, kb, 2 * hd, s)
                    }
                    KvData::F32 { k, .. } => {
                        kernels::vec::attn_tile_scores(qt, hd, &k[span.clone()], hd, s)
                    }
                }
                for (i, srow) in (r0..rows).zip(s.chunks_exact_mut(nb)) {
                    let seen = (visible(i) - j0).min(nb);
                    let live = &mut srow[..seen];
                    let mb = max(live);
                    let m_new = sc.m[i].max(mb);
                    if m_new > sc.m[i] {
                        // New running max: rescale what was accumulated.
                        let f = (sc.m[i] - m_new).exp();
                        sc.l[i] *= f;
                        o[i * hd..(i + 1) * hd].iter_mut().for_each(|x| *x *= f);
                        sc.m[i] = m_new;
                    }
                    sc.l[i] += kernels::vec::exp_shift_sum(live, m_new);
                    srow[seen..].fill(0.0);
                }
                let ot = &mut o[r0 * hd..];
                match &cache.data {
                    KvData::F16 { v, .. } => {
                        let vb: &[u8] = bytemuck::cast_slice(&v[span]);
                        kernels::vec::attn_tile_accumulate_f16(s, vb, 2 * hd, hd, ot)
                    }
                    KvData::F32 { v, .. } => {
                        kernels::vec::attn_tile_accumulate(s, &v[span], hd, hd, ot)
                    }
                }
                j0 += nb;
            }
            for (orow, &l) in o.chunks_exact_mut(hd).zip(&sc.l) {
                let inv = 1.0 / l;
                orow.iter_mut().for_each(|x| *x *= inv);
            }
        }
    });
    // Scatter the units' rows to att's layout (token-major, all heads).
    let gw = group * hd;
    for sc in scratch {
        let mut mine = sc.lock().unwrap_or_else(|e| e.into_inner());
        let AttnScratch { out, done, .. } = &mut *mine;
        for (k, &u) in done.iter().enumerate() {
            let (ti, g) = (u / n_kv, u % n_kv);
            let t0 = ti * tile;
            let t1 = (t0 + tile).min(n);
            let src = &out[k * unit_len..];
            for (t, rows) in (t0..t1).zip(src.chunks_exact(gw)) {
                att[t * qd + g * gw..t * qd + (g + 1) * gw].copy_from_slice(rows);
            }
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    //! The tiled online-softmax attention against a plain f64 softmax
    //! attention over the same cached values.
    use super::*;
    use crate::model::config::{Arch, Config, RopeOrder};

    struct Rng(u64);
    impl Rng {
        /// Uniform in [-1, 1).
        fn f32(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn config(n_head: usize, n_head_kv: usize, head_dim: usize) -> Config {
        Config {
            arch: Arch::Qwen3,
            n_layer: 1,
            n_embd: n_head * head_dim,
            n_ff: 1,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab: 1,
            n_ctx_train: 4096,
            rms_eps: 1e-6,
            rope_base: 10000.0,
            rope_freq_scale: 1.0,
            n_rot: head_dim,
            rope_order: RopeOrder::Neox,
        }
    }

    /// Cached element `i` (key or value) as the cache holds it.
    fn cached(cache: &KvStore, values: bool, pos: usize, g: usize, i: usize) -> f64 {
        let at = cache.index(pos, g, i);
        match &cache.data {
            KvData::F16 { k, v } => (if values { v } else { k })[at].to_f64(),
            KvData::F32 { k, v } => (if values { v } else { k })[at] as f64,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reference(c: &Config, cache: &KvStore, n_past: usize, n: usize, q: &[f32]) -> Vec<f64> {
        let (qd, hd) = (c.q_dim(), c.head_dim);
        let group = c.n_head / c.n_head_kv;
        let mut out = vec![0f64; n * qd];
        for t in 0..n {
            for h in 0..c.n_head {
                let g = h / group;
                let len = n_past + t + 1;
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..hd)
                            .map(|i| q[t * qd + h * hd + i] as f64 * cached(cache, false, j, g, i))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for i in 0..hd {
                    out[t * qd + h * hd + i] = (0..len)
                        .map(|j| e[j] / sum * cached(cache, true, j, g, i))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn store_puts_each_head_in_its_run_rounded_as_f16_from_f32() {
        let (n_kv, hd, cap) = (3, 12, 5);
        let mut rng = Rng(7);
        let mut cache = KvStore::new(KvType::F16, cap, n_kv, hd);
        let mut rows = Vec::new();
        for pos in [4, 0, 2] {
            // Random values and the edges of f16: ties, subnormals, overflow.
            let mut k: Vec<f32> = (0..n_kv * hd).map(|_| 300.0 * rng.f32()).collect();
            k[..6].copy_from_slice(&[1.0 + 1.0 / 4096.0, 6e-8, -1e-6, 65520.0, 65519.0, -0.0]);
            let v: Vec<f32> = (0..n_kv * hd).map(|_| rng.f32()).collect();
            cache.store(pos, &k, &v);
            rows.push((pos, k, v));
        }
        let KvData::F16 { k, v } = &cache.data else {
            unreachable!()
        };
        for (pos, kr, vr) in rows {
            for g in 0..n_kv {
                for i in 0..hd {
                    let at = (g * cap + pos) * hd + i;
                    let want = |x: f32| f16::from_f32(x).to_bits();
                    assert_eq!(
                        k[at].to_bits(),
                        want(kr[g * hd + i]),
                        "k pos {pos} head {g} [{i}]"
                    );
                    assert_eq!(
                        v[at].to_bits(),
                        want(vr[g * hd + i]),
                        "v pos {pos} head {g} [{i}]"
                    );
                }
            }
        }
    }

    #[test]
    fn tiled_attention_matches_f64_softmax() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // (heads, KV heads, head_dim): GQA 2 (Qwen3), GQA 8 (tile of 2
        // tokens), MHA with a head size the SIMD tiles do not cover.
        for (nh, nkv, hd) in [(4, 2, 64), (8, 1, 32), (3, 3, 12)] {
            let c = config(nh, nkv, hd);
            let (qd, kvd) = (c.q_dim(), c.kv_dim());
            for ty in [KvType::F16, KvType::F32] {
                // The last three cross blocks: the online softmax rescales.
                let shapes = [(0, 1), (0, 7), (5, 1), (3, 37), (70, 1), (70, 19), (0, 40)];
                for (n_past, n) in shapes.into_iter().chain([(1100, 1), (500, 3), (0, 300)]) {
                    let total = n_past + n;
                    let mut cache = KvStore::new(ty, total + 3, nkv, hd);
                    // Keys scaled up so that the softmax is far from uniform.
                    for p in 0..total {
                        let kr: Vec<f32> = (0..kvd).map(|_| 4.0 * rng.f32()).collect();
                        let vr: Vec<f32> = (0..kvd).map(|_| rng.f32()).collect();
                        cache.store(p, &kr, &vr);
                    }
                    let q: Vec<f32> = (0..n * qd).map(|_| rng.f32()).collect();
                    let want = reference(&c, &cache, n_past, n, &q);
                    for threads in [1, 3] {
                        let pool = ThreadPool::new(threads);
                        let scratch: Vec<Mutex<AttnScratch>> =
                            (0..threads).map(|_| Default::default()).collect();
                        let mut att = vec![f32::NAN; n * qd];
                        // Twice: the second call reuses the scratch.
                        for _ in 0..2 {
                            attention(&pool, &c, &cache, n_past, n, &q, &mut att, &scratch);
                            for (i, (&got, &w)) in att.iter().zip(&want).enumerate() {
                                // Outputs are convex combinations of values in
                                // [-1, 1]; f32 sums (worst seen: 4.6e-7 at
                                // 1100 positions).
                                assert!(
                                    (got as f64 - w).abs() <= 2e-6,
                                    "{ty:?} heads {nh}/{nkv} hd {hd} n_past {n_past} n {n} \
                                     threads {threads}: out[{i}] = {got}, want {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod bench {
    //! `cargo test --release --lib attention_speed -- --ignored --nocapture`:
    //! decode (1 token) and prefill (a batch) at several depths, the tiled
    //! attention against the per-row loop it replaced (kept here only as the
    //! baseline), interleaved rounds on the Qwen3-0.6B shape.
    use super::*;
    use crate::model::config::{Arch, Config, RopeOrder};
    use std::time::Instant;

    /// The previous attention: per (token, KV head) unit, each query head
    /// scores the whole cache row by row, softmax, weighted sum.
    fn per_row(
        pool: &ThreadPool,
        c: &Config,
        cache: &KvStore,
        n_past: usize,
        n: usize,
        q: &[f32],
        att: &mut [f32],
    ) {
        let (qd, hd) = (c.q_dim(), c.head_dim);
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        debug_assert_eq!(att.len(), n * qd);
        let units: Vec<Mutex<&mut [f32]>> =
            att.chunks_exact_mut(group * hd).map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let KvData::F16 { k, v } = &cache.data else {
            panic!("f16 cache")
        };
        pool.run(&|_, _| {
            let mut s = Vec::new();
            loop {
                let u = next.fetch_add(1, Ordering::Relaxed);
                if u >= units.len() {
                    break;
                }
                let (t, g) = (u / c.n_head_kv, u % c.n_head_kv);
                s.resize(n_past + t + 1, 0.0);
                let mut out = units[u].lock().unwrap();
                for (j, oh) in out.chunks_exact_mut(hd).enumerate() {
                    let h = g * group + j;
                    let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                    let rows = cache.span(g, 0, n_past + t + 1);
                    let kb: &[u8] = bytemuck::cast_slice(&k[rows.clone()]);
                    kernels::vec::attn_scores(qh, kb, hd * 2, scale, &mut s);
                    kernels::vec::softmax(&mut s);
                    let vb: &[u8] = bytemuck::cast_slice(&v[rows]);
                    kernels::vec::attn_weighted_sum(&s, vb, hd * 2, oh);
                }
            }
        });
    }

    #[test]
    #[ignore]
    fn attention_speed() {
        let c = Config {
            arch: Arch::Qwen3,
            n_layer: 1,
            n_embd: 1024,
            n_ff: 1,
            n_head: 16,
            n_head_kv: 8,
            head_dim: 128,
            n_vocab: 1,
            n_ctx_train: 8192,
            rms_eps: 1e-6,
            rope_base: 1e6,
            rope_freq_scale: 1.0,
            n_rot: 128,
            rope_order: RopeOrder::Neox,
        };
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let threads: usize = std::env::var("T")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(2);
        let pool = ThreadPool::new(threads);
        let scratch: Vec<Mutex<AttnScratch>> = (0..threads).map(|_| Default::default()).collect();
        let mut x = 1u32;
        let mut rnd = move || {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // Several layers' worth of caches, as in the model (the caches of
        // one token's 28 layers do not fit in L3 at depth 4096); at short
        // depths as many as make 64 MiB, so that every call reads its
        // cache from memory, as in a decode step (the weights stream
        // through L3 between two layers' attention).
        let cases = [(4096, 1), (1024, 1), (128, 1), (512, 1), (0, 128), (0, 512)];
        for (n_past, n) in cases {
            let total = n_past + n;
            let layer_bytes = 2 * total * kvd * 2;
            let layers = if n == 1 {
                (64usize << 20).div_ceil(layer_bytes).max(8)
            } else {
                8
            };
            let caches: Vec<KvStore> = (0..layers)
                .map(|_| {
                    let mut kv = KvStore::new(KvType::F16, total, c.n_head_kv, c.head_dim);
                    for p in 0..total {
                        let kr: Vec<f32> = (0..kvd).map(|_| rnd()).collect();
                        let vr: Vec<f32> = (0..kvd).map(|_| rnd()).collect();
                        kv.store(p, &kr, &vr);
                    }
                    kv
                })
                .collect();
            let q: Vec<f32> = (0..n * qd).map(|_| rnd()).collect();
            let mut att = vec![0f32; n * qd];
            let reps = if n == 1 { 6 } else { 1 };
            let (mut t_new, mut t_old) = (f64::MAX, f64::MAX);
            let rounds: usize = std::env::var("R")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(3);
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..reps {
                    for cache in &caches {
                        attention(&pool, &c, cache, n_past, n, &q, &mut att, &scratch);
                    }
                }
                t_new = t_new.min(t.elapsed().as_secs_f64() / (reps * layers) as f64);
                let t = Instant::now();
                for _ in 0..reps {
                    for cache in &caches {
                        per_row(&pool, &c, cache, n_past, n, &q, &mut att);
                    }
                }
                t_old = t_old.min(t.elapsed().as_secs_f64() / (reps * layers) as f64);
            }
            println!(
                "n_past {n_past:5} n {n:4} threads {threads}: tiled {:8.3} ms/layer, per-row {:8.3} ms/layer, speed-up {:.2}",
                t_new * 1e3,
                t_old * 1e3,
                t_old / t_new
            );
        }
    }
}
