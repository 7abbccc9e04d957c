#!/usr/bin/env bash
# Run every line of a run list concurrently on one GPU, then collect metrics (device machine).
#   bash tools/train/gpu_batch.sh RUNS_FILE        (env: DATA, R, TL, MB, OUT)
# RUNS_FILE: one run per line, "NAME TOKENS train.py-args...", '#' starts a comment.
# Every run: --compile, data order --data-seed 0 (train.py default), same schedule for equal TOKENS.
# MB (sequences per micro-batch) defaults from the GPU's memory: 32 above 100 GiB, else 16
# (gradient accumulation to the full 64-sequence batch: the same optimisation, less memory).
# $OUT gets results.json (collect.py) and logs.tgz (logs + metrics, no weights).
set -u
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}
RUNS=$1
DATA=${DATA:-target/corpus/tok}
R=${R:-/tmp/batch}; rm -rf "$R"; mkdir -p "$R"
if [ -z "${MB:-}" ]; then
  mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
  if [ "$mem" -gt 100000 ]; then MB=32; else MB=16; fi
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "micro-batch $MB"
T0=$(date +%s)
while read -r name tokens args; do
  case "$name" in ''|'#'*) continue ;; esac
  # shellcheck disable=SC2086
  python3 tools/train/train.py --data "$DATA" --out "$R/$name" --tokens "$tokens" --compile --micro-batch "$MB" \
    --time-limit "${TL:-480}" --log-every 100 $args > "$R/$name.log" 2>&1 &
done < "$RUNS"
wait
echo "train phase $(( $(date +%s) - T0 )) s"
grep -l "time limit reached" "$R"/*.log && echo "WARNING: runs above were cut short"
python3 tools/train/collect.py "$R" > "$R/results.json"
cp "$R/results.json" "${OUT:-/tmp}/"
tar -C "$R" -czf "${OUT:-/tmp}/logs.tgz" --exclude='*.safetensors' .
echo "total $(( $(date +%s) - T0 )) s"
