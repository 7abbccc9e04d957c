#!/usr/bin/env python3
"""Writes a Qwen3-0.6B-shaped GGUF with random F16 weights (for tools/quant_bench.sh).

  quant_bench_model.py OUT.gguf [n_layer]

28 layers, d=1024, 16/8 heads of 128, ffn 3072, vocab 151936, tied embeddings.
"""
import sys

import numpy as np
from gguf import GGUFWriter

out = sys.argv[1]
n_layer = int(sys.argv[2]) if len(sys.argv) > 2 else 28
d, ff, vocab, nh, nkv, hd = 1024, 3072, 151936, 16, 8, 128
rng = np.random.default_rng(0)


def mat(rows, cols):  # numpy shape (rows, cols) = ggml ne0=cols, ne1=rows
    return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)


def vec(n):
    return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)


w = GGUFWriter(out, "qwen3")
w.add_name("qwen3-0.6b-shaped random")
w.add_context_length(40960)
w.add_embedding_length(d)
w.add_block_count(n_layer)
w.add_feed_forward_length(ff)
w.add_head_count(nh)
w.add_head_count_kv(nkv)
w.add_key_length(hd)
w.add_value_length(hd)
w.add_layer_norm_rms_eps(1e-6)
w.add_rope_freq_base(1e6)
w.add_file_type(1)
w.add_tensor("token_embd.weight", mat(vocab, d))
for i in range(n_layer):
    b = f"blk.{i}."
    w.add_tensor(b + "attn_norm.weight", vec(d))
    w.add_tensor(b + "attn_q.weight", mat(nh * hd, d))
    w.add_tensor(b + "attn_k.weight", mat(nkv * hd, d))
    w.add_tensor(b + "attn_v.weight", mat(nkv * hd, d))
    w.add_tensor(b + "attn_q_norm.weight", vec(hd))
    w.add_tensor(b + "attn_k_norm.weight", vec(hd))
    w.add_tensor(b + "attn_output.weight", mat(d, nh * hd))
    w.add_tensor(b + "ffn_norm.weight", vec(d))
    w.add_tensor(b + "ffn_gate.weight", mat(ff, d))
    w.add_tensor(b + "ffn_up.weight", mat(ff, d))
    w.add_tensor(b + "ffn_down.weight", mat(d, ff))
w.add_tensor("output_norm.weight", vec(d))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
