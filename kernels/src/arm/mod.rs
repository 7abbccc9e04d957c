//! AArch64 kernels.
pub(crate) mod neon;
pub(crate) mod neon_vec;
