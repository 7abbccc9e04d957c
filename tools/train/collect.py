#!/usr/bin/env python3
"""Collect <root>/*/metrics.json into one JSON list (printed) and a markdown table (stderr)."""
import glob
import json
import os
import sys

KEYS = ["run", "variant", "meki_form", "seed", "val_loss", "val_ppl", "val_ppl_half", "params_ram",
        "table_params_rom", "params_total_training", "tokens_trained", "wall_s_train", "tokens_per_s"]


RECIPE_KEYS = ["dropout", "mem_dropout", "table_wd", "table_lr_mult", "branch_init", "init_order", "d_mem", "lr",
               "min_lr_frac", "micro_batch"]


def main(root):
    rows = []
    for p in sorted(glob.glob(os.path.join(root, "*", "metrics.json"))):
        m = json.load(open(p))
        a = m.get("args", {})
        rows.append({k: m.get(k) for k in KEYS} | {"ffn": m["config"]["intermediate_size"],
                                                     "final_train_loss": m.get("final_train_loss"),
                                                     "max_gpu_mem_gb": m.get("max_gpu_mem_gb")}
                    | {k: a.get(k) for k in RECIPE_KEYS})
    print(json.dumps(rows, indent=1))
    print("| run | val ppl (all pos) | val ppl (2nd half) | RAM params | table params | tokens | wall s | train loss |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        print(f"| {r['run']} | {r['val_ppl']:.3f} | {r['val_ppl_half']:.3f} | {r['params_ram'] / 1e6:.2f}M | "
              f"{r['table_params_rom'] / 1e6:.2f}M | {r['tokens_trained'] / 1e6:.1f}M | {r['wall_s_train']} | {r['final_train_loss']} |",
              file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
