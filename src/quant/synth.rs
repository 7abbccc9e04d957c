//! Deterministic synthetic weights for quantization tests and golden files.
//!
//! Everything here is integer arithmetic plus single f32 multiplies and adds,
//! so the values are bit-identical on every platform: `tools/quant_golden.sh`
//! writes the model once for llama-quantize, and the tests regenerate it.

use crate::gguf::{GgufWriter, Value};
use crate::kernels::formats::GgmlType;
use std::path::Path;

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough to fill tensors.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), a multiple of 2^-23 (exact in f32).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as i32 - (1 << 23)) as f32 * (1.0 / (1u32 << 23) as f32)
    }

    /// Roughly normal (sum of four uniforms, variance 4/3).
    pub fn normalish(&mut self) -> f32 {
        let s = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        s * 0.866_025_4
    }
}

/// FNV-1a of a name, to seed each tensor independently of tensor order.
fn name_seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One block (`n` values) of a kind chosen to stress quantizer edge cases.
fn fill_block(rng: &mut SplitMix64, kind: u64, base: f32, out: &mut [f32]) {
    match kind {
        // all zeros
        0 => out.fill(0.0),
        // constant block (max == min)
        1 => {
            let c = rng.uniform() * base;
            out.fill(c);
        }
        // one spike among zeros / among tiny noise
        2 => {
            out.fill(0.0);
            let i = (rng.next_u64() % out.len() as u64) as usize;
            out[i] = rng.uniform() * base * 8.0;
        }
        3 => {
            for v in out.iter_mut() {
                *v = rng.uniform() * base * 1e-3;
            }
            let i = (rng.next_u64() % out.len() as u64) as usize;
            out[i] = -base * 4.0;
        }
        // large magnitudes (still finite once scaled into f16 block scales)
        4 => {
            for v in out.iter_mut() {
                *v = rng.uniform() * 2.0e4;
            }
        }
        // tiny magnitudes: f16 scales underflow, k-quant groups fall under GROUP_MAX_EPS
        5 => {
            for v in out.iter_mut() {
                *v = rng.uniform() * 1e-30;
            }
        }
        // values on a coarse grid: many exact rounding ties
        6 => {
            for v in out.iter_mut() {
                *v = ((rng.next_u64() % 33) as i32 - 16) as f32 * 0.0625 * base;
            }
        }
        // one-signed blocks (min > 0, or max < 0)
        7 => {
            for v in out.iter_mut() {
                *v = (rng.uniform() * 0.5 + 0.75) * base;
            }
        }
        8 => {
            for v in out.iter_mut() {
                *v = -(rng.uniform() * 0.5 + 0.75) * base;
            }
        }
        // ordinary weights
        _ => {
            for v in out.iter_mut() {
                *v = rng.normalish() * base;
            }
        }
    }
}

/// Synthetic values of a tensor of `n_per_row` x `n_rows`: mostly normal-ish
/// weights with scale `base`, and about one block in three an edge case
/// (zeros, constant, spikes, large, tiny, rounding ties, one-signed), chosen
/// per 32 values, with some whole rows of one kind so k-quant super-blocks
/// see them too.
pub fn tensor_values(name: &str, n_per_row: usize, n_rows: usize, base: f32) -> Vec<f32> {
    let mut out = vec![0f32; n_per_row * n_rows];
    let seed = name_seed(name);
    for (r, row) in out.chunks_exact_mut(n_per_row).enumerate() {
        let mut rng = SplitMix64(seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let row_kind = rng.next_u64() % 24;
        for block in row.chunks_mut(32) {
            let kind = if row_kind < 9 {
                row_kind
            } else if rng.next_u64() % 3 == 0 {
                rng.next_u64() % 9
            } else {
                9
            };
            fill_block(&mut rng, kind, base, block);
        }
    }
    out
}

/// A small llama-architecture model description.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_layer: usize,
    pub n_vocab: usize,
    /// Write `output.weight` (untied embeddings).
    pub output: bool,
    /// Matrices with the quantizer's edge-case blocks (magnitudes up to
    /// 2e4, 1e-30, spikes: see [`tensor_values`]); off: ordinary weights
    /// only, so that a forward pass stays finite (the edge cases overflow
    /// an f16 KV cache and make NaN logits).
    pub edge_cases: bool,
}

impl ModelSpec {
    /// The model of `tests/fixtures/quant/llama_quantize_golden.txt`: 8 layers
    /// so the `use_more_bits` pattern shows, and `n_ff = 800` so `ffn_down`
    /// rows (ne0 = 800) are not whole 256-blocks and take llama.cpp's fallback.
    pub fn golden() -> ModelSpec {
        ModelSpec {
            n_embd: 256,
            n_ff: 800,
            n_head: 4,
            n_head_kv: 2,
            n_layer: 8,
            n_vocab: 512,
            output: true,
            edge_cases: true,
        }
    }

    /// Tensors in llama.cpp's GGUF naming: (name, dims with ne0 first).
    pub fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let e = self.n_embd as u64;
        let kv = (self.n_embd / self.n_head * self.n_head_kv) as u64;
        let ff = self.n_ff as u64;
        let mut t = vec![(
            "token_embd.weight".to_string(),
            vec![e, self.n_vocab as u64],
        )];
        for i in 0..self.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            t.push((b("attn_norm.weight"), vec![e]));
            t.push((b("attn_q.weight"), vec![e, e]));
            t.push((b("attn_k.weight"), vec![e, kv]));
            t.push((b("attn_v.weight"), vec![e, kv]));
            t.push((b("attn_output.weight"), vec![e, e]));
            t.push((b("ffn_norm.weight"), vec![e]));
            t.push((b("ffn_gate.weight"), vec![e, ff]));
            t.push((b("ffn_up.weight"), vec![e, ff]));
            t.push((b("ffn_down.weight"), vec![ff, e]));
        }
        t.push(("output_norm.weight".to_string(), vec![e]));
        if self.output {
            t.push(("output.weight".to_string(), vec![e, self.n_vocab as u64]));
        }
        t
    }

    /// Values of one tensor (norm weights near 1, matrices ~0.02 scale).
    pub fn values(&self, name: &str, dims: &[u64]) -> Vec<f32> {
        let n0 = dims[0] as usize;
        let rows: usize = dims[1..].iter().map(|&d| d as usize).product();
        if dims.len() == 1 {
            let mut rng = SplitMix64(name_seed(name));
            return (0..n0).map(|_| 1.0 + 0.1 * rng.uniform()).collect();
        }
        if self.edge_cases {
            tensor_values(name, n0, rows, 0.02)
        } else {
            let mut rng = SplitMix64(name_seed(name));
            let mut out = vec![0f32; n0 * rows];
            fill_block(&mut rng, 9, 0.02, &mut out);
            out
        }
    }

    /// llama hyper-parameters, as convert_hf_to_gguf.py writes them.
    pub fn metadata(&self) -> Vec<(&'static str, Value)> {
        let tokens: Vec<String> = (0..self.n_vocab).map(|i| format!("<t{i}>")).collect();
        vec![
            ("general.architecture", Value::from("llama")),
            ("general.name", Value::from("meki synthetic")),
            ("general.file_type", Value::U32(0)),
            ("llama.vocab_size", Value::U32(self.n_vocab as u32)),
            ("llama.context_length", Value::U32(256)),
            ("llama.embedding_length", Value::U32(self.n_embd as u32)),
            ("llama.block_count", Value::U32(self.n_layer as u32)),
            ("llama.feed_forward_length", Value::U32(self.n_ff as u32)),
            (
                "llama.rope.dimension_count",
                Value::U32((self.n_embd / self.n_head) as u32),
            ),
            ("llama.attention.head_count", Value::U32(self.n_head as u32)),
            (
                "llama.attention.head_count_kv",
                Value::U32(self.n_head_kv as u32),
            ),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            ("tokenizer.ggml.model", Value::from("gpt2")),
            ("tokenizer.ggml.tokens", Value::from(tokens)),
        ]
    }

    /// Writes the model as an all-F32 GGUF (`ty = F32`) or with 2-D tensors
    /// converted to `ty` (F16/BF16), 1-D tensors F32.
    pub fn write(&self, path: &Path, ty: GgmlType) -> Result<(), String> {
        let err = |e: crate::gguf::GgufError| format!("{}: {e}", path.display());
        let mut w = GgufWriter::create(path).map_err(err)?;
        for (k, v) in self.metadata() {
            w.add_kv(k, v).map_err(err)?;
        }
        let tensors = self.tensors();
        let type_of = |dims: &[u64]| if dims.len() == 1 { GgmlType::F32 } else { ty };
        for (name, dims) in &tensors {
            w.add_tensor_info(name, dims, type_of(dims)).map_err(err)?;
        }
        for (name, dims) in &tensors {
            let v = self.values(name, dims);
            let t = type_of(dims);
            let mut bytes = vec![0u8; t.row_bytes(v.len() as u64).unwrap() as usize];
            crate::kernels::formats::quantize_row(t, &v, &mut bytes).map_err(|e| e.to_string())?;
            w.write_tensor(name, &bytes).map_err(err)?;
        }
        w.finish().map_err(err)
    }
}
