//! Activation quantizers: SIMD output byte-identical to scalar, scalar
//! matching the rounding rules of ggml's reference quantizers.
#![allow(clippy::needless_range_loop)] // index loops read clearer in reference checks

mod common;
use common::*;
use meki_kernels::formats::{BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType};
use meki_kernels::{quantize_activations, Isa};

fn quant(isa: Isa, act: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; act.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_activations(isa, act, x, &mut out).unwrap();
    out
}

fn inputs(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
    let mut v = vec![
        random_f32(rng, n, 1.0),
        random_f32(rng, n, 1e-3),
        random_f32(rng, n, 300.0),
    ];
    // Ties: a block whose max is 127 has d = 1, so x.5 values are exact ties.
    let ties: Vec<f32> = (0..n)
        .map(|i| match i % 32 {
            0 => 127.0,
            k => (k as f32 - 16.0) + 0.5,
        })
        .collect();
    v.push(ties);
    // Q8_K ties: the first largest-magnitude element is -127, so iscale = 1.
    v.push(
        (0..n)
            .map(|i| {
                if i % 256 == 0 {
                    -127.0
                } else {
                    ((i % 64) as f32 - 32.0) + 0.5
                }
            })
            .collect(),
    );
    let mut z = random_f32(rng, n, 1.0);
    z[..32].iter_mut().for_each(|v| *v = 0.0);
    v.push(z);
    // Largest magnitude appears twice with both signs: the first one decides.
    let mut s = random_f32(rng, n, 1.0);
    s[3] = 2.0;
    s[7] = -2.0;
    v.push(s);
    v
}

#[test]
fn simd_quantizers_are_byte_identical_to_scalar() {
    let mut rng = Rng::new(11);
    for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8K] {
        for nb in [1usize, 2, 5, 8] {
            let n = nb * 256;
            for x in inputs(&mut rng, n) {
                let s = quant(Isa::Scalar, act, &x);
                for isa in Isa::available() {
                    // Also at unaligned output addresses.
                    for off in [0usize, 1, 3] {
                        let mut buf = vec![0u8; s.len() + off];
                        quantize_activations(isa, act, &x, &mut buf[off..]).unwrap();
                        assert_eq!(&buf[off..], &s[..], "{act} {isa} nb={nb} off={off}");
                    }
                }
            }
        }
    }
}

#[test]
fn scalar_q8_0_rounds_half_away_from_zero() {
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.5;
    x[4] = 0.49999997;
    let q = quant(Isa::Scalar, GgmlType::Q8_0, &x);
    let b: BlockQ8_0 = bytemuck::pod_read_unaligned(&q);
    assert_eq!(b.d.to_f32(), 1.0);
    assert_eq!(&b.qs[..5], &[127, 3, -3, 1, 0]);
    let q = quant(Isa::Scalar, GgmlType::Q8_1, &x);
    let b: BlockQ8_1 = bytemuck::pod_read_unaligned(&q);
    assert_eq!(&b.qs[..5], &[127, 3, -3, 1, 0]);
    assert_eq!(b.s.to_f32(), 128.0);
}

#[test]
fn scalar_q8_k_rounds_half_to_even() {
    let mut x = vec![0f32; 256];
    x[0] = -127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -0.5;
    x[4] = 127.0;
    let q = quant(Isa::Scalar, GgmlType::Q8K, &x);
    let b: BlockQ8K = bytemuck::pod_read_unaligned(&q);
    assert_eq!(b.d, 1.0);
    // iscale = -127 / -127 = 1; x[4] = 127 stays 127 (clamped at 127).
    assert_eq!(&b.qs[..5], &[-127, 2, 4, 0, 127]);
    assert_eq!(b.bsums[0], -127 + 2 + 4 + 127);
}

/// Reconstruction error of each element is at most half a step (plus the
/// f16 rounding of d for Q8_0/Q8_1).
#[test]
fn quantization_error_is_half_a_step() {
    let mut rng = Rng::new(5);
    let x = random_f32(&mut rng, 1024, 10.0);
    let (v0, _) = dequant_act(
        GgmlType::Q8_0,
        &quant(Isa::Scalar, GgmlType::Q8_0, &x),
        1024,
    );
    let (vk, _) = dequant_act(GgmlType::Q8K, &quant(Isa::Scalar, GgmlType::Q8K, &x), 1024);
    for b in 0..1024 / 32 {
        let amax = x[32 * b..32 * b + 32]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs())) as f64;
        for i in 32 * b..32 * b + 32 {
            let step = amax / 127.0;
            assert!(
                (v0[i] - x[i] as f64).abs() <= step * (0.5 + 1e-3) + 127.0 * step * 1e-3,
                "q8_0 {i}"
            );
        }
    }
    for b in 0..4 {
        let amax = x[256 * b..256 * b + 256]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs())) as f64;
        for i in 256 * b..256 * b + 256 {
            assert!(
                (vk[i] - x[i] as f64).abs() <= amax / 127.0 * 0.5001,
                "q8_K {i}"
            );
        }
    }
}

/// Every family's quantizer is byte-identical to the `formats` reference
/// quantizers (ports of ggml's `quantize_row_q8_*_ref`, checked against
/// ggml's C code in the formats tests).
#[test]
fn quantizers_match_formats_reference() {
    use meki_kernels::formats::{kquants, legacy};
    let mut rng = Rng::new(77);
    for x in inputs(&mut rng, 1024) {
        let mut r0 = vec![bytemuck::Zeroable::zeroed(); 1024 / 32];
        legacy::quantize_row_q8_0(&x, &mut r0);
        let mut r1 = vec![bytemuck::Zeroable::zeroed(); 1024 / 32];
        legacy::quantize_row_q8_1(&x, &mut r1);
        let mut rk = vec![bytemuck::Zeroable::zeroed(); 1024 / 256];
        kquants::quantize_row_q8_k(&x, &mut rk);
        let want: [(GgmlType, &[u8]); 3] = [
            (GgmlType::Q8_0, bytemuck::cast_slice::<BlockQ8_0, u8>(&r0)),
            (GgmlType::Q8_1, bytemuck::cast_slice::<BlockQ8_1, u8>(&r1)),
            (GgmlType::Q8K, bytemuck::cast_slice::<BlockQ8K, u8>(&rk)),
        ];
        for (act, w) in want {
            for isa in Isa::available() {
                assert_eq!(quant(isa, act, &x), w, "{act} {isa}");
            }
        }
    }
}

#[test]
fn q5_0_widened_to_q8_0_keeps_every_value() {
    use meki_kernels::formats::legacy::{
        dequantize_row_q5_0, dequantize_row_q8_0, widen_row_q5_0_to_q8_0,
    };
    use meki_kernels::formats::BlockQ5_0;
    let mut rng = Rng::new(0x5_0);
    let nb = 64;
    // Random blocks, plus every quant at its ends: all low (-16) and all high (15).
    let mut bytes = random_weights(&mut rng, GgmlType::Q5_0, nb);
    bytes[2..22].fill(0x00);
    bytes[24..44].fill(0xff);
    let x: Vec<BlockQ5_0> = bytes
        .chunks_exact(22)
        .map(bytemuck::pod_read_unaligned)
        .collect();
    let mut y = vec![
        BlockQ8_0 {
            d: half::f16::ZERO,
            qs: [0; 32]
        };
        nb
    ];
    widen_row_q5_0_to_q8_0(&x, &mut y);
    let (mut a, mut b) = (vec![0f32; nb * 32], vec![0f32; nb * 32]);
    dequantize_row_q5_0(&x, &mut a);
    dequantize_row_q8_0(&y, &mut b);
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    assert!(y[0].qs.iter().all(|&q| q == -16) && y[1].qs.iter().all(|&q| q == 15));
}
