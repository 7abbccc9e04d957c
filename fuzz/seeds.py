#!/usr/bin/env python3
"""Seed inputs for meki's fuzz targets, from real files, into fuzz/corpus-full/<target>/.

Fuzz from there, then minimize into the committed fuzz/corpus/<target>/ with
`cargo +nightly fuzz cmin` (see fuzz/README.md). Needs gguf==0.19.0 + numpy and
the llama.cpp source (MEKI_LLAMA_CPP, default target/ext/.../llama.cpp).
"""
import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parent.parent
LLAMA = Path(os.environ.get("MEKI_LLAMA_CPP",
                            ROOT / "target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp"))
OUT = ROOT / "fuzz/corpus-full"
FIX = ROOT / "tests/fixtures"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def gguf_bytes(build):
    """Runs build(writer) on a GGUFWriter and returns the file's bytes."""
    path = OUT / "tmp.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    b = path.read_bytes()
    path.unlink()
    return b


def small_vocab(name, n_tokens, n_merges):
    """The first tokens (and merges among them) of a llama.cpp vocab GGUF."""
    r = gguf.GGUFReader(str(LLAMA / f"models/ggml-vocab-{name}.gguf"))

    def arr(key):
        f = r.fields.get(key)
        if f is None:
            return None
        return [f.contents(i) for i in range(len(f.data))] if hasattr(f, "contents") else None

    def build(w):
        for key, f in r.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            if f.types[0] == gguf.GGUFValueType.ARRAY:
                vals = f.contents()
                keep = n_merges if key.endswith("merges") else n_tokens
                w.add_key_value(key, vals[:keep], f.types[0], sub_type=f.types[1])
            else:
                w.add_key_value(key, f.contents(), f.types[0])
        w.add_chat_template("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}")
    return gguf_bytes(build)


def synthetic_gguf():
    """Every value type, nested arrays, and tensors of several ggml types."""
    def build(w):
        w.add_uint8("t.u8", 7)
        w.add_int8("t.i8", -7)
        w.add_uint16("t.u16", 700)
        w.add_int16("t.i16", -700)
        w.add_uint32("t.u32", 70000)
        w.add_int32("t.i32", -70000)
        w.add_float32("t.f32", 0.5)
        w.add_uint64("t.u64", 1 << 40)
        w.add_int64("t.i64", -(1 << 40))
        w.add_float64("t.f64", 0.25)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "héllo")
        w.add_array("t.arr_str", ["a", "bc", ""])
        w.add_array("t.arr_i32", [1, -2, 3])
        w.add_array("t.nested", [[1, 2], [3]])
        w.add_uint32("general.alignment", 64)
        w.add_tensor("f32", np.arange(8, dtype=np.float32).reshape(2, 4))
        w.add_tensor("f16", np.arange(32, dtype=np.float16))
        q8 = np.zeros((2, 34), dtype=np.uint8)
        w.add_tensor("q8_0", q8, raw_shape=(2, 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        q4k = np.zeros((1, 144), dtype=np.uint8)
        w.add_tensor("q4_k", q4k, raw_shape=(1, 144), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        w.add_tensor("scalar", np.ones((1,), dtype=np.float32))
    return gguf_bytes(build)


def safetensors_bytes(tensors):
    header, blobs, off = {}, [], 0
    for name, arr, dtype in tensors:
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def tiny_checkpoint(form, dtype):
    """A one-layer qwen3 (MeKi demo/static form, or none) of width 8."""
    v, d, ff, nh, nkv, hd, dm = 16, 8, 12, 2, 1, 4, 4
    cfg = {"model_type": "qwen3", "vocab_size": v, "hidden_size": d, "intermediate_size": ff,
           "num_hidden_layers": 1, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "head_dim": hd, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "max_position_embeddings": 64, "tie_word_embeddings": True,
           "bos_token_id": 1, "eos_token_id": 2}
    rng = np.random.default_rng(1)
    np_dtype = {"F32": np.float32, "F16": np.float16}.get(dtype, np.float32)

    def t(shape):
        return rng.standard_normal(shape).astype(np_dtype)
    p = "model.layers.0."
    ts = [("model.embed_tokens.weight", t((v, d))), ("model.norm.weight", t((d,))),
          (p + "input_layernorm.weight", t((d,))), (p + "post_attention_layernorm.weight", t((d,))),
          (p + "self_attn.q_proj.weight", t((nh * hd, d))), (p + "self_attn.k_proj.weight", t((nkv * hd, d))),
          (p + "self_attn.v_proj.weight", t((nkv * hd, d))), (p + "self_attn.o_proj.weight", t((d, nh * hd))),
          (p + "self_attn.q_norm.weight", t((hd,))), (p + "self_attn.k_norm.weight", t((hd,))),
          (p + "mlp.gate_proj.weight", t((ff, d))), (p + "mlp.up_proj.weight", t((ff, d))),
          (p + "mlp.down_proj.weight", t((d, ff)))]
    if form:
        cfg.update({"meki_dim": dm, "meki_form": form})
        m = p + "meki_module."
        ts += [(m + "alpha_scale", t(())), (m + "beta_scale", t(())),
               (m + "embeddings.weight", t((v, dm))), (m + "gate_proj.weight", t((dm, d))),
               (m + "mix_norm.weight", t((dm,))), (m + "out_proj.weight", t((d, dm))),
               (m + "post_norm.weight", t((d,)))]
        if form == "demo":
            w = m + "word_emb_projection."
            ts += [(w + "gate_proj.weight", t((d // 2, d))), (w + "up_proj.weight", t((d // 2, d))),
                   (w + "down_proj.weight", t((dm, d // 2)))]
    st = safetensors_bytes([(n, a, dtype) for n, a in ts])
    c = json.dumps(cfg).encode()
    return struct.pack("<H", len(c)) + c + st


def main():
    # gguf: small real vocabularies, a synthetic file of every type.
    put("gguf", "llama-spm-300", small_vocab("llama-spm", 300, 0))
    put("gguf", "gpt-2-300", small_vocab("gpt-2", 300, 200))
    put("gguf", "qwen2-300", small_vocab("qwen2", 300, 200))
    put("gguf", "synthetic", synthetic_gguf())
    # checkpoint: tiny HF directories, and the fixtures' config.json files.
    for form in ["demo", "static", None]:
        for dt in ["F32", "F16"]:
            put("checkpoint", f"tiny-{form}-{dt}", tiny_checkpoint(form, dt))
    for d in ["hf_demo", "hf_static", "hf_megatron_dynamic"]:
        c = (FIX / "meki" / d / "config.json").read_bytes()
        put("checkpoint", f"config-{d}", struct.pack("<H", len(c)) + c)
    # torch: the fixtures' pickles, and the bf16 checkpoint with its storages cut short.
    for pt in [FIX / "meki/megatron_torch_bf16/model_optim_rng.pt",
               FIX / "meki/megatron/iter_0000010/mp_rank_00/model_optim_rng.pt"]:
        z = zipfile.ZipFile(pt)
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        put("torch", f"pickle-{pt.parent.name}", z.read(pkl))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
            for info in z.infolist():
                data = z.read(info)
                if "/data/" in info.filename:
                    data = data[:64]
                out.writestr(info.filename, data)
        put("torch", f"zip-short-{pt.parent.name}", buf.getvalue())
    # tokenizer: the golden prompts, one vocab each (selector byte: vocab << 4 | flags).
    prompts = (FIX / "tokenizer/prompts.txt").read_text().split("\n__ggml_vocab_test__\n")
    rnd = (FIX / "tokenizer/random.txt").read_bytes()
    for i, p in enumerate(p for p in prompts if p):
        put("tokenizer", f"prompt-{i}", bytes([(i % 8) << 4 | (i % 16)]) + p.encode()[:2000])
    for i in range(8):
        put("tokenizer", f"random-{i}", bytes([i << 4 | 3]) + rnd[i * 500:(i + 1) * 500])
    # chat_template: llama.cpp's collection of real templates.
    for f in sorted((LLAMA / "models/templates").glob("*.jinja")):
        put("chat_template", f.stem, f.read_bytes())


if __name__ == "__main__":
    sys.exit(main())
