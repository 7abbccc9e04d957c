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
//! [`ThreadPool::run`] costs a few µs; workers spin ~300 µs after a job and
//! then park, so back-to-back products in a decode step do not pay wake-ups.
//!
//! **Matrix products** ([`matmul`] module). Weights are raw GGUF tensor bytes
//! (`&[u8]`, any alignment) of `rows` rows x `cols` columns of a [`formats::GgmlType`]
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32):
//! - decode: `matvec(&pool, w, ty, rows, cols, &x, &mut y)` — `y[r] = w[r] . x`;
//! - prefill: `matmul(&pool, w, ty, rows, cols, n_tokens, &xs, &mut ys)` —
//!   `xs` is `n_tokens x cols`, `ys` is `n_tokens x rows`;
//! - `matmul::matvec_quantized(isa, ...)` takes an activation row already
//!   quantized with [`quantize_activations`] to [`vec_dot_type`]`(ty)`, to share
//!   one quantization between matrices that read the same input (Q/K/V).
//!
//! Activations are quantized internally to the weight type's pair (Q8_0 for
//! Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the k-quants), exactly as
//! ggml does, so results match llama.cpp's CPU backend up to float summation
//! order. Shape or buffer-size mismatches return a [`KernelError`].
//!
//! **Vector kernels** ([`vec`] module): `rms_norm`, `rope` (+ `rope_angles`,
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
pub mod peak;
pub mod pool;
pub mod scalar;
pub mod vec;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dispatch::{isa, set_isa, Isa};
pub use dot::{quantize_activations, vec_dot, vec_dot_type, KernelError};
pub use matmul::{matmul, matvec};
pub use pool::ThreadPool;
