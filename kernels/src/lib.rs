//! meki-kernels: ggml block formats and the compute kernels of the meki engine.
//!
//! This crate depends on nothing else in meki. `formats` holds the block layouts
//! and their scalar reference quantizers; the SIMD paths (x86 AVX2, ARM NEON) are
//! checked against those references.
//!
//! # Engine API
//!
//! **Threads.** Create one [`ThreadPool`] per engine (`ThreadPool::new(n)`:
//! `n` threads including the caller) and pass it to every matrix product.
//! Matrix products use [`ThreadPool::run_chunks`] (dynamic row chunks; a
//! worker that is descheduled when the work is all taken is skipped, so an
//! oversubscribed machine degrades to the caller's speed, never to a
//! scheduler time slice). Idle workers spin ~20 µs, then `sched_yield` until
//! ~150 µs, then park on a futex: back-to-back products in a decode step pay
//! no wake-up and an idle engine costs no CPU.
//!
//! **Matrix products** ([`matmul`](mod@matmul) module). Weights are raw GGUF tensor bytes
//! (`&[u8]`, any alignment) of `rows` rows x `cols` columns of a [`formats::GgmlType`]
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32):
//! - decode: `matvec(&pool, w, ty, rows, cols, &x, &mut y)` — `y[r] = w[r] . x`;
//! - prefill: `matmul(&pool, w, ty, rows, cols, n_tokens, &xs, &mut ys)` —
//!   `xs` is `n_tokens x cols`, `ys` is `n_tokens x rows`;
//! - `matmul::matvec_quantized(isa, ...)` / `matmul::matmul_quantized(isa,
//!   ...)` take activation rows already quantized with
//!   [`quantize_activations`] to [`vec_dot_type`]`(ty)`, to share one
//!   quantization between matrices that read the same input (Q/K/V,
//!   gate/up), in decode and prefill.
//!
//! Where a format has a multi-row kernel ([`dot::gemm_fn`]: AVX2 and NEON
//! Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16; NEON also F32, BF16) the
//! products run as register tiles (several weight rows x several tokens per
//! pass over the blocks); every result is
//! bit-identical to [`vec_dot`] of the same family (the single-row kernels are
//! the 1 x 1 tiles).
//!
//! [`multi::matvec_multi`] runs several matrix-vector products (each with its
//! own quantized input) as one dispatch; [`repack`] holds the 8-row
//! interleaved Q4_0/Q8_0 layout and its kernels (AVX2; scalar elsewhere).
//!
//! Activations are quantized internally to the weight type's pair (Q8_0 for
//! Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants), exactly as
//! ggml does, so results match llama.cpp's CPU backend up to float summation
//! order. Shape or buffer-size mismatches return a [`KernelError`].
//!
//! **Vector kernels** ([`vec`](mod@vec) module): `rms_norm`, `rope` (+ `rope_angles`,
//! normal and NeoX order), `softmax`, `silu_mul`, `sigmoid`, `add`,
//! `f16_to_f32`, `q8_0_to_f32` (MeKi table rows), `attn_scores` (q . K over an
//! f16 key cache) and `attn_weighted_sum` (sum of weighted f16 value rows).
//!
//! **Lower level** ([`dot`] module): `vec_dot` (one row pair), `dot_fn` /
//! `quantize_fn` (raw kernel pointers for custom loops).
//!
//! # Kernel families
//!
//! [`Isa`]: `scalar` (reference), `avx2` (AVX2+FMA+F16C), `neon` (with
//! `dotprod`), `neon-nodotprod`. Detected at first use; the env var
//! `MEKI_KERNELS` or [`set_isa`] force one (an unavailable choice is reported
//! and replaced by the detected family / returns an error). Every function
//! also has a `*_with(isa, ...)` form for tests and benchmarks.
//!
//! # Precision
//!
//! Integer block sums are exact in every family; per-block float scaling and
//! accumulation order differ (error bounds in `tests/dot.rs`). Activation
//! quantizers are byte-identical across families and to ggml's
//! `quantize_row_q8_*_ref` (Q8_0/Q8_1 round half away from zero, Q8_K half to
//! even). ggml's own AVX2 Q8_0 quantizer rounds half to even with
//! `127/amax`, so its activations can differ from ours in a tie (rare).

pub mod dispatch;
pub mod dot;
pub mod formats;
pub mod matmul;
pub mod multi;
pub mod peak;
pub mod pool;
pub mod repack;
pub mod scalar;
pub mod vec;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dispatch::{
    float_decode, float_prefill, isa, set_float_decode, set_float_prefill, set_isa, FloatDecode,
    FloatPrefill, Isa,
};
pub use dot::{quantize_activations, vec_dot, vec_dot_type, KernelError};
pub use matmul::{matmul, matvec};
pub use pool::ThreadPool;
