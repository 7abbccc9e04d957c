//! Per-token vector kernels: RMSNorm, RoPE, softmax, SiLU·mul (SwiGLU),
//! sigmoid, add, f16 -> f32 and Q8_0 -> f32 rows (MeKi table rows), and the
//! attention inner loops: per query row over an f16 KV cache, and per tile
//! of query rows (flash attention: scores, exp, weighted sums).
//!
//! Each function uses the active kernel family ([`crate::isa`]); the `_with`
//! variants take it explicitly. Length mismatches are programming errors and
//! panic with a message. Float results differ from the scalar reference only
//! by summation order, FMA contraction and (softmax, sigmoid, SiLU) a
//! polynomial `exp` within a few ulps — see `tests/vec.rs` for the bounds.

use crate::dispatch::{isa, Isa};
use crate::scalar::vec as scalar;

macro_rules! pick {
    ($isa:expr, $name:ident ( $($arg:expr),* )) => {{
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if Isa::Avx2.is_available() => {
                // SAFETY: AVX2/FMA/F16C availability was just checked; the
                // kernels' length requirements are asserted by the caller.
                unsafe { crate::x86::avx2_vec::$name($($arg),*) }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonNoDotprod if Isa::NeonNoDotprod.is_available() => {
                // SAFETY: NEON availability was just checked; the kernels'
                // length requirements are asserted by the caller.
                unsafe { crate::arm::neon_vec::$name($($arg),*) }
            }
            _ => scalar::$name($($arg),*),
        }
    }};
}

/// `out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(isa(), x, w, eps, out)
}

pub fn rms_norm_with(i: Isa, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        w.len() == x.len() && out.len() == x.len(),
        "rms_norm: length mismatch"
    );
    if x.is_empty() {
        return;
    }
    pick!(i, rms_norm(x, w, eps, out))
}

/// `a[i] += b[i]`.
pub fn add(a: &mut [f32], b: &[f32]) {
    add_with(isa(), a, b)
}

pub fn add_with(i: Isa, a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "add: length mismatch");
    pick!(i, add(a, b))
}

/// `x[i] = 1 / (1 + exp(-x[i]))`.
pub fn sigmoid(x: &mut [f32]) {
    sigmoid_with(isa(), x)
}

pub fn sigmoid_with(i: Isa, x: &mut [f32]) {
    pick!(i, sigmoid(x))
}

/// SwiGLU: `out[i] = silu(gate[i]) * up[i]`, `silu(g) = g / (1 + exp(-g))`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    silu_mul_with(isa(), gate, up, out)
}

pub fn silu_mul_with(i: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        up.len() == gate.len() && out.len() == gate.len(),
        "silu_mul: length mismatch"
    );
    pick!(i, silu_mul(gate, up, out))
}

/// In-place softmax (max-subtracted).
pub fn softmax(x: &mut [f32]) {
    softmax_with(isa(), x)
}

pub fn softmax_with(i: Isa, x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    pick!(i, softmax(x))
}

/// f16 row (little-endian bytes, any alignment) -> f32.
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    f16_to_f32_with(isa(), src, dst)
}

pub fn f16_to_f32_with(i: Isa, src: &[u8], dst: &mut [f32]) {
    assert!(src.len() >= 2 * dst.len(), "f16_to_f32: source too short");
    pick!(i, f16_to_f32(src, dst))
}

/// f32 -> f16, rounded to nearest even (`f16::from_f32`'s values): the KV
/// cache's stores. AVX2 converts with F16C in line (half's slice
/// conversion calls a function per 8 values there); elsewhere half's
/// conversion (the fp16 instructions where the CPU has them).
pub fn f32_to_f16(src: &[f32], dst: &mut [half::f16]) {
    f32_to_f16_with(isa(), src, dst)
}

pub fn f32_to_f16_with(i: Isa, src: &[f32], dst: &mut [half::f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16: length mismatch");
    match i {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.is_available() => {
            // SAFETY: AVX2/F16C availability was just checked; `dst` holds
            // as many values as `src` (asserted), and f16 is a u16.
            unsafe {
                crate::x86::avx2::round_to_f16(
                    src.len(),
                    src.as_ptr() as *const u8,
                    dst.as_mut_ptr() as *mut u16,
                )
            }
        }
        Isa::Scalar => scalar::f32_to_f16(src, dst),
        _ => {
            use half::slice::HalfFloatSliceExt;
            dst.convert_from_f32_slice(src)
        }
    }
}

/// Q8_0 row (bytes, any alignment) -> f32; `dst.len()` a multiple of 32.
pub fn q8_0_to_f32(src: &[u8], dst: &mut [f32]) {
    q8_0_to_f32_with(isa(), src, dst)
}

pub fn q8_0_to_f32_with(i: Isa, src: &[u8], dst: &mut [f32]) {
    assert!(
        dst.len().is_multiple_of(32),
        "q8_0_to_f32: length not a multiple of 32"
    );
    assert!(
        src.len() >= dst.len() / 32 * 34,
        "q8_0_to_f32: source too short"
    );
    pick!(i, q8_0_to_f32(src, dst))
}

fn check_rows(what: &str, rows: &[u8], stride: usize, n: usize, d: usize) {
    assert!(
        stride >= 2 * d,
        "{what}: stride {stride} shorter than a row of {d} f16"
    );
    assert!(
        n == 0 || rows.len() >= (n - 1) * stride + 2 * d,
        "{what}: cache too short for {n} rows"
    );
}

/// Attention scores of one query head against `out.len()` cached f16 keys:
/// `out[j] = scale * q . k_j`, key `j` at byte offset `j * stride` of `keys`.
pub fn attn_scores(q: &[f32], keys: &[u8], stride: usize, scale: f32, out: &mut [f32]) {
    attn_scores_with(isa(), q, keys, stride, scale, out)
}

pub fn attn_scores_with(
    i: Isa,
    q: &[f32],
    keys: &[u8],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    check_rows("attn_scores", keys, stride, out.len(), q.len());
    pick!(i, attn_scores(q, keys, stride, scale, out))
}

/// Weighted sum of `w.len()` cached f16 value rows: `out = sum_j w[j] v_j`,
/// row `j` at byte offset `j * stride` of `values`.
pub fn attn_weighted_sum(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    attn_weighted_sum_with(isa(), w, values, stride, out)
}

pub fn attn_weighted_sum_with(i: Isa, w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    check_rows("attn_weighted_sum", values, stride, w.len(), out.len());
    pick!(i, attn_weighted_sum(w, values, stride, out))
}

/// Pair order of RoPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// ggml mode 0 (LLaMA): pairs `(2i, 2i+1)`.
    Normal,
    /// ggml mode 2 (GPT-NeoX, Qwen, "rotate half"): pairs `(i, i + n_rot/2)`.
    Neox,
}

/// Rotation angles of one position: `theta_i = pos * freq_scale *
/// freq_base^(-2i/n_rot)` for `i < n_rot/2`, as (cos, sin), computed in f64.
pub fn rope_angles(pos: f32, n_rot: usize, freq_base: f32, freq_scale: f32) -> Vec<(f32, f32)> {
    (0..n_rot / 2)
        .map(|i| {
            let theta = pos as f64
                * freq_scale as f64
                * (freq_base as f64).powf(-2.0 * i as f64 / n_rot as f64);
            (theta.cos() as f32, theta.sin() as f32)
        })
        .collect()
}

/// Applies RoPE in place to `x` = `n_heads` heads of `head_dim` each, using
/// the angles of [`rope_angles`] (their count is `n_rot/2`; dims from
/// `n_rot` on are left unchanged).
pub fn rope(x: &mut [f32], head_dim: usize, angles: &[(f32, f32)], mode: RopeMode) {
    rope_with(isa(), x, head_dim, angles, mode)
}

pub fn rope_with(i: Isa, x: &mut [f32], head_dim: usize, angles: &[(f32, f32)], mode: RopeMode) {
    assert!(
        head_dim > 0 && x.len().is_multiple_of(head_dim),
        "rope: x is not whole heads"
    );
    assert!(
        2 * angles.len() <= head_dim,
        "rope: n_rot larger than head_dim"
    );
    if i == Isa::Scalar {
        return scalar::rope(x, head_dim, angles, mode == RopeMode::Neox);
    }
    rope_table_with(i, x, head_dim, &RopeTable::new(angles, mode))
}

/// The rotation of one position laid out for the SIMD kernels, built once
/// and applied to every head of every layer at that position.
#[derive(Clone, Debug, Default)]
pub struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    neox: bool,
}

impl RopeTable {
    /// The table of `angles` (as [`rope_angles`] returns: `n_rot/2` pairs of
    /// (cos, sin)).
    pub fn new(angles: &[(f32, f32)], mode: RopeMode) -> RopeTable {
        let mut t = RopeTable::default();
        t.set(angles, mode);
        t
    }

    /// Refill in place (no allocation once the table has reached its size).
    pub fn set(&mut self, angles: &[(f32, f32)], mode: RopeMode) {
        // out = x * cos + partner(x) * sin: partner swaps pair members, `sin`
        // carries the sign of the first member.
        let neox = mode == RopeMode::Neox;
        let n_rot = 2 * angles.len();
        self.neox = neox;
        self.cos.clear();
        self.cos.resize(n_rot, 0.0);
        self.sin.clear();
        self.sin.resize(n_rot, 0.0);
        for (k, &(c, s)) in angles.iter().enumerate() {
            let (a, b) = if neox {
                (k, k + n_rot / 2)
            } else {
                (2 * k, 2 * k + 1)
            };
            (self.cos[a], self.cos[b], self.sin[a], self.sin[b]) = (c, c, -s, s);
        }
    }

    /// Rotated dimensions per head.
    pub fn n_rot(&self) -> usize {
        self.cos.len()
    }
}

/// Applies a [`RopeTable`] in place to `x` = whole heads of `head_dim`.
pub fn rope_table(x: &mut [f32], head_dim: usize, t: &RopeTable) {
    rope_table_with(isa(), x, head_dim, t)
}

pub fn rope_table_with(i: Isa, x: &mut [f32], head_dim: usize, t: &RopeTable) {
    assert!(
        head_dim > 0 && x.len().is_multiple_of(head_dim),
        "rope: x is not whole heads"
    );
    assert!(t.n_rot() <= head_dim, "rope: n_rot larger than head_dim");
    pick!(i, rope_tables(x, head_dim, &t.cos, &t.sin, t.neox))
}

fn check_tile(what: &str, d: usize, n: usize, rows: &[f32], stride: usize) {
    assert!(
        d > 0 && stride >= d,
        "{what}: stride {stride} shorter than a row of {d}"
    );
    assert!(
        n == 0 || rows.len() >= (n - 1) * stride + d,
        "{what}: {} values too few for {n} rows of stride {stride}",
        rows.len()
    );
}

/// Scores of a tile of query rows against a block of key rows (flash
/// attention's `Q K^T`): `s[i * n + j] = q_i . k_j` for the `r = q.len() / d`
/// query rows `q_i = q[i*d..(i+1)*d]` and the `n = s.len() / r` keys
/// `k_j = keys[j*stride..j*stride + d]`. Each key is loaded once for several
/// query rows. `keys` may run past the `n` keys: the AVX2 kernel prefetches
/// ahead into what follows (the next block of a sequential cache), never
/// past the slice.
pub fn attn_tile_scores(q: &[f32], d: usize, keys: &[f32], stride: usize, s: &mut [f32]) {
    attn_tile_scores_with(isa(), q, d, keys, stride, s)
}

pub fn attn_tile_scores_with(
    i: Isa,
    q: &[f32],
    d: usize,
    keys: &[f32],
    stride: usize,
    s: &mut [f32],
) {
    assert!(
        d > 0 && q.len().is_multiple_of(d),
        "attn_tile_scores: q is not whole rows of {d}"
    );
    let r = q.len() / d;
    if r == 0 {
        return;
    }
    assert!(
        s.len().is_multiple_of(r),
        "attn_tile_scores: scores are not {r} whole rows"
    );
    let n = s.len() / r;
    check_tile("attn_tile_scores", d, n, keys, stride);
    if n == 0 {
        return;
    }
    pick!(i, attn_tile_scores(q, d, keys, stride, s, n))
}

/// Weighted sums of a block of value rows into a tile of accumulators
/// (flash attention's `O += P V`): `o_i += sum_j p[i * n + j] v_j` for the
/// `r = o.len() / d` rows `o_i = o[i*d..(i+1)*d]` and the `n = p.len() / r`
/// values `v_j = values[j*stride..j*stride + d]`. Each value row is loaded
/// once for several output rows. `values` may run past the `n` rows: the
/// AVX2 kernel prefetches ahead into what follows, never past the slice.
pub fn attn_tile_accumulate(p: &[f32], values: &[f32], stride: usize, d: usize, o: &mut [f32]) {
    attn_tile_accumulate_with(isa(), p, values, stride, d, o)
}

pub fn attn_tile_accumulate_with(
    i: Isa,
    p: &[f32],
    values: &[f32],
    stride: usize,
    d: usize,
    o: &mut [f32],
) {
    assert!(
        d > 0 && o.len().is_multiple_of(d),
        "attn_tile_accumulate: o is not whole rows of {d}"
    );
    let r = o.len() / d;
    if r == 0 {
        return;
    }
    assert!(
        p.len().is_multiple_of(r),
        "attn_tile_accumulate: weights are not {r} whole rows"
    );
    let n = p.len() / r;
    check_tile("attn_tile_accumulate", d, n, values, stride);
    if n == 0 {
        return;
    }
    pick!(i, attn_tile_accumulate(p, values, stride, d, o, n))
}

/// `x[i] = exp(x[i] - shift)`, returning the sum of the results (the
/// unnormalized softmax of one row of an online-softmax block).
pub fn exp_shift_sum(x: &mut [f32], shift: f32) -> f32 {
    exp_shift_sum_with(isa(), x, shift)
}

pub fn exp_shift_sum_with(i: Isa, x: &mut [f32], shift: f32) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    pick!(i, exp_shift_sum(x, shift))
}

/// [`attn_tile_scores`] reading the keys from an f16 cache in place: key
/// `j` at byte offset `j * stride` of `keys`.
pub fn attn_tile_scores_f16(q: &[f32], d: usize, keys: &[u8], stride: usize, s: &mut [f32]) {
    attn_tile_scores_f16_with(isa(), q, d, keys, stride, s)
}

pub fn attn_tile_scores_f16_with(
    i: Isa,
    q: &[f32],
    d: usize,
    keys: &[u8],
    stride: usize,
    s: &mut [f32],
) {
    assert!(
        d > 0 && q.len().is_multiple_of(d),
        "attn_tile_scores_f16: q is not whole rows of {d}"
    );
    let r = q.len() / d;
    if r == 0 {
        return;
    }
    assert!(
        s.len().is_multiple_of(r),
        "attn_tile_scores_f16: scores are not {r} whole rows"
    );
    let n = s.len() / r;
    check_rows("attn_tile_scores_f16", keys, stride, n, d);
    if n == 0 {
        return;
    }
    pick!(i, attn_tile_scores_f16(q, d, keys, stride, s, n))
}

/// [`attn_tile_accumulate`] reading the values from an f16 cache in place:
/// value `j` at byte offset `j * stride` of `values`.
pub fn attn_tile_accumulate_f16(p: &[f32], values: &[u8], stride: usize, d: usize, o: &mut [f32]) {
    attn_tile_accumulate_f16_with(isa(), p, values, stride, d, o)
}

pub fn attn_tile_accumulate_f16_with(
    i: Isa,
    p: &[f32],
    values: &[u8],
    stride: usize,
    d: usize,
    o: &mut [f32],
) {
    assert!(
        d > 0 && o.len().is_multiple_of(d),
        "attn_tile_accumulate_f16: o is not whole rows of {d}"
    );
    let r = o.len() / d;
    if r == 0 {
        return;
    }
    assert!(
        p.len().is_multiple_of(r),
        "attn_tile_accumulate_f16: weights are not {r} whole rows"
    );
    let n = p.len() / r;
    check_rows("attn_tile_accumulate_f16", values, stride, n, d);
    if n == 0 {
        return;
    }
    pick!(i, attn_tile_accumulate_f16(p, values, stride, d, o, n))
}

/// Hints the CPU to start loading `n` cached rows of `len` bytes, row `j`
/// at byte offset `j * stride` of `rows` (the next block of one KV head:
/// its rows are strided, which the hardware prefetcher follows late). A
/// no-op where the family has no prefetch instruction wrapper.
pub fn prefetch_rows(rows: &[u8], stride: usize, n: usize, len: usize) {
    check_rows("prefetch_rows", rows, stride, n, len.div_ceil(2));
    if n == 0 || len == 0 {
        return;
    }
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.is_available() => {
            // SAFETY: AVX2 availability was just checked; every address is
            // inside `rows` (checked above).
            unsafe { crate::x86::avx2_vec::prefetch_rows(rows, stride, n, len) }
        }
        _ => {}
    }
}
