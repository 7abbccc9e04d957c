#!/usr/bin/env python3
"""Sample text from an exported checkpoint (f32, CPU by default); qualitative check only.
  python3 tools/train/generate.py CKPT_DIR --prompt "The meaning of" [--n 60] [--temp 0.8] [--top-k 40]
--temp 0 is greedy. Stops at <|endoftext|>."""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval import load_checkpoint  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.ckpt, "tokenizer.json"))
    eos = json.load(open(os.path.join(a.ckpt, "config.json")))["eos_token_id"]
    model, cfg = load_checkpoint(a.ckpt, a.device)
    model.eval()
    g = torch.Generator().manual_seed(a.seed)
    ids = tok.encode(a.prompt, add_special_tokens=False).ids
    with torch.no_grad():
        for _ in range(a.n):
            x = torch.tensor([ids[-cfg.max_position_embeddings:]], device=a.device)
            logits = model(x)[0, -1].float().cpu()
            if a.temp <= 0:
                nxt = int(logits.argmax())
            else:
                v, i = logits.topk(a.top_k)
                nxt = int(i[torch.multinomial((v / a.temp).softmax(-1), 1, generator=g)])
            if nxt == eos:
                break
            ids.append(nxt)
    print(tok.decode(ids))


if __name__ == "__main__":
    main()
