#!/usr/bin/env python3
"""Reference MeKi fold (re-parameterization) of an exported checkpoint, in float32:
  T_l[v] = alpha_l * RMSNorm_mix(M_l[v] + beta_l * G_l(z_v)),  z_v = E[v] (demo) or RMSNorm_G(E[v]) (megatron)
(static-only: no G term; dynamic-only: no M term). Writes one safetensors file with
`model.layers.N.meki_module.table.weight [V, d_mem]` (f32) for every layer, and verifies that the
model run with the folded tables gives the same logits as the training form.
  python3 tools/train/fold.py CKPT_DIR --out folded_tables.safetensors [--rows 0:1000]
A test reference for the Rust converter's fold; not needed for training."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval import load_checkpoint  # noqa: E402


@torch.no_grad()
def fold_tables(model, rows=None):
    E = model.embed_tokens.weight
    ids = torch.arange(E.shape[0]) if rows is None else torch.arange(*rows)
    return [layer.meki_module.memory(ids, E[ids]).float() for layer in model.layers]


def numpy_fold(path, cfg, layer, rows):
    """Independent numpy fold straight from the safetensors tensors (no model.py code)."""
    import glob
    import numpy as np
    from safetensors.numpy import load_file
    sd = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        try:
            sd.update(load_file(f))
        except TypeError:  # bf16 has no numpy dtype: go through torch
            from safetensors.torch import load_file as tload
            sd.update({k: v.float().numpy() for k, v in tload(f).items()})
    f64 = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    p = f"model.layers.{layer}.meki_module."
    eps = cfg.rms_norm_eps

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    E = f64["model.embed_tokens.weight"][rows[0]:rows[1]]
    mem = 0.0
    if p + "embeddings.weight" in f64:
        mem = f64[p + "embeddings.weight"][rows[0]:rows[1]]
    if p + "word_emb_projection.gate_proj.weight" in f64:
        z = rms(E, f64[p + "word_emb_projection.norm.weight"]) if cfg.meki_form == "megatron" else E
        g = z @ f64[p + "word_emb_projection.gate_proj.weight"].T
        u = z @ f64[p + "word_emb_projection.up_proj.weight"].T
        dyn = (g / (1.0 + np.exp(-g)) * u) @ f64[p + "word_emb_projection.down_proj.weight"].T
        mem = mem + f64[p + "beta_scale"] * dyn
    return f64[p + "alpha_scale"] * rms(mem, f64[p + "mix_norm.weight"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", default=None, help="start:end vocabulary rows (default: all)")
    a = ap.parse_args()
    from safetensors.torch import save_file
    model, cfg = load_checkpoint(a.ckpt, "cpu")
    model.eval()
    if cfg.meki_variant == "dense":
        sys.exit("dense checkpoint: nothing to fold")
    rows = tuple(int(x) for x in a.rows.split(":")) if a.rows else None
    tables = fold_tables(model, rows)
    save_file({f"model.layers.{i}.meki_module.table.weight": t.contiguous() for i, t in enumerate(tables)}, a.out,
              metadata={"rows": a.rows or f"0:{cfg.vocab_size}", "meki_form": cfg.meki_form})
    lo = rows[0] if rows else 0
    ref_rows = (lo, lo + min(256, tables[0].shape[0]))
    worst = 0.0
    for i in range(cfg.num_hidden_layers):
        ref = numpy_fold(a.ckpt, cfg, i, ref_rows)
        worst = max(worst, float(abs(tables[i][: ref.shape[0]].double().numpy() - ref).max()))
    print(f"fold: numpy float64 reference vs torch float32 fold, {ref_rows[1] - lo} rows x {cfg.num_hidden_layers} "
          f"layers: max|diff| = {worst:.3e}")
    if worst > 1e-4:
        sys.exit("fold: mismatch with the numpy reference")
    # Check: replace memory() by a table lookup and compare logits on a few tokens.
    if rows is None:
        ids = torch.randint(0, cfg.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = model(ids)
            for layer, t in zip(model.layers, tables):
                layer.meki_module.memory = (lambda tt: (lambda i, _e: tt[i]))(t)
            got = model(ids)
        print(f"fold: wrote {a.out}; max|logits(folded) - logits(training form)| = {(ref - got).abs().max():.3e}")
    else:
        print(f"fold: wrote {a.out} (rows {a.rows})")


if __name__ == "__main__":
    main()
