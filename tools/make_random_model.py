#!/usr/bin/env python3
"""Make a random-weight GGUF model that llama.cpp and meki-run both load.

The tokenizer metadata is copied from one of llama.cpp's vocab files
(models/ggml-vocab-*.gguf), so the model has a real vocabulary; the weights are
seeded Gaussian noise scaled so that logits are well separated (greedy decoding
then has no near-ties, which makes token-for-token comparisons meaningful).

  tools/make_random_model.py OUT.gguf --arch qwen3 --layers 2 --d 256 --ffn 512 \
      --heads 4 --kv-heads 2 --head-dim 64 [--tied] [--type f32|f16] [--seed 0]

Shapes follow llama.cpp's conventions: a weight of ggml shape [ne0=in, ne1=out] is
a numpy array of shape (out, in).
"""
import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_random_model.py needs the gguf package: pip install gguf==0.19.0")

VOCABS = {"qwen3": "qwen2", "qwen2": "qwen2", "llama": "llama-bpe"}


def llama_cpp_dir():
    d = os.environ.get("MEKI_LLAMA_CPP")
    if d:
        return d
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "target", "ext", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")


def copy_tokenizer(writer, vocab_path):
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = None
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            vals = field.contents()
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(vals)
            writer.add_array(name, vals) if sub != gguf.GGUFValueType.STRING else writer.add_array(name, [str(v) for v in vals])
        else:
            writer.add_key_value(name, field.contents(), vtype)
    return n_vocab


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--arch", choices=sorted(VOCABS), default="qwen3")
    ap.add_argument("--vocab", help="vocab GGUF to copy the tokenizer from (default: llama.cpp's for the arch)")
    ap.add_argument("--vocab-name", help="name of one of llama.cpp's models/ggml-vocab-NAME.gguf (e.g. llama-spm)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d", type=int, default=256, help="model width")
    ap.add_argument("--ffn", type=int, default=512, help="FFN width")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=4096, help="context_length written to metadata")
    ap.add_argument("--rope-base", type=float, default=1000000.0)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--tied", action="store_true", help="no output.weight: the head reuses token_embd")
    ap.add_argument("--type", choices=["f32", "f16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    vocab_name = a.vocab_name or VOCABS[a.arch]
    vocab_path = a.vocab or os.path.join(llama_cpp_dir(), "models", f"ggml-vocab-{vocab_name}.gguf")
    rng = np.random.default_rng(a.seed)
    wdtype = np.float32 if a.type == "f32" else np.float16
    arch = a.arch
    tmp = a.out + ".tmp"
    w = gguf.GGUFWriter(tmp, arch)
    w.add_name(f"random-{arch}-{a.layers}x{a.d}")
    w.add_file_type(0 if a.type == "f32" else 1)
    n_vocab = copy_tokenizer(w, vocab_path)
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.d)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_key_length(a.head_dim)
    w.add_value_length(a.head_dim)
    w.add_rope_freq_base(a.rope_base)
    w.add_layer_norm_rms_eps(a.eps)
    if arch == "llama":
        w.add_rope_dimension_count(a.head_dim)
        w.add_vocab_size(n_vocab)

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * (gain / np.sqrt(cols))).astype(wdtype)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    d, hd, nq, nkv = a.d, a.head_dim, a.heads, a.kv_heads
    # The first RMSNorm rescales embedding rows, so their scale only matters
    # when the head is tied: then it sets the logit spread (std ~4, like the
    # untied head's gain below), which keeps greedy decoding free of ties
    # without collapsing onto one token.
    emb_std = 4.0 / np.sqrt(d) if a.tied else 1.0
    w.add_tensor("token_embd.weight", (emb_std * rng.standard_normal((n_vocab, d), dtype=np.float32)).astype(wdtype))
    for i in range(a.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(d))
        w.add_tensor(p + "attn_q.weight", mat(nq * hd, d))
        w.add_tensor(p + "attn_k.weight", mat(nkv * hd, d))
        w.add_tensor(p + "attn_v.weight", mat(nkv * hd, d))
        if arch == "qwen2":
            w.add_tensor(p + "attn_q.bias", (0.1 * rng.standard_normal(nq * hd, dtype=np.float32)))
            w.add_tensor(p + "attn_k.bias", (0.1 * rng.standard_normal(nkv * hd, dtype=np.float32)))
            w.add_tensor(p + "attn_v.bias", (0.1 * rng.standard_normal(nkv * hd, dtype=np.float32)))
        if arch == "qwen3":
            w.add_tensor(p + "attn_q_norm.weight", norm(hd))
            w.add_tensor(p + "attn_k_norm.weight", norm(hd))
        w.add_tensor(p + "attn_output.weight", mat(d, nq * hd, 0.5))
        w.add_tensor(p + "ffn_norm.weight", norm(d))
        w.add_tensor(p + "ffn_gate.weight", mat(a.ffn, d))
        w.add_tensor(p + "ffn_up.weight", mat(a.ffn, d))
        w.add_tensor(p + "ffn_down.weight", mat(d, a.ffn, 0.5))
    w.add_tensor("output_norm.weight", norm(d))
    if not a.tied:
        # A head with gain 4 spreads the logits over several units.
        w.add_tensor("output.weight", mat(n_vocab, d, 4.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {arch}, {a.layers} layers, d={d}, ffn={a.ffn}, heads {nq}/{nkv}x{hd}, "
          f"vocab {n_vocab}, {'tied' if a.tied else 'untied'}, {a.type}")


if __name__ == "__main__":
    main()
