#!/usr/bin/env python3
"""Reference trainer for small Qwen3-style models with or without the MeKi branch.

  python3 tools/train/train.py --data target/corpus/tok --out target/runs/meki \
      --variant meki --meki-form demo --tokens 40000000

Data: <data>/train.npy and valid.npy (uint16 token streams from tools/corpus/train_tokenizer.py),
<data>/tokenizer.json, tokenizer_config.json (copied into the exported checkpoint).
The training stream is cut into non-overlapping windows of --seq+1 tokens... (seq tokens of
input, targets shifted by one); windows are visited in a permutation drawn from --data-seed
(a new permutation per epoch), so every variant sees the same token stream regardless of --seed,
which only sets the weight init.
Optimizer: AdamW(0.9, 0.95), eps 1e-8, weight decay 0.1 on 2-D weight matrices only (not on
norms, alpha/beta scalars, the word embedding or the MeKi tables: table rows are touched only
when their token occurs, decoupled decay would erode rare rows every step), grad clip 1.0,
linear warm-up then cosine decay to 10% of the peak LR; bf16 autocast with f32 master weights.
At the end: validation loss/ppl on valid.npy (both scorings, see model.evaluate), an HF-style
export (see export()), and metrics.json.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Model, evaluate  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", choices=["dense", "meki", "static", "dynamic"], default="dense")
    ap.add_argument("--meki-form", choices=["demo", "megatron"], default="demo")
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=1152)
    ap.add_argument("--d-mem", type=int, default=64)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--tokens", type=float, default=None, help="training tokens (rounded to whole steps)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--micro-batch", type=int, default=None,
                    help="sequences per forward/backward (gradient accumulation up to --batch; less GPU memory)")
    # Training-only regularizers and init: none of them changes the exported format (dropout vanishes
    # at export; table decay / LR only change the trained values).
    ap.add_argument("--dropout", type=float, default=0.0, help="residual dropout on attention, FFN and MeKi outputs")
    ap.add_argument("--mem-dropout", type=float, default=0.0, help="dropout on the looked-up MeKi table row M[x]")
    ap.add_argument("--table-wd", type=float, default=0.0, help="decoupled weight decay on the MeKi tables M")
    ap.add_argument("--table-lr-mult", type=float, default=1.0, help="LR multiplier for the MeKi tables M")
    ap.add_argument("--branch-init", type=float, default=1.0, help="init of each MeKi post_norm weight")
    ap.add_argument("--init-order", choices=["paired", "legacy"], default="paired",
                    help="paired: MeKi params drawn from their own generator, the backbone starts as the dense "
                         "twin's (legacy: one generator; how the first results table was trained)")
    ap.add_argument("--seed", type=int, default=1, help="weight init seed")
    ap.add_argument("--data-seed", type=int, default=0, help="data order seed (keep equal across variants)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-autocast", action="store_true", help="train in f32 (CPU tests)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--export-dtype", choices=["f32", "bf16"], default="bf16")
    ap.add_argument("--shard-mb", type=float, default=15.0)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--max-eval-chunks", type=int, default=None, help="evaluate only the first N chunks (tests)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--time-limit", type=float, default=None, help="stop early after this many seconds")
    return ap.parse_args(argv)


def make_config(a, vocab):
    return Config(vocab_size=vocab, hidden_size=a.d_model, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
                  rope_theta=a.rope_theta, max_position_embeddings=a.seq,
                  meki_dim=a.d_mem if a.variant != "dense" else 0, meki_form=a.meki_form, meki_variant=a.variant)


class Batches:
    """Deterministic window order: epoch e visits windows in rng(data_seed, e).permutation."""

    def __init__(self, tokens, seq, batch, data_seed):
        self.tokens, self.seq, self.batch, self.seed = tokens, seq, batch, data_seed
        self.n = (len(tokens) - 1) // seq
        self.order = np.empty(0, dtype=np.int64)
        self.epoch = 0

    def get(self, step):
        need = (step + 1) * self.batch
        while self.order.size < need:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            self.order = np.concatenate([self.order, perm])
            self.epoch += 1
        idx = self.order[step * self.batch: need]
        starts = idx * self.seq
        win = np.stack([self.tokens[s: s + self.seq + 1] for s in starts]).astype(np.int64)
        return torch.from_numpy(win)


def param_groups(model, wd, table_wd=0.0, table_lr_mult=1.0):
    """Groups carry an "lr_mult" that the schedule multiplies into the LR."""
    decay, no_decay, tables = [], [], []
    for n, p in model.named_parameters():
        if n.endswith("meki_module.embeddings.weight"):
            tables.append(p)
        elif p.dim() >= 2 and not n.endswith("embed_tokens.weight"):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": wd, "lr_mult": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}]
    if tables:
        groups.append({"params": tables, "weight_decay": table_wd, "lr_mult": table_lr_mult})
    return groups


def lr_at(step, total, peak, warmup, min_frac):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def export(model, out_dir, data_dir, dtype, shard_mb, eos_id):
    """HF-style checkpoint: config.json, model.safetensors (or model-0000i-of-0000n.safetensors +
    model.safetensors.index.json above shard_mb), tokenizer.json, tokenizer_config.json."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    tdt = torch.float32 if dtype == "f32" else torch.bfloat16
    sd = {k: v.detach().to("cpu", tdt).contiguous() for k, v in model.hf_state_dict().items()}
    cfg = model.config.to_hf(eos_id)
    cfg["torch_dtype"] = "float32" if dtype == "f32" else "bfloat16"
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(data_dir, fn), os.path.join(out_dir, fn))
    total = sum(v.numel() * v.element_size() for v in sd.values())
    limit = int(shard_mb * 1e6)
    meta = {"format": "pt"}
    if total <= limit:
        save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return
    shards, cur, size = [], {}, 0
    for k in sorted(sd):  # deterministic order; a tensor never spans shards
        nb = sd[k].numel() * sd[k].element_size()
        if cur and size + nb > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = sd[k]
        size += nb
    shards.append(cur)
    weight_map = {}
    for i, sh in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, os.path.join(out_dir, name), metadata=meta)
        weight_map.update({k: name for k in sh})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)


def main(argv=None):
    a = parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    train_tok = np.load(os.path.join(a.data, "train.npy"), mmap_mode="r")
    valid_tok = np.load(os.path.join(a.data, "valid.npy"))
    if a.max_eval_chunks:
        valid_tok = valid_tok[: a.max_eval_chunks * a.seq]
    tokinfo = json.load(open(os.path.join(a.data, "tokens.json")))
    vocab, eos = tokinfo["vocab_size"], tokinfo["eos_id"]
    cfg = make_config(a, vocab)
    torch.manual_seed(a.seed)
    model = Model(cfg)
    model.init_weights(a.seed, paired=a.init_order == "paired", branch_init=a.branch_init)
    for layer in model.layers:
        layer.dropout = a.dropout
        if layer.meki_module is not None:
            layer.meki_module.mem_dropout = a.mem_dropout
    model.to(a.device)
    counts = model.param_counts()
    tokens_per_step = a.batch * a.seq
    mb = a.micro_batch or a.batch
    if a.batch % mb:
        raise SystemExit("--batch must be a multiple of --micro-batch")
    n_micro = a.batch // mb
    steps = a.steps if a.steps is not None else int(math.ceil(a.tokens / tokens_per_step))
    use_fused = a.device.startswith("cuda")
    opt = torch.optim.AdamW(param_groups(model, a.wd, a.table_wd, a.table_lr_mult), lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if use_fused else {}))
    amp = None if a.no_autocast else torch.bfloat16
    dev_type = a.device.split(":")[0]
    fwd = torch.compile(model) if a.compile else model
    batches = Batches(train_tok, a.seq, a.batch, a.data_seed)
    print(json.dumps({"run": os.path.basename(a.out.rstrip("/")), "config": cfg.__dict__, **counts,
                      "steps": steps, "tokens_per_step": tokens_per_step}), flush=True)
    t0 = time.time()
    tw = None  # time after warm-up/compile (first 10 steps), for tokens/s
    log = []
    step = 0
    loss_ema = None
    for step in range(steps):
        lr = lr_at(step, steps, a.lr, a.warmup, a.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        win = batches.get(step).to(a.device, non_blocking=True)
        loss = 0.0
        for i in range(0, a.batch, mb):  # equal micro-batches: the mean of their means is the batch mean
            x, y = win[i:i + mb, :-1], win[i:i + mb, 1:]
            with torch.autocast(device_type=dev_type, dtype=amp, enabled=amp is not None):
                logits = fwd(x)
            lm = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), y.reshape(-1)) / n_micro
            lm.backward()
            loss = loss + lm.detach()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 9:
            if dev_type == "cuda":
                torch.cuda.synchronize()
            tw = time.time()
        if step % a.log_every == 0 or step == steps - 1:
            l = loss.item()
            loss_ema = l if loss_ema is None else 0.9 * loss_ema + 0.1 * l
            el = time.time() - t0
            rec = {"step": step, "loss": round(l, 4), "lr": lr, "gnorm": round(float(gn), 3), "elapsed": round(el, 1)}
            log.append(rec)
            print(json.dumps(rec), flush=True)
        if a.time_limit and time.time() - t0 > a.time_limit:
            print(f"time limit reached at step {step}", flush=True)
            break
    if dev_type == "cuda":
        torch.cuda.synchronize()
    t_train = time.time() - t0
    steps_done = step + 1
    tok_s = (steps_done - 10) * tokens_per_step / (time.time() - tw) if tw and steps_done > 10 else None
    ev = evaluate(model, valid_tok, a.seq, a.device, batch=a.eval_batch, autocast_dtype=amp)
    print(json.dumps(ev), flush=True)
    ck = os.path.join(a.out, "checkpoint")
    export(model, ck, a.data, a.export_dtype, a.shard_mb, eos)
    metrics = {"run": os.path.basename(a.out.rstrip("/")), "variant": a.variant, "meki_form": a.meki_form,
               "seed": a.seed, "data_seed": a.data_seed, **counts, "tokens_trained": steps_done * tokens_per_step,
               "steps": steps_done, "wall_s_train": round(t_train, 1), "tokens_per_s": tok_s,
               "final_train_loss": log[-1]["loss"] if log else None, **ev,
               "max_gpu_mem_gb": (torch.cuda.max_memory_allocated() / 2**30) if dev_type == "cuda" else None,
               "eval_dtype": "bf16 autocast" if amp else "f32", "args": vars(a), "config": cfg.__dict__,
               "log": log}
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps({k: metrics[k] for k in ("run", "val_ppl", "val_ppl_half", "tokens_trained", "wall_s_train",
                                               "tokens_per_s", "params_ram", "table_params_rom")}), flush=True)


if __name__ == "__main__":
    main()
