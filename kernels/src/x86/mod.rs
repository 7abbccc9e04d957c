//! x86-64 kernels.
pub(crate) mod avx2;
pub(crate) mod avx2_repack;
pub(crate) mod avx2_repack_decode;
pub(crate) mod avx2_short;
pub(crate) mod avx2_vec;
