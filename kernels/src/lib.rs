//! meki-kernels: ggml block formats and the compute kernels of the meki engine.
//!
//! This crate depends on nothing else in meki. `formats` holds the block layouts
//! and their scalar reference quantizers; the SIMD paths (x86 AVX2, ARM NEON) are
//! checked against those references.

pub mod formats;
