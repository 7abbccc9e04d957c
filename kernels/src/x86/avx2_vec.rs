//! AVX2 + FMA + F16C per-token vector kernels (API and contracts in
//! `crate::vec`; lengths are checked there). Every function is `unsafe`
//! because of `#[target_feature]`: callers checked AVX2 is available.

use super::avx2::{dot_f16_f32, f16_at, hmax_ps, hsum_ps, load_f16x8, prefetch_span};
use std::arch::x86_64::*;

/// exp(x) for 8 lanes: Cody-Waite reduction by ln 2 and a degree-6
/// polynomial (Cephes `expf` coefficients), scaled by 2^n in two halves so
/// that results from 2^-149 to 2^128 come out right. About 1 ulp.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-104.0)),
        _mm256_set1_ps(88.8),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let y = _mm256_fmadd_ps(
        _mm256_mul_ps(p, r),
        r,
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32(ni, 1);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    _mm256_mul_ps(_mm256_mul_ps(y, s1), s2)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sigmoid_ps(x: __m256) -> __m256 {
    let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        let a = _mm256_loadu_ps(xp.add(i));
        let b = _mm256_loadu_ps(xp.add(i + 8));
        acc[0] = _mm256_fmadd_ps(a, a, acc[0]);
        acc[1] = _mm256_fmadd_ps(b, b, acc[1]);
        i += 16;
    }
    let mut ss = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    for &v in &x[i..] {
        ss += v * v;
    }
    let scale = 1.0 / (ss / n as f32 + eps).sqrt();
    let vs = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), vs);
        _mm256_storeu_ps(op.add(i), _mm256_mul_ps(v, _mm256_loadu_ps(wp.add(i))));
        i += 8;
    }
    for k in i..n {
        out[k] = x[k] * scale * w[k];
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn add(a: &mut [f32], b: &[f32]) {
    let n = a.len();
    let (ap, bp) = (a.as_mut_ptr(), b.as_ptr());
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_add_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i)));
        _mm256_storeu_ps(ap.add(i), v);
        i += 8;
    }
    for k in i..n {
        a[k] += b[k];
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn sigmoid(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(p.add(i), sigmoid_ps(_mm256_loadu_ps(p.add(i))));
        i += 8;
    }
    if i < n {
        let mut t = [0f32; 8];
        t[..n - i].copy_from_slice(&x[i..]);
        _mm256_storeu_ps(t.as_mut_ptr(), sigmoid_ps(_mm256_loadu_ps(t.as_ptr())));
        x[i..].copy_from_slice(&t[..n - i]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len();
    let mut i = 0;
    let mut g = [0f32; 8];
    let mut u = [0f32; 8];
    while i < n {
        let m = (n - i).min(8);
        let (gv, uv) = if m == 8 {
            (
                _mm256_loadu_ps(gate.as_ptr().add(i)),
                _mm256_loadu_ps(up.as_ptr().add(i)),
            )
        } else {
            g[..m].copy_from_slice(&gate[i..]);
            u[..m].copy_from_slice(&up[i..]);
            (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr()))
        };
        let r = _mm256_mul_ps(_mm256_mul_ps(gv, sigmoid_ps(gv)), uv);
        if m == 8 {
            _mm256_storeu_ps(out.as_mut_ptr().add(i), r);
        } else {
            _mm256_storeu_ps(g.as_mut_ptr(), r);
            out[i..].copy_from_slice(&g[..m]);
        }
        i += m;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn softmax(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut vm = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 8 <= n {
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(p.add(i)));
        i += 8;
    }
    let max = x[i..].iter().fold(hmax_ps(vm), |m, &v| m.max(v));
    let vmax = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vmax));
        _mm256_storeu_ps(p.add(i), e);
        acc = _mm256_add_ps(acc, e);
        i += 8;
    }
    let mut sum = hsum_ps(acc);
    if i < n {
        let mut t = [f32::NEG_INFINITY; 8];
        t[..n - i].copy_from_slice(&x[i..]);
        let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(t.as_ptr()), vmax));
        _mm256_storeu_ps(t.as_mut_ptr(), e);
        x[i..].copy_from_slice(&t[..n - i]);
        sum += t[..n - i].iter().sum::<f32>();
    }
    let inv = _mm256_set1_ps(1.0 / sum);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv));
        i += 8;
    }
    let inv = 1.0 / sum;
    x[i..].iter_mut().for_each(|v| *v *= inv);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(dp.add(i), load_f16x8(sp.add(2 * i)));
        i += 8;
    }
    for (k, d) in dst.iter_mut().enumerate().skip(i) {
        *d = f16_at(sp.add(2 * k));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, d) in dst.chunks_exact_mut(32).enumerate() {
        let sb = src.as_ptr().add(34 * b);
        let s = _mm256_set1_ps(f16_at(sb));
        for k in 0..4 {
            let q = _mm_loadl_epi64(sb.add(2 + 8 * k) as *const __m128i);
            let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(d.as_mut_ptr().add(8 * k), _mm256_mul_ps(v, s));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_scores(
    q: &[f32],
    keys: &[u8],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    let qb: &[u8] = bytemuck::cast_slice(q);
    let n = out.len();
    let mut j = 0;
    if d.is_multiple_of(8) {
        // Four keys per pass: four independent FMA chains, one query load per
        // step, and the four horizontal sums folded together.
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let vs = _mm256_set1_ps(scale);
        while j + 4 <= n {
            let k = |r: usize| kp.add((j + r) * stride);
            let (k0, k1, k2, k3) = (k(0), k(1), k(2), k(3));
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            let mut a2 = _mm256_setzero_ps();
            let mut a3 = _mm256_setzero_ps();
            let mut i = 0;
            while i < d {
                let qv = _mm256_loadu_ps(qp.add(i));
                a0 = _mm256_fmadd_ps(load_f16x8(k0.add(2 * i)), qv, a0);
                a1 = _mm256_fmadd_ps(load_f16x8(k1.add(2 * i)), qv, a1);
                a2 = _mm256_fmadd_ps(load_f16x8(k2.add(2 * i)), qv, a2);
                a3 = _mm256_fmadd_ps(load_f16x8(k3.add(2 * i)), qv, a3);
                i += 8;
            }
            // hadd twice: per 128-bit half, lane r = half-sum of key r.
            let h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
            let r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            let r = _mm_mul_ps(r, _mm256_castps256_ps128(vs));
            _mm_storeu_ps(out.as_mut_ptr().add(j), r);
            j += 4;
        }
    }
    for (jj, o) in out.iter_mut().enumerate().skip(j) {
        *o = dot_f16_f32(d, &keys[jj * stride..jj * stride + 2 * d], qb) * scale;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_weighted_sum(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    let d = out.len();
    let op = out.as_mut_ptr();
    let mut b = 0;
    // Blocks of 64 outputs held in eight registers across all rows (no
    // load/store of the output per row).
    while b + 64 <= d {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, &wj) in w.iter().enumerate() {
            let v = values.as_ptr().add(j * stride + 2 * b);
            let vw = _mm256_set1_ps(wj);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(vw, load_f16x8(v.add(16 * r)), *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(op.add(b + 8 * r), *a);
        }
        b += 64;
    }
    if b == d {
        return;
    }
    out[b..].iter_mut().for_each(|o| *o = 0.0);
    for (j, &wj) in w.iter().enumerate() {
        let v = values.as_ptr().add(j * stride);
        let vw = _mm256_set1_ps(wj);
        let mut i = b;
        while i + 8 <= d {
            let acc = _mm256_fmadd_ps(vw, load_f16x8(v.add(2 * i)), _mm256_loadu_ps(op.add(i)));
            _mm256_storeu_ps(op.add(i), acc);
            i += 8;
        }
        for k in i..d {
            *op.add(k) += wj * f16_at(v.add(2 * k));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rope_tables(
    x: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    let n_rot = cos.len();
    let half = n_rot / 2;
    for h in x.chunks_exact_mut(head_dim) {
        let p = h.as_mut_ptr();
        if neox && half.is_multiple_of(8) {
            let mut i = 0;
            while i < half {
                let a = _mm256_loadu_ps(p.add(i));
                let b = _mm256_loadu_ps(p.add(i + half));
                let (ca, sa) = (
                    _mm256_loadu_ps(cos.as_ptr().add(i)),
                    _mm256_loadu_ps(sin.as_ptr().add(i)),
                );
                let (cb, sb) = (
                    _mm256_loadu_ps(cos.as_ptr().add(i + half)),
                    _mm256_loadu_ps(sin.as_ptr().add(i + half)),
                );
                _mm256_storeu_ps(p.add(i), _mm256_fmadd_ps(b, sa, _mm256_mul_ps(a, ca)));
                _mm256_storeu_ps(
                    p.add(i + half),
                    _mm256_fmadd_ps(a, sb, _mm256_mul_ps(b, cb)),
                );
                i += 8;
            }
        } else if !neox && n_rot.is_multiple_of(8) {
            let mut i = 0;
            while i < n_rot {
                let a = _mm256_loadu_ps(p.add(i));
                let swapped = _mm256_permute_ps(a, 0b1011_0001);
                let (c, s) = (
                    _mm256_loadu_ps(cos.as_ptr().add(i)),
                    _mm256_loadu_ps(sin.as_ptr().add(i)),
                );
                _mm256_storeu_ps(p.add(i), _mm256_fmadd_ps(swapped, s, _mm256_mul_ps(a, c)));
                i += 8;
            }
        } else {
            crate::scalar::vec::rope_tables(h, head_dim, cos, sin, neox);
        }
    }
}

/// How far ahead of the row they read the attention tiles prefetch cached
/// rows. The cache is head-major, so a unit's keys (and its values) are one
/// sequential run, and the prefetches keep the next rows in flight while
/// the current ones are computed (without any, decode attention ran 1.5x
/// slower from DRAM). Per CPU (`dispatch::zen3_or_zen4`):
/// - Zen 3 / Zen 4: 256 bytes, one f16 row of 128 ahead. s22's Zen 4 EPYC,
///   the 0.6B shape's caches from DRAM (`T=1 cargo test --release --lib
///   attention_speed -- --ignored --nocapture`, ms per layer, two sweeps):
///   depth 4096 1.21-1.25 / 1.26-1.30 / 1.25-1.36 / 1.36-1.44 / 1.37-1.41 at
///   256 / 1024 / 2048 / 4096 / 8192 bytes, 1.85-1.93 with none; depth 512
///   0.12-0.13 at 256 against 0.16-0.17 at 8192; two threads 1.04-1.2x;
///   `meki-run --profile` decode after a 1960-token prompt, the attention
///   stage 15.6-16.3 against 17.0-17.4 ms a step.
/// - Elsewhere 8192 bytes, 32 rows (decode at depth 4096, 1 EPYC core:
///   1.9 -> 1.15 ms per 0.6B-shape layer with the larger decode blocks of
///   `attention.rs`, against the next block prefetched all at once).
fn attn_prefetch_bytes() -> usize {
    if crate::dispatch::zen3_or_zen4() {
        256
    } else {
        8192
    }
}

/// Bytes of `d` cached values.
#[inline(always)]
fn kv_row_bytes<const F16: bool>(d: usize) -> usize {
    if F16 {
        2 * d
    } else {
        4 * d
    }
}

/// Prefetches the `len` bytes from `row` if they end by `end` (a null `end`:
/// never). The address is only compared, never read, when out of range.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_row(row: *const u8, len: usize, end: *const u8) {
    if row.wrapping_add(len) <= end {
        prefetch_span(row, len);
    }
}

/// 8 cached values from element `i` of the row at `p`: f16 (converted) or f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_kv8<const F16: bool>(p: *const u8, i: usize) -> __m256 {
    if F16 {
        load_f16x8(p.add(2 * i))
    } else {
        _mm256_loadu_ps((p as *const f32).add(i))
    }
}

/// Scores of `R` (1 or 2) query rows at `qp` against the `n` keys at `kp`
/// (byte stride `stride`), four keys per pass: 4R independent FMA chains,
/// each key vector loaded (and converted) once for the R rows, the four sums
/// of a row folded by two `hadd`s. Prefetches the rows
/// [`attn_prefetch_bytes`] ahead that end by `pf_end` (null: none).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_scores_rows<const R: usize, const F16: bool>(
    qp: *const f32,
    d: usize,
    kp: *const u8,
    stride: usize,
    sp: *mut f32,
    n: usize,
    pf_end: *const u8,
) {
    let (ahead, row_bytes) = (
        attn_prefetch_bytes().div_ceil(stride),
        kv_row_bytes::<F16>(d),
    );
    let mut j = 0;
    while j + 4 <= n {
        let k = |r: usize| kp.add((j + r) * stride);
        let (k0, k1, k2, k3) = (k(0), k(1), k(2), k(3));
        for r in 0..4 {
            prefetch_row(kp.wrapping_add((j + ahead + r) * stride), row_bytes, pf_end);
        }
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut i = 0;
        while i < d {
            let kv = [
                load_kv8::<F16>(k0, i),
                load_kv8::<F16>(k1, i),
                load_kv8::<F16>(k2, i),
                load_kv8::<F16>(k3, i),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(qp.add(r * d + i));
                for (ac, &kk) in a.iter_mut().zip(&kv) {
                    *ac = _mm256_fmadd_ps(qv, kk, *ac);
                }
            }
            i += 8;
        }
        for (r, a) in acc.iter().enumerate() {
            let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(sp.add(r * n + j), s);
        }
        j += 4;
    }
    while j < n {
        let kj = kp.add(j * stride);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut i = 0;
        while i < d {
            let kv = load_kv8::<F16>(kj, i);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(r * d + i)), kv, *a);
            }
            i += 8;
        }
        for (r, a) in acc.iter().enumerate() {
            *sp.add(r * n + j) = hsum_ps(*a);
        }
        j += 1;
    }
}

/// All query rows, two at a time; `d` a multiple of 8. The first pair of
/// rows prefetches the keys ahead that end by `pf_end` (the later pairs find
/// the block in cache).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_scores<const F16: bool>(
    q: &[f32],
    d: usize,
    kp: *const u8,
    stride: usize,
    s: &mut [f32],
    n: usize,
    pf_end: *const u8,
) {
    let r = q.len() / d;
    let (qp, sp) = (q.as_ptr(), s.as_mut_ptr());
    let mut i = 0;
    while i + 2 <= r {
        let pf = if i == 0 { pf_end } else { std::ptr::null() };
        tile_scores_rows::<2, F16>(qp.add(i * d), d, kp, stride, sp.add(i * n), n, pf);
        i += 2;
    }
    if i < r {
        let pf = if i == 0 { pf_end } else { std::ptr::null() };
        tile_scores_rows::<1, F16>(qp.add(i * d), d, kp, stride, sp.add(i * n), n, pf);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_tile_scores(
    q: &[f32],
    d: usize,
    keys: &[f32],
    stride: usize,
    s: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(8) {
        return crate::scalar::vec::attn_tile_scores(q, d, keys, stride, s, n);
    }
    let end = keys.as_ptr_range().end as *const u8;
    tile_scores::<false>(q, d, keys.as_ptr() as *const u8, 4 * stride, s, n, end);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_tile_scores_f16(
    q: &[f32],
    d: usize,
    keys: &[u8],
    stride: usize,
    s: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(8) {
        return crate::scalar::vec::attn_tile_scores_f16(q, d, keys, stride, s, n);
    }
    let end = keys.as_ptr_range().end;
    tile_scores::<true>(q, d, keys.as_ptr(), stride, s, n, end);
}

/// `o_r += sum_j p[r*n + j] v_j` for `R` rows on `W` vectors of 8 columns
/// from column `c`: the R x W accumulators stay in registers over all `n`
/// value rows, each value vector loaded (and converted) once for the R rows.
/// Prefetches the whole rows [`attn_prefetch_bytes`] ahead that end by
/// `pf_end` (null: none; the first column pass of a block reads them all).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_accumulate_rows<const R: usize, const W: usize, const F16: bool>(
    pp: *const f32,
    n: usize,
    vp: *const u8,
    stride: usize,
    d: usize,
    op: *mut f32,
    c: usize,
    pf_end: *const u8,
) {
    let mut acc = [[_mm256_setzero_ps(); W]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        for (w, ac) in a.iter_mut().enumerate() {
            *ac = _mm256_loadu_ps(op.add(r * d + c + 8 * w));
        }
    }
    let (ahead, row_bytes) = (
        attn_prefetch_bytes().div_ceil(stride),
        kv_row_bytes::<F16>(d),
    );
    for j in 0..n {
        let vj = vp.add(j * stride);
        prefetch_row(vj.wrapping_add(ahead * stride), row_bytes, pf_end);
        let mut vv = [_mm256_setzero_ps(); W];
        for (w, v) in vv.iter_mut().enumerate() {
            *v = load_kv8::<F16>(vj, c + 8 * w);
        }
        for (r, a) in acc.iter_mut().enumerate() {
            let pw = _mm256_broadcast_ss(&*pp.add(r * n + j));
            for (ac, &v) in a.iter_mut().zip(&vv) {
                *ac = _mm256_fmadd_ps(pw, v, *ac);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (w, ac) in a.iter().enumerate() {
            _mm256_storeu_ps(op.add(r * d + c + 8 * w), *ac);
        }
    }
}

/// Rows `R` (1 to 4) of the weighted sum over all columns: 32 at a time
/// for one or two rows, then 16, then 8; prefetching by `pf_end` (see
/// [`tile_accumulate_rows`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_accumulate_block<const R: usize, const F16: bool>(
    pp: *const f32,
    n: usize,
    vp: *const u8,
    stride: usize,
    d: usize,
    op: *mut f32,
    pf_end: *const u8,
) {
    // Only the first column pass prefetches.
    let pf = |c: usize| if c == 0 { pf_end } else { std::ptr::null() };
    let mut c = 0;
    if R <= 2 {
        // Few rows (decode): 32 columns per pass, fewer weight broadcasts.
        while c + 32 <= d {
            tile_accumulate_rows::<R, 4, F16>(pp, n, vp, stride, d, op, c, pf(c));
            c += 32;
        }
    }
    while c + 16 <= d {
        tile_accumulate_rows::<R, 2, F16>(pp, n, vp, stride, d, op, c, pf(c));
        c += 16;
    }
    if c < d {
        tile_accumulate_rows::<R, 1, F16>(pp, n, vp, stride, d, op, c, pf(c));
    }
}

/// All output rows, four at a time; `d` a multiple of 8. The first rows
/// prefetch the values ahead that end by `pf_end`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_accumulate<const F16: bool>(
    p: &[f32],
    vp: *const u8,
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
    pf_end: *const u8,
) {
    let r = o.len() / d;
    let (pp, op) = (p.as_ptr(), o.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= r {
        let pf = if i == 0 { pf_end } else { std::ptr::null() };
        tile_accumulate_block::<4, F16>(pp.add(i * n), n, vp, stride, d, op.add(i * d), pf);
        i += 4;
    }
    let (pp, op) = (pp.add(i * n), op.add(i * d));
    let pf = if i == 0 { pf_end } else { std::ptr::null() };
    match r - i {
        3 => tile_accumulate_block::<3, F16>(pp, n, vp, stride, d, op, pf),
        2 => tile_accumulate_block::<2, F16>(pp, n, vp, stride, d, op, pf),
        1 => tile_accumulate_block::<1, F16>(pp, n, vp, stride, d, op, pf),
        _ => {}
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_tile_accumulate(
    p: &[f32],
    values: &[f32],
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(8) {
        return crate::scalar::vec::attn_tile_accumulate(p, values, stride, d, o, n);
    }
    let end = values.as_ptr_range().end as *const u8;
    tile_accumulate::<false>(p, values.as_ptr() as *const u8, 4 * stride, d, o, n, end);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_tile_accumulate_f16(
    p: &[f32],
    values: &[u8],
    stride: usize,
    d: usize,
    o: &mut [f32],
    n: usize,
) {
    if !d.is_multiple_of(8) {
        return crate::scalar::vec::attn_tile_accumulate_f16(p, values, stride, d, o, n);
    }
    tile_accumulate::<true>(
        p,
        values.as_ptr(),
        stride,
        d,
        o,
        n,
        values.as_ptr_range().end,
    );
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn exp_shift_sum(x: &mut [f32], shift: f32) -> f32 {
    let n = x.len();
    let p = x.as_mut_ptr();
    let vs = _mm256_set1_ps(shift);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vs));
        _mm256_storeu_ps(p.add(i), e);
        acc = _mm256_add_ps(acc, e);
        i += 8;
    }
    let mut sum = hsum_ps(acc);
    if i < n {
        let mut t = [f32::NEG_INFINITY; 8];
        t[..n - i].copy_from_slice(&x[i..]);
        let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(t.as_ptr()), vs));
        _mm256_storeu_ps(t.as_mut_ptr(), e);
        x[i..].copy_from_slice(&t[..n - i]);
        sum += t[..n - i].iter().sum::<f32>();
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn prefetch_rows(rows: &[u8], stride: usize, n: usize, len: usize) {
    let p = rows.as_ptr();
    for j in 0..n {
        prefetch_span(p.add(j * stride), len);
    }
}
