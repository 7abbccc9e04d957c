//! Causal self-attention over the KV cache: the cache's storage (f16 or
//! f32 rows, position-major) and the attention of a batch of query rows.

use super::ops;
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

/// One layer's cached keys and values, position-major: row `p` holds all KV
/// heads of position `p` (`kv_dim` values).
pub(super) enum KvStore {
    F16 { k: Vec<f16>, v: Vec<f16> },
    F32 { k: Vec<f32>, v: Vec<f32> },
}

impl KvStore {
    pub(super) fn new(ty: KvType, n: usize) -> KvStore {
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

    pub(super) fn store(&mut self, at: usize, k_row: &[f32], v_row: &[f32]) {
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

#[derive(Default)]
pub(super) struct AttnScratch {
    scores: Vec<f32>,
    key: Vec<f32>,
}

/// Causal attention of the batch's `n` query rows (positions `n_past..`)
/// over the cache, split over the pool's threads by (token, KV head): each
/// unit computes the `group` query heads that share one KV head, so its
/// cached rows are read once and stay in cache for the group.
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
