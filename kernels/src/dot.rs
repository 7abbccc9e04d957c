//! Dot products of a weight row with an activation row, and the activation
//! quantizers that produce the activation rows, for every [`Isa`].
//!
//! Pairs (as in ggml's `vec_dot_type`): Q4_0, Q5_0, Q8_0 · Q8_0; Q4_1, Q5_1 ·
//! Q8_1; Q4_K, Q5_K, Q6_K · Q8_K; F32, F16, BF16 · F32.

use crate::dispatch::Isa;
use crate::formats::GgmlType;
use crate::scalar;

/// A dot product kernel: `(n, weight_row_bytes, activation_row_bytes) -> f32`.
///
/// # Safety (of calling it)
/// `n` must be a multiple of the weight type's block size, the weight slice
/// must hold `row_bytes(n)` bytes of the weight type and the activation slice
/// `row_bytes(n)` bytes of its [`vec_dot_type`] (F32 activations: `4 n` bytes,
/// any alignment). [`vec_dot`] is the checked wrapper.
pub type DotFn = unsafe fn(usize, &[u8], &[u8]) -> f32;

/// A multi-row kernel: `rows` weight rows (`w`, `w_stride` bytes apart) times
/// `toks` activation rows (`x`, `x_stride` bytes apart), `n` elements each,
/// into `y[t * y_stride + r]`, register-tiled so that each weight block and each
/// activation block is loaded once per tile. Every result is bit-identical to
/// the [`DotFn`] of the same family and type.
///
/// # Safety (of calling it)
/// As [`DotFn`] for every row pair; `y` must be valid for the writes.
pub type GemmFn = unsafe fn(
    n: usize,
    w: *const u8,
    w_stride: usize,
    rows: usize,
    x: *const u8,
    x_stride: usize,
    toks: usize,
    y: *mut f32,
    y_stride: usize,
);

/// The multi-row kernel of `ty` for `isa`, where one exists.
pub fn gemm_fn(isa: Isa, ty: GgmlType) -> Option<GemmFn> {
    if !isa.is_available() {
        return None;
    }
    match (isa, ty) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::Q4_0) => Some(crate::x86::avx2::gemm_q4_0_q8_0),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::Q5_0) => Some(crate::x86::avx2::gemm_q5_0_q8_0),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::Q8_0) => Some(crate::x86::avx2::gemm_q8_0_q8_0),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::Q4K) => Some(crate::x86::avx2::gemm_q4_k_q8_k),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::Q6K) => Some(crate::x86::avx2::gemm_q6_k_q8_k),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::Q5K) => Some(crate::x86::avx2::gemm_q5_k_q8_k),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::F16) => Some(crate::x86::avx2::gemm_f16_f32),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::BF16) => Some(crate::x86::avx2::gemm_bf16_f32),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, GgmlType::F32) => Some(crate::x86::avx2::gemm_f32_f32),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon | Isa::NeonNoDotprod, _) => crate::arm::neon::gemm_fn(isa, ty),
        _ => None,
    }
}

/// An activation quantizer f32 -> Q8_0 / Q8_1 / Q8_K bytes.
///
/// # Safety (of calling it)
/// `x.len()` must be a multiple of the block size and `out` must hold
/// `row_bytes(x.len())` bytes. [`quantize_activations`] is the checked wrapper.
pub type QuantizeFn = unsafe fn(&[f32], &mut [u8]);

/// Errors of the checked kernel entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// The type has no dot product / quantizer (e.g. Q8_K weights, I32).
    Unsupported(GgmlType),
    /// `n` is not a multiple of the block size.
    BadLength { ty: GgmlType, n: usize },
    /// A buffer is smaller than the shape requires.
    BufferTooSmall {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// The kernel family cannot run on this CPU.
    IsaUnavailable(Isa),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Unsupported(t) => write!(f, "no kernel for tensor type {t}"),
            KernelError::BadLength { ty, n } => {
                write!(
                    f,
                    "row length {n} is not a multiple of the {ty} block size {}",
                    ty.block_size()
                )
            }
            KernelError::BufferTooSmall { what, need, have } => {
                write!(
                    f,
                    "{what}: buffer holds {have} bytes/elements, shape needs {need}"
                )
            }
            KernelError::IsaUnavailable(i) => write!(f, "{}", crate::dispatch::IsaUnavailable(*i)),
        }
    }
}

impl std::error::Error for KernelError {}

/// The activation type a weight type is multiplied with.
pub fn vec_dot_type(w: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    match w {
        Q4_0 | Q5_0 | Q8_0 => Some(Q8_0),
        Q4_1 | Q5_1 => Some(Q8_1),
        Q4K | Q5K | Q6K => Some(Q8K),
        F32 | F16 | BF16 => Some(F32),
        _ => None,
    }
}

/// Bytes of an activation row of `n` elements for weight type `w`.
pub fn act_row_bytes(w: GgmlType, n: usize) -> Option<usize> {
    let a = vec_dot_type(w)?;
    a.row_bytes(n as u64).map(|b| b as usize)
}

/// The dot kernel of `ty` for `isa`, or `None` when the type has none or the
/// family cannot run on this CPU.
pub fn dot_fn(isa: Isa, ty: GgmlType) -> Option<DotFn> {
    if !isa.is_available() {
        return None;
    }
    use GgmlType::*;
    match isa {
        Isa::Scalar => {
            use scalar::dot::*;
            let f: fn(usize, &[u8], &[u8]) -> f32 = match ty {
                Q4_0 => dot_q4_0_q8_0,
                Q4_1 => dot_q4_1_q8_1,
                Q5_0 => dot_q5_0_q8_0,
                Q5_1 => dot_q5_1_q8_1,
                Q8_0 => dot_q8_0_q8_0,
                Q4K => dot_q4_k_q8_k,
                Q5K => dot_q5_k_q8_k,
                Q6K => dot_q6_k_q8_k,
                F32 => dot_f32_f32,
                F16 => dot_f16_f32,
                BF16 => dot_bf16_f32,
                _ => return None,
            };
            Some(f as DotFn)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use crate::x86::avx2::*;
            let f: DotFn = match ty {
                Q4_0 => dot_q4_0_q8_0,
                Q4_1 => dot_q4_1_q8_1,
                Q5_0 => dot_q5_0_q8_0,
                Q5_1 => dot_q5_1_q8_1,
                Q8_0 => dot_q8_0_q8_0,
                Q4K => dot_q4_k_q8_k,
                Q5K => dot_q5_k_q8_k,
                Q6K => dot_q6_k_q8_k,
                F32 => dot_f32_f32,
                F16 => dot_f16_f32_matrix,
                BF16 => dot_bf16_f32,
                _ => return None,
            };
            Some(f)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            use crate::arm::neon::*;
            let f: DotFn = match ty {
                Q4_0 => dot_q4_0_q8_0_dp,
                Q4_1 => dot_q4_1_q8_1_dp,
                Q5_0 => dot_q5_0_q8_0_dp,
                Q5_1 => dot_q5_1_q8_1_dp,
                Q8_0 => dot_q8_0_q8_0_dp,
                Q4K => dot_q4_k_q8_k_dp,
                Q5K => dot_q5_k_q8_k_dp,
                Q6K => dot_q6_k_q8_k_dp,
                F32 => dot_f32_f32,
                F16 => dot_f16_f32,
                BF16 => dot_bf16_f32,
                _ => return None,
            };
            Some(f)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::NeonNoDotprod => {
            use crate::arm::neon::*;
            let f: DotFn = match ty {
                Q4_0 => dot_q4_0_q8_0,
                Q4_1 => dot_q4_1_q8_1,
                Q5_0 => dot_q5_0_q8_0,
                Q5_1 => dot_q5_1_q8_1,
                Q8_0 => dot_q8_0_q8_0,
                Q4K => dot_q4_k_q8_k,
                Q5K => dot_q5_k_q8_k,
                Q6K => dot_q6_k_q8_k,
                F32 => dot_f32_f32,
                F16 => dot_f16_f32,
                BF16 => dot_bf16_f32,
                _ => return None,
            };
            Some(f)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The activation quantizer for `act` (Q8_0, Q8_1 or Q8_K) and `isa`.
pub fn quantize_fn(isa: Isa, act: GgmlType) -> Option<QuantizeFn> {
    if !isa.is_available() {
        return None;
    }
    use GgmlType::*;
    match isa {
        Isa::Scalar => {
            use scalar::quant::*;
            let f: fn(&[f32], &mut [u8]) = match act {
                Q8_0 => quantize_q8_0,
                Q8_1 => quantize_q8_1,
                Q8K => quantize_q8_k,
                _ => return None,
            };
            Some(f as QuantizeFn)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use crate::x86::avx2::*;
            let f: QuantizeFn = match act {
                Q8_0 => quantize_q8_0,
                Q8_1 => quantize_q8_1,
                Q8K => quantize_q8_k,
                _ => return None,
            };
            Some(f)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonNoDotprod => {
            use crate::arm::neon::*;
            let f: QuantizeFn = match act {
                Q8_0 => quantize_q8_0,
                Q8_1 => quantize_q8_1,
                Q8K => quantize_q8_k,
                _ => return None,
            };
            Some(f)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn check_len(ty: GgmlType, n: usize) -> Result<(), KernelError> {
    if !n.is_multiple_of(ty.block_size()) {
        return Err(KernelError::BadLength { ty, n });
    }
    Ok(())
}

fn need(what: &'static str, need: usize, have: usize) -> Result<(), KernelError> {
    if have < need {
        return Err(KernelError::BufferTooSmall { what, need, have });
    }
    Ok(())
}

/// Checked dot product of `n` elements: weight row `w` of type `ty` with an
/// activation row `x` of type [`vec_dot_type`]`(ty)` (raw bytes, any alignment).
pub fn vec_dot(isa: Isa, ty: GgmlType, n: usize, w: &[u8], x: &[u8]) -> Result<f32, KernelError> {
    if !isa.is_available() {
        return Err(KernelError::IsaUnavailable(isa));
    }
    let f = dot_fn(isa, ty).ok_or(KernelError::Unsupported(ty))?;
    check_len(ty, n)?;
    let wb = ty
        .row_bytes(n as u64)
        .ok_or(KernelError::BadLength { ty, n })? as usize;
    let xb = act_row_bytes(ty, n).ok_or(KernelError::Unsupported(ty))?;
    need("weight row", wb, w.len())?;
    need("activation row", xb, x.len())?;
    // SAFETY: the length contract of `DotFn` was checked just above, and
    // `dot_fn` only returns kernels of families available on this CPU.
    Ok(unsafe { f(n, w, x) })
}

/// Checked activation quantization of `x` into `out` (type `act`: Q8_0, Q8_1
/// or Q8_K). Byte-identical across kernel families.
pub fn quantize_activations(
    isa: Isa,
    act: GgmlType,
    x: &[f32],
    out: &mut [u8],
) -> Result<(), KernelError> {
    if !isa.is_available() {
        return Err(KernelError::IsaUnavailable(isa));
    }
    let f = quantize_fn(isa, act).ok_or(KernelError::Unsupported(act))?;
    check_len(act, x.len())?;
    let ob = act
        .row_bytes(x.len() as u64)
        .ok_or(KernelError::Unsupported(act))? as usize;
    need("quantized activation row", ob, out.len())?;
    // SAFETY: lengths checked above; `quantize_fn` only returns kernels of
    // families available on this CPU.
    unsafe { f(x, out) };
    Ok(())
}
