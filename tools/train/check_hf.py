#!/usr/bin/env python3
"""Independent check of the backbone: load an exported DENSE checkpoint with HF transformers'
Qwen3ForCausalLM and compare its logits with tools/train/model.py on the same tokens (f32).
  python3 tools/train/check_hf.py CKPT_DIR [--tokens valid.npy]
Needs `transformers` (present on the GPU machine). Prints max |diff| and exits 1 above 1e-3."""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval import load_checkpoint  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--tokens", default=None)
    ap.add_argument("--n", type=int, default=256)
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    ours, cfg = load_checkpoint(a.ckpt, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(a.ckpt, torch_dtype=torch.float32, attn_implementation="eager")
    hf.eval()
    ours.eval()
    if a.tokens:
        ids = torch.as_tensor(np.load(a.tokens)[: 2 * a.n].astype(np.int64)).view(2, a.n)
    else:
        ids = torch.randint(0, cfg.vocab_size, (2, a.n), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        l_ours = ours(ids)
        l_hf = hf(input_ids=ids).logits
    d = (l_ours - l_hf).abs().max().item()
    print(f"check_hf: max|logits diff| = {d:.3e} over {tuple(ids.shape)} tokens; "
          f"logit scale {l_hf.abs().max().item():.2f}")
    sys.exit(0 if d < 1e-3 else 1)


if __name__ == "__main__":
    main()
