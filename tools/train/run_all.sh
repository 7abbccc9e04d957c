#!/usr/bin/env bash
# Train every variant concurrently on one GPU (small models leave it mostly idle), same data
# order and equal tokens, then collect metrics.
#   tools/train/run_all.sh DATA_DIR OUT_ROOT TOKENS [extra train.py args...]
# Runs: dense_s1, meki_s1 (demo form), static_s1, dynamic_s1, dense_ffn2x_s1 (FFN 2x wider),
#       dense_s2, meki_s2 (second init seed; data order is the same for all runs).
set -u
DATA=$1; ROOT=$2; TOKENS=$3; shift 3
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
mkdir -p "$ROOT"
launch() {  # name, args...
  local name=$1; shift
  PYTHONUNBUFFERED=1 $PY "$HERE/train.py" --data "$DATA" --out "$ROOT/$name" --tokens "$TOKENS" "$@" \
    > "$ROOT/$name.log" 2>&1 &
}
launch dense_s1       --variant dense   --seed 1 "$@"
launch meki_s1        --variant meki    --seed 1 "$@"
launch static_s1      --variant static  --seed 1 "$@"
launch dynamic_s1     --variant dynamic --seed 1 "$@"
launch dense_ffn2x_s1 --variant dense   --seed 1 --ffn "${BIG_FFN:-2304}" "$@"
launch dense_s2       --variant dense   --seed 2 "$@"
launch meki_s2        --variant meki    --seed 2 "$@"
wait
$PY "$HERE/collect.py" "$ROOT" > "$ROOT/results.json"
tail -n 3 "$ROOT"/*.log
