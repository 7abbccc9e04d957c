//! Scalar activation quantizers f32 -> Q8_0 / Q8_1 / Q8_K, written to bytes at
//! any address. Same arithmetic as ggml's `quantize_row_q8_*_ref` (and so as
//! `formats`' reference quantizers): Q8_0/Q8_1 round half away from zero
//! (`roundf`) with `id = 1/d`, Q8_K rounds half to even (`nearest_int`) with
//! `iscale = -127/max`. The SIMD quantizers are byte-identical to these.

use crate::formats::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};
use half::f16;

pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let sz = std::mem::size_of::<BlockQ8_0>();
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(sz)) {
        let amax = xb
            .iter()
            .fold(0f32, |m, v| if m > v.abs() { m } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8_0 {
            d: f16::from_f32(d),
            qs: [0; QK],
        };
        for (q, v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
        ob.copy_from_slice(bytemuck::bytes_of(&b));
    }
}

pub fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    let sz = std::mem::size_of::<BlockQ8_1>();
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(sz)) {
        let amax = xb
            .iter()
            .fold(0f32, |m, v| if m > v.abs() { m } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::ZERO,
            qs: [0; QK],
        };
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.s = f16::from_f32(sum as f32 * d);
        ob.copy_from_slice(bytemuck::bytes_of(&b));
    }
}

pub fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let sz = std::mem::size_of::<BlockQ8K>();
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(sz)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut b = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, v) in b.qs.iter_mut().zip(xb) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
            b.d = 1.0 / iscale;
        }
        ob.copy_from_slice(bytemuck::bytes_of(&b));
    }
}
