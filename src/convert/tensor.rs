//! A checkpoint tensor as found in a file: element type, shape (outermost
//! first, as torch prints it) and its bytes, borrowed from a memory map.

use half::{bf16, f16};

/// Element types of checkpoint tensors the converter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
        }
    }
}

/// A contiguous, row-major tensor in a mapped file.
#[derive(Clone, Debug)]
pub struct RawTensor<'a> {
    pub dtype: Dtype,
    /// Outermost dimension first (torch order).
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl<'a> RawTensor<'a> {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Rows (first dimension) and the elements of one row (the rest).
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape.split_first() {
            None => (1, 1),
            Some((&r, rest)) => (r, rest.iter().product()),
        }
    }

    /// Rows `r0 .. r0 + n` (first dimension) as f32.
    pub fn rows_f32(&self, r0: usize, n: usize) -> Result<Vec<f32>, String> {
        let (rows, cols) = self.rows_cols();
        let end = r0.saturating_add(n);
        if end > rows {
            return Err(format!(
                "rows {r0}..{} out of range (tensor has {rows} rows)",
                r0 + n
            ));
        }
        let es = self.dtype.size();
        let bytes = &self.data[r0 * cols * es..(r0 + n) * cols * es];
        let mut out = vec![0f32; n * cols];
        to_f32(self.dtype, bytes, &mut out);
        Ok(out)
    }

    /// The whole tensor as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n_elements()];
        to_f32(self.dtype, self.data, &mut out);
        out
    }
}

/// Converts little-endian `bytes` of `dtype` into `out` (`out.len()` elements).
pub fn to_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
}

/// Formats a shape the way torch prints it: `[2048, 1024]`.
pub fn shape_str(shape: &[usize]) -> String {
    let s: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", s.join(", "))
}
