//! F16 and BF16 conversions, bit-exact with ggml's scalar `ggml_compute_*`
//! helpers (`ggml-impl.h`), which is what `ggml-quants.c` and llama-quantize use.
//!
//! Both narrowings round to nearest, ties to even. They differ from a plain
//! IEEE conversion only for NaN: ggml turns every f32 NaN into the f16 quiet
//! NaN `0x7E00` (sign kept), and for BF16 keeps the top payload bits and forces
//! the quiet bit (`| 64`).

use half::{bf16, f16};

/// f32 -> f16 bits exactly as `ggml_compute_fp32_to_fp16` (round to nearest even;
/// overflow to infinity; NaN -> `0x7E00` with the sign kept).
#[inline]
pub fn fp32_to_fp16_bits(f: f32) -> u16 {
    // The rounding is done by the f32 addition below: `base` is |f| scaled so
    // that its low mantissa bits fall off exactly where f16 precision ends.
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        }) as u16
}

/// f32 -> f16 as ggml's `GGML_FP32_TO_FP16`.
#[inline]
pub fn fp32_to_fp16(f: f32) -> f16 {
    f16::from_bits(fp32_to_fp16_bits(f))
}

/// f16 -> f32 (exact; identical to ggml for every non-NaN value).
#[inline]
pub fn fp16_to_fp32(h: f16) -> f32 {
    h.to_f32()
}

/// f32 -> bf16 bits exactly as `ggml_compute_fp32_to_bf16`.
#[inline]
pub fn fp32_to_bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: keep the top bits, force quiet.
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// f32 -> bf16 as ggml's `GGML_FP32_TO_BF16`.
#[inline]
pub fn fp32_to_bf16(f: f32) -> bf16 {
    bf16::from_bits(fp32_to_bf16_bits(f))
}

/// bf16 -> f32 (exact: the bits shifted up).
#[inline]
pub fn bf16_to_fp32(h: bf16) -> f32 {
    f32::from_bits((h.to_bits() as u32) << 16)
}

/// `ggml_fp32_to_fp16_row`. Panics if the lengths differ.
pub fn quantize_row_f16(x: &[f32], y: &mut [f16]) {
    assert_eq!(x.len(), y.len(), "quantize_row_f16: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = fp32_to_fp16(v);
    }
}

/// `ggml_fp16_to_fp32_row`. Panics if the lengths differ.
pub fn dequantize_row_f16(x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dequantize_row_f16: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = fp16_to_fp32(v);
    }
}

/// `ggml_fp32_to_bf16_row_ref` (what llama-quantize uses). Panics if the lengths differ.
pub fn quantize_row_bf16(x: &[f32], y: &mut [bf16]) {
    assert_eq!(x.len(), y.len(), "quantize_row_bf16: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = fp32_to_bf16(v);
    }
}

/// `ggml_bf16_to_fp32_row`. Panics if the lengths differ.
pub fn dequantize_row_bf16(x: &[bf16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dequantize_row_bf16: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = bf16_to_fp32(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's f16 narrowing agrees with `half` (IEEE round-to-nearest-even) on
    /// every non-NaN input; checked on a dense sweep of f32 bit patterns.
    #[test]
    fn fp16_matches_half_except_nan() {
        let mut bits: u32 = 0;
        loop {
            let f = f32::from_bits(bits);
            if !f.is_nan() {
                assert_eq!(
                    fp32_to_fp16_bits(f),
                    f16::from_f32(f).to_bits(),
                    "f32 bits {bits:#010x}"
                );
            }
            match bits.checked_add(4093) {
                Some(b) => bits = b,
                None => break,
            }
        }
        assert_eq!(fp32_to_fp16_bits(f32::NAN), 0x7E00);
        assert_eq!(fp32_to_fp16_bits(-f32::NAN), 0xFE00);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(fp32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(fp32_to_bf16_bits(f32::INFINITY), 0x7f80);
    }
}
