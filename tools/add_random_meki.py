#!/usr/bin/env python3
"""Add random MeKi tensors and keys to a backbone GGUF (for speed benchmarks).

  tools/add_random_meki.py BACKBONE.gguf OUT.gguf [--d-mem 128] [--table-type f16|f32]
      [--proj-type auto|f32|f16|q8_0|q4_0|q4_k_m|...] [--seed 0]

The output is the backbone (every key and tensor copied as is) plus a token-major
`meki_table.weight` of random rows, and per layer `meki_gate`, `meki_out` and
`meki_post_norm` (F32), with the `meki.*` keys of src/meki/mod.rs. Numbers are
random: the file measures the cost of the MeKi branch, not its quality.

The projections get the types `meki-convert checkpoint --type T` gives them:
with `--proj-type auto` (default) T is the backbone's `general.file_type`, and
the projections are quantized by `meki-convert quantize` itself (llama.cpp's mix
rules, e.g. Q4_K_M: gate Q4_K, out Q5_0 since d_mem is not a multiple of 256),
found at $MEKI_CONVERT or target/release/meki-convert.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("add_random_meki.py needs the gguf package: pip install gguf==0.19.0")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backbone")
    ap.add_argument("out")
    ap.add_argument("--d-mem", type=int, default=128)
    ap.add_argument("--table-type", choices=["f16", "f32"], default="f16")
    ap.add_argument("--proj-type", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    r = gguf.GGUFReader(a.backbone)
    arch = r.fields["general.architecture"].contents()
    n_layer = int(r.fields[f"{arch}.block_count"].contents())
    d = int(r.fields[f"{arch}.embedding_length"].contents())
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    n_vocab = int(emb.shape[1])
    dm = a.d_mem
    rng = np.random.default_rng(a.seed)

    tmp = a.out + ".tmp"
    w = gguf.GGUFWriter(tmp, arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            vals = field.contents()
            w.add_array(name, vals)
        else:
            w.add_key_value(name, field.contents(), vtype)
    w.add_uint32("meki.version", 1)
    w.add_string("meki.form", "demo")
    w.add_string("meki.gate_input", "ffn_norm")
    w.add_uint32("meki.dim", dm)
    w.add_uint32("meki.n_layer", n_layer)
    w.add_uint32("meki.n_vocab", n_vocab)
    w.add_string("meki.table_layout", "token_major")
    w.add_string("meki.variant", "both")
    for t in r.tensors:
        # raw bytes with the ggml type and shape of the backbone file
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    tdtype = np.float16 if a.table_type == "f16" else np.float32
    table = (0.5 * rng.standard_normal((n_vocab, n_layer * dm), dtype=np.float32)).astype(tdtype)
    w.add_tensor("meki_table.weight", table)
    proj = {}
    for i in range(n_layer):
        proj[f"blk.{i}.meki_gate.weight"] = (rng.standard_normal((dm, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
        proj[f"blk.{i}.meki_out.weight"] = (rng.standard_normal((d, dm), dtype=np.float32) / np.sqrt(dm)).astype(np.float32)
    ptype = a.proj_type
    if ptype == "auto":
        ft = int(r.fields["general.file_type"].contents()) if "general.file_type" in r.fields else 0
        ptype = FILE_TYPES.get(ft)
        if ptype is None:
            sys.exit(f"general.file_type {ft} has no meki-convert name; pass --proj-type")
    for name, (data, raw) in quantized(proj, arch, n_layer, ptype).items():
        w.add_tensor(name, data, raw_dtype=raw)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.meki_post_norm.weight", np.full(d, 0.1, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {n_layer} layers x d_mem {dm}, table {n_vocab} x {n_layer * dm} {a.table_type}")


# general.file_type (llama_ftype) -> meki-convert / llama-quantize name
FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1",
              14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16"}


def quantized(tensors, arch, n_layer, ptype):
    """name -> (raw data, ggml type) of `tensors` (f32) as `meki-convert quantize --type ptype` writes them."""
    if ptype == "f32":
        return {k: (v, None) for k, v in tensors.items()}
    here = os.path.dirname(os.path.abspath(__file__))
    exe = os.environ.get("MEKI_CONVERT") or os.path.join(here, "..", "target", "release", "meki-convert")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.gguf"), os.path.join(tmp, "out.gguf")
        w = gguf.GGUFWriter(src, arch)
        w.add_uint32(f"{arch}.block_count", n_layer)
        for k, v in tensors.items():
            w.add_tensor(k, v)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        p = subprocess.run([exe, "quantize", src, dst, ptype], stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit(f"{exe} quantize failed: {p.stderr[-2000:]}")
        out = {}
        for t in gguf.GGUFReader(dst).tensors:
            out[t.name] = (np.array(t.data), t.tensor_type)
        return out


if __name__ == "__main__":
    main()
