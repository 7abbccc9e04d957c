#!/usr/bin/env python3
"""numpy (BLAS) timing of one layer of the MeKi fold at the paper's 1.7B shape,
the same computation as src/convert/fold.rs: T = alpha * RMSNorm(M + beta * W_down(silu(W_g E) * (W_up E))).
Prints wall-clock GFLOP/s (best of 3) and GFLOP per CPU-second of all threads.

    python3 tools/fold_bench.py [ROWS] [D] [D_MEM]   -> prints "numpy_gflops=<x> seconds=<t>"
"""
import sys
import time

import numpy as np

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
d = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
dm = int(sys.argv[3]) if len(sys.argv) > 3 else 256
rng = np.random.default_rng(0)
E = rng.standard_normal((rows, d), dtype=np.float32)
M = rng.standard_normal((rows, dm), dtype=np.float32)
wg = rng.standard_normal((d // 2, d), dtype=np.float32) * 0.02
wu = rng.standard_normal((d // 2, d), dtype=np.float32) * 0.02
wd = rng.standard_normal((dm, d // 2), dtype=np.float32) * 0.02
mix = np.ones(dm, np.float32)


def fold():
    g = E @ wg.T
    h = g / (1 + np.exp(-g)) * (E @ wu.T)
    x = M + 1.1 * (h @ wd.T)
    return 0.9 * x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * mix


fold()
best = float("inf")
cpu0 = time.process_time()
for _ in range(3):
    t = time.perf_counter()
    fold()
    best = min(best, time.perf_counter() - t)
cpu = (time.process_time() - cpu0) / 3
flops = 2.0 * rows * (1.5 * d * d + d / 2 * dm)
# numpy_cpu_gflops: work per CPU-second of all threads (robust on a loaded machine).
print(f"numpy_gflops={flops / best / 1e9:.2f} numpy_cpu_gflops={flops / cpu / 1e9:.2f} seconds={best:.4f} blas={np.__config__.CONFIG['Build Dependencies']['blas']['name'] if hasattr(np, '__config__') and hasattr(np.__config__, 'CONFIG') else '?'}")
