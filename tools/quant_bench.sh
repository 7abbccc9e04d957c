#!/usr/bin/env bash
# Times `meki-convert quantize` against `llama-quantize` (same threads) on a
# Qwen3-0.6B-shaped random F16 model, for q4_0 and q4_k_m, and checks the
# outputs are byte-identical per tensor. Not a test.
#
#   tools/quant_bench.sh                 # THREADS=2, model in target/quant_bench
#   LLAMA_BIN=/path/to/bin MEKI_CONVERT=target/release/meki-convert tools/quant_bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LLAMA_BIN:-$ROOT/target/ext/build-avx2/bin}
MEKI=${MEKI_CONVERT:-$ROOT/target/release/meki-convert}
DIR=${BENCH_DIR:-$ROOT/target/quant_bench}
THREADS=${THREADS:-2}
mkdir -p "$DIR"
[ -f "$DIR/qwen3-0.6b-f16.gguf" ] || python3 "$ROOT/tools/quant_bench_model.py" "$DIR/qwen3-0.6b-f16.gguf"
ms() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null 2>&1; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
for t in q4_0 q4_k_m; do
    ml=$(ms "$BIN/llama-quantize" "$DIR/qwen3-0.6b-f16.gguf" "$DIR/llama_$t.gguf" "${t^^}" "$THREADS")
    mm=$(ms "$MEKI" quantize "$DIR/qwen3-0.6b-f16.gguf" "$DIR/meki_$t.gguf" "$t" -t "$THREADS")
    same=$(diff <(python3 "$ROOT/tools/quant_golden_hash.py" x "$DIR/llama_$t.gguf") \
                <(python3 "$ROOT/tools/quant_golden_hash.py" x "$DIR/meki_$t.gguf") > /dev/null && echo identical || echo DIFFERENT)
    printf "%-7s threads=%s  llama-quantize %7d ms  meki-convert %7d ms  ratio meki/llama %s  tensors %s\n" \
        "$t" "$THREADS" "$ml" "$mm" "$(python3 -c "print(f'{$mm / $ml:.2f}')")" "$same"
done
