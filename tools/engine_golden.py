#!/usr/bin/env python3
"""Regenerate tests/fixtures/engine/golden.json: llama.cpp's answers on random models.

For every model spec below this script
  1. makes the F32 random model with tools/make_random_model.py (seeded),
  2. quantizes it with meki-convert (byte-identical to llama-quantize, which
     tests/quant_golden.rs proves) for the quantized variants,
  3. runs llama.cpp's llama-perplexity and llama-completion (--temp 0) on it,
and records each file's sha256 with the results. tests/engine_golden.rs rebuilds
the same files, checks the hashes, and compares meki-run's answers.

  tools/engine_golden.py [--bin DIR_OF_LLAMA_CPP_TOOLS] [--only NAME]

Needs llama.cpp's tools (tools/llamacpp.sh build) and a release build of meki.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEXT = os.path.join(ROOT, "tests", "fixtures", "text", "gpl3-excerpt.txt")
OUT = os.path.join(ROOT, "tests", "fixtures", "engine", "golden.json")
WORK = os.path.join(ROOT, "target", "golden")
PROMPT = "The license is"
N_PREDICT = 64
PPL_CTX = 128

# name: (make_random_model flags, quantization or None)
BASE = {
    "qwen3-gqa2-hd64": "--arch qwen3 --layers 2 --d 128 --ffn 256 --heads 4 --kv-heads 2 --head-dim 64 --seed 1",
    "qwen3-gqa4-hd128-tied": "--arch qwen3 --layers 2 --d 256 --ffn 384 --heads 8 --kv-heads 2 --head-dim 128 --tied --seed 2",
    "llama-gqa1-hd64": "--arch llama --layers 2 --d 128 --ffn 256 --heads 2 --kv-heads 2 --head-dim 64 --seed 3",
    "llama-spm-gqa2-tied": "--arch llama --vocab-name llama-spm --layers 2 --d 128 --ffn 256 --heads 4 --kv-heads 2 --head-dim 32 --tied --seed 4",
}
VARIANTS = [
    ("qwen3-gqa2-hd64", "f32", None),
    ("qwen3-gqa2-hd64", "f16", None),
    ("qwen3-gqa2-hd64", "q8_0", "q8_0"),
    ("qwen3-gqa2-hd64", "q4_0", "q4_0"),
    ("qwen3-gqa4-hd128-tied", "f32", None),
    ("qwen3-gqa4-hd128-tied", "q4_k_m", "q4_k_m"),
    ("llama-gqa1-hd64", "f32", None),
    ("llama-gqa1-hd64", "f16", None),
    ("llama-spm-gqa2-tied", "f32", None),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_model(base, ftype, quant, meki_convert):
    """Create (or reuse) the model file of one variant; return its path."""
    os.makedirs(WORK, exist_ok=True)
    src_type = "f16" if ftype == "f16" else "f32"
    src = os.path.join(WORK, f"{base}-{src_type}.gguf")
    if not os.path.exists(src):
        flags = BASE[base].split() + ["--type", src_type]
        subprocess.run([sys.executable, os.path.join(HERE, "make_random_model.py"), src] + flags, check=True)
    if quant is None:
        return src
    out = os.path.join(WORK, f"{base}-{quant}.gguf")
    if not os.path.exists(out):
        subprocess.run([meki_convert, "quantize", src, out, quant], check=True, stderr=subprocess.DEVNULL)
    return out


def llama_perplexity(bindir, model):
    r = subprocess.run(
        [os.path.join(bindir, "llama-perplexity"), "-m", model, "-f", TEXT, "-c", str(PPL_CTX), "-b", str(PPL_CTX),
         "-t", "2", "--no-warmup"],
        capture_output=True, text=True, check=True)
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", r.stdout + r.stderr)
    if not m:
        sys.exit(f"no PPL in llama-perplexity output:\n{r.stderr[-2000:]}")
    return float(m.group(1))


def llama_completion(bindir, model, kv):
    r = subprocess.run(
        [os.path.join(bindir, "llama-completion"), "-m", model, "-p", PROMPT, "-n", str(N_PREDICT), "--temp", "0",
         "--ignore-eos", "-no-cnv", "--simple-io", "-t", "2", "-c", "256", "-ctk", kv, "-ctv", kv,
         "--no-warmup", "--no-display-prompt"],
        capture_output=True, check=True, stdin=subprocess.DEVNULL)
    # Raw bytes as hex: a token may end inside a UTF-8 sequence, and llama.cpp
    # prints pieces byte for byte.
    out = r.stdout
    # llama-completion ends its output with a blank line of its own.
    if out.endswith(b"\n\n"):
        out = out[:-2]
    return out.hex()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "ext", "build-avx2", "bin"))
    ap.add_argument("--meki-convert", default=os.path.join(ROOT, "target", "release", "meki-convert"))
    ap.add_argument("--only")
    a = ap.parse_args()
    golden = {"prompt": PROMPT, "n_predict": N_PREDICT, "ppl_ctx": PPL_CTX, "text": os.path.relpath(TEXT, ROOT),
              "models": {}}
    if a.only and os.path.exists(OUT):
        golden = json.load(open(OUT))
    for base, ftype, quant in VARIANTS:
        name = f"{base}-{ftype}"
        if a.only and a.only != name:
            continue
        path = build_model(base, ftype, quant, a.meki_convert)
        entry = {
            "base": base,
            "make_flags": BASE[base],
            "source_type": "f16" if ftype == "f16" else "f32",
            "quantize": quant,
            "sha256": sha256(path),
            "ppl": llama_perplexity(a.bin, path),
            "completion_f32_kv_hex": llama_completion(a.bin, path, "f32"),
            "completion_f16_kv_hex": llama_completion(a.bin, path, "f16"),
        }
        golden["models"][name] = entry
        print(f"{name}: PPL {entry['ppl']:.4f}", file=sys.stderr)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".tmp", "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(OUT + ".tmp", OUT)


if __name__ == "__main__":
    main()
