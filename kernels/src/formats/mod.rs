//! ggml block formats: the exact byte layouts of `ggml-common.h`.
//!
//! Every block is `#[repr(C)]` and `Pod`, so a `&[u8]` slice of a mapped GGUF
//! tensor can be viewed as `&[BlockQ4_0]` with `bytemuck::try_cast_slice`
//! (safe: it checks size and alignment). Sizes are asserted at compile time.
//!
//! Reference (scalar) quantizers and dequantizers live next to their blocks:
//! `legacy.rs` for the 32-wide formats, `kquants.rs` for the 256-wide
//! super-block formats, `float.rs` for F16/BF16.

use bytemuck::{Pod, Zeroable};
use half::f16;

pub mod float;
pub mod kquants;
pub mod legacy;

/// Elements per block of the legacy formats (Q4_0 ... Q8_1).
pub const QK: usize = 32;
/// Elements per super-block of the k-quant formats.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales/mins in Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// Activation format paired with Q4_1/Q5_1: `s = d * sum(qs)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// Activation format paired with the k-quants (never stored in files by meki).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ4_0>() == 18);
    assert!(std::mem::size_of::<BlockQ4_1>() == 20);
    assert!(std::mem::size_of::<BlockQ5_0>() == 22);
    assert!(std::mem::size_of::<BlockQ5_1>() == 24);
    assert!(std::mem::size_of::<BlockQ8_0>() == 34);
    assert!(std::mem::size_of::<BlockQ8_1>() == 36);
    assert!(std::mem::size_of::<BlockQ4K>() == 144);
    assert!(std::mem::size_of::<BlockQ5K>() == 176);
    assert!(std::mem::size_of::<BlockQ6K>() == 210);
    assert!(std::mem::size_of::<BlockQ8K>() == 292);
};

/// ggml tensor type ids (`enum ggml_type`), the subset meki reads and writes.
/// Unknown ids are an error at load, never a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

impl GgmlType {
    pub const ALL: [GgmlType; 18] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::BF16,
    ];

    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => QK,
            GgmlType::Q8_0 | GgmlType::Q8_1 => QK,
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => QK_K,
            _ => 1,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use std::mem::size_of;
        match self {
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
            GgmlType::I8 => 1,
            GgmlType::I64 | GgmlType::F64 => 8,
            GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
            GgmlType::Q5_0 => size_of::<BlockQ5_0>(),
            GgmlType::Q5_1 => size_of::<BlockQ5_1>(),
            GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
            GgmlType::Q8_1 => size_of::<BlockQ8_1>(),
            GgmlType::Q4K => size_of::<BlockQ4K>(),
            GgmlType::Q5K => size_of::<BlockQ5K>(),
            GgmlType::Q6K => size_of::<BlockQ6K>(),
            GgmlType::Q8K => size_of::<BlockQ8K>(),
        }
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole
    /// number of blocks or the size overflows.
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.80
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if n % bs != 0 {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// ggml's lower-case name (`q4_0`, `q4_K`, `bf16`...), as gguf-dump prints it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::BF16 => "BF16",
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a byte-level row conversion was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowError {
    /// No scalar reference for this type in this direction.
    Unsupported { ty: GgmlType, op: &'static str },
    /// `n` values are not a whole number of blocks, or the byte buffer does not
    /// hold exactly their row size.
    BadLength {
        ty: GgmlType,
        n: usize,
        bytes: usize,
    },
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowError::Unsupported { ty, op } => write!(f, "{op} to/from {ty} is not supported"),
            RowError::BadLength { ty, n, bytes } => write!(
                f,
                "{n} values do not match {bytes} bytes of {ty} (block size {}, {} bytes per block)",
                ty.block_size(),
                ty.type_size()
            ),
        }
    }
}

impl std::error::Error for RowError {}

/// Whether [`quantize_row`] accepts `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q4K | Q5K | Q6K | Q8K
    )
}

/// Whether [`dequantize_row`] accepts `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    can_quantize(ty)
}

fn check_row(ty: GgmlType, n: usize, bytes: usize) -> Result<usize, RowError> {
    let bad = RowError::BadLength { ty, n, bytes };
    match ty.row_bytes(n as u64) {
        Some(b) if b == bytes as u64 => Ok(n / ty.block_size()),
        _ => Err(bad),
    }
}

/// Run a block quantizer into a byte buffer of any alignment.
fn quantize_into<B: Pod>(x: &[f32], y: &mut [u8], f: fn(&[f32], &mut [B])) {
    match bytemuck::try_cast_slice_mut::<u8, B>(y) {
        Ok(blocks) => f(x, blocks),
        Err(_) => {
            let mut blocks = vec![B::zeroed(); y.len() / std::mem::size_of::<B>()];
            f(x, &mut blocks);
            y.copy_from_slice(bytemuck::cast_slice(&blocks));
        }
    }
}

/// Run a block dequantizer from a byte buffer of any alignment.
fn dequantize_from<B: Pod>(x: &[u8], y: &mut [f32], f: fn(&[B], &mut [f32])) {
    match bytemuck::try_cast_slice::<u8, B>(x) {
        Ok(blocks) => f(blocks, y),
        Err(_) => {
            let blocks: Vec<B> = x
                .chunks_exact(std::mem::size_of::<B>())
                .map(bytemuck::pod_read_unaligned)
                .collect();
            f(&blocks, y);
        }
    }
}

/// Quantize one row (or any whole number of blocks) of `x` into the ggml
/// bytes of `ty`, as ggml's reference quantizers (what llama-quantize writes
/// without an importance matrix). `F32` copies the values little-endian.
/// `y.len()` must be exactly `ty.row_bytes(x.len())`.
pub fn quantize_row(ty: GgmlType, x: &[f32], y: &mut [u8]) -> Result<(), RowError> {
    if !can_quantize(ty) {
        return Err(RowError::Unsupported { ty, op: "quantize" });
    }
    check_row(ty, x.len(), y.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, v) in y.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, &v) in y.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&float::fp32_to_fp16_bits(v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, &v) in y.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&float::fp32_to_bf16_bits(v).to_le_bytes());
            }
        }
        GgmlType::Q4_0 => quantize_into(x, y, legacy::quantize_row_q4_0),
        GgmlType::Q4_1 => quantize_into(x, y, legacy::quantize_row_q4_1),
        GgmlType::Q5_0 => quantize_into(x, y, legacy::quantize_row_q5_0),
        GgmlType::Q5_1 => quantize_into(x, y, legacy::quantize_row_q5_1),
        GgmlType::Q8_0 => quantize_into(x, y, legacy::quantize_row_q8_0),
        GgmlType::Q8_1 => quantize_into(x, y, legacy::quantize_row_q8_1),
        GgmlType::Q4K => quantize_into(x, y, kquants::quantize_row_q4_k),
        GgmlType::Q5K => quantize_into(x, y, kquants::quantize_row_q5_k),
        GgmlType::Q6K => quantize_into(x, y, kquants::quantize_row_q6_k),
        GgmlType::Q8K => quantize_into(x, y, kquants::quantize_row_q8_k),
        _ => unreachable!("can_quantize checked"),
    }
    Ok(())
}

/// Dequantize ggml bytes of `ty` into `y` (`x.len()` must be exactly
/// `ty.row_bytes(y.len())`), bit-exact with ggml's `dequantize_row_*`.
pub fn dequantize_row(ty: GgmlType, x: &[u8], y: &mut [f32]) -> Result<(), RowError> {
    if !can_dequantize(ty) {
        return Err(RowError::Unsupported {
            ty,
            op: "dequantize",
        });
    }
    check_row(ty, y.len(), x.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
                *o = float::fp16_to_fp32(f16::from_bits(u16::from_le_bytes([b[0], b[1]])));
            }
        }
        GgmlType::BF16 => {
            for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        GgmlType::Q4_0 => dequantize_from(x, y, legacy::dequantize_row_q4_0),
        GgmlType::Q4_1 => dequantize_from(x, y, legacy::dequantize_row_q4_1),
        GgmlType::Q5_0 => dequantize_from(x, y, legacy::dequantize_row_q5_0),
        GgmlType::Q5_1 => dequantize_from(x, y, legacy::dequantize_row_q5_1),
        GgmlType::Q8_0 => dequantize_from(x, y, legacy::dequantize_row_q8_0),
        GgmlType::Q8_1 => dequantize_from(x, y, legacy::dequantize_row_q8_1),
        GgmlType::Q4K => dequantize_from(x, y, kquants::dequantize_row_q4_k),
        GgmlType::Q5K => dequantize_from(x, y, kquants::dequantize_row_q5_k),
        GgmlType::Q6K => dequantize_from(x, y, kquants::dequantize_row_q6_k),
        GgmlType::Q8K => dequantize_from(x, y, kquants::dequantize_row_q8_k),
        _ => unreachable!("can_dequantize checked"),
    }
    Ok(())
}
