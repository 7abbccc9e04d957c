#!/usr/bin/env python3
"""PyTorch validation perplexity of an exported checkpoint directory (the cross-check for
`meki-run perplexity`).

  python3 tools/train/eval.py CKPT_DIR --text target/corpus/valid.txt [--ctx 512] [--device cpu]

Loads config.json + model.safetensors (or the sharded model-*-of-*.safetensors with
model.safetensors.index.json), tokenizes --text as ONE string with the checkpoint's own
tokenizer.json (no special tokens added: add_bos_token is false), computes in float32 (weights
upcast from their stored dtype) and prints JSON with both scorings:
  val_ppl       every position of each non-overlapping ctx-token chunk scored
  val_ppl_half  llama-perplexity style: only the second half of each chunk scored
--tokens FILE.npy evaluates a pre-tokenized stream instead of --text.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Model, evaluate  # noqa: E402


def load_checkpoint(path, device="cpu"):
    from safetensors.torch import load_file
    cfg = Config.from_hf(json.load(open(os.path.join(path, "config.json"))))
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(path, f)))
    model = Model(cfg)
    model.load_hf_state_dict({k: v.float() for k, v in sd.items()})
    return model.to(device), cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--text")
    g.add_argument("--tokens")
    ap.add_argument("--ctx", type=int, default=None, help="default: max_position_embeddings")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-chunks", type=int, default=None, help="evaluate only the first N chunks")
    ap.add_argument("--dump-logits", default=None, help="also save f32 logits [n, V] of the first --dump-n tokens (.npy)")
    ap.add_argument("--dump-n", type=int, default=32)
    a = ap.parse_args()
    model, cfg = load_checkpoint(a.ckpt, a.device)
    ctx = a.ctx or cfg.max_position_embeddings
    if a.text:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(a.ckpt, "tokenizer.json"))
        ids = np.asarray(tok.encode(open(a.text, encoding="utf-8").read(), add_special_tokens=False).ids)
    else:
        ids = np.load(a.tokens).astype(np.int64)
    if a.max_chunks:
        ids = ids[: a.max_chunks * ctx]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if a.dump_logits:
        x = torch.as_tensor(ids[: a.dump_n].astype(np.int64))[None].to(a.device)
        with torch.no_grad():
            np.save(a.dump_logits, model(x)[0].float().cpu().numpy())
        np.save(os.path.splitext(a.dump_logits)[0] + "_tokens.npy", ids[: a.dump_n].astype(np.int32))
    ev = evaluate(model, ids, ctx, a.device, batch=a.batch, autocast_dtype=None)
    ev.update({"ckpt": a.ckpt, "n_tokens": int(len(ids)), "compute": "float32", "variant": cfg.meki_variant,
               "meki_form": cfg.meki_form})
    print(json.dumps(ev, indent=1))


if __name__ == "__main__":
    main()
