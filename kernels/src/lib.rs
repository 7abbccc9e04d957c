//! meki-kernels: ggml block formats and the compute kernels of the meki engine.
//!
//! This crate depends on nothing else in meki. `formats` holds the block layouts
//! and their scalar reference quantizers; the SIMD paths (x86 AVX2, ARM NEON) are
//! checked against those references.

pub mod dispatch;
pub mod dot;
pub mod formats;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dispatch::{isa, set_isa, Isa};
pub use dot::{quantize_activations, vec_dot, vec_dot_type, KernelError};
