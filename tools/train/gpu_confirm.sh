#!/usr/bin/env bash
# Confirmation call (device machine): train the run list (default runs_confirm.txt), evaluate every
# exported checkpoint in f32 (eval.py), convert the seed-1/seed-2 MeKi + dense pairs with the carried
# Rust converter (q8_0 and f32) and run `meki-run perplexity -c 512` on them (the cross-check).
#   BIN=target/tcarry/bin bash tools/train/gpu_confirm.sh   (carry target/tcarry: tok.tar.xz,
#   valid.txt, bin/meki-convert, bin/meki-run built on the CPU machine)
# $OUT: results.json, logs.tgz, ppl.txt, and the seed-1 pair as q8_0 GGUFs in 15 MiB parts.
# The GGUFs stay in /tmp/gguf (perplexity of the others: tools/train/gpu_ppl.sh on the same warm machine).
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s)
DATA=${DATA:-target/corpus/tok}; BIN=${BIN:-target/tcarry/bin}; R=${R:-/tmp/confirm}; G=/tmp/gguf
VALID=${VALID:-target/tcarry/valid.txt}
PAIRS=${PAIRS:-"meki_s1 dense_s1 meki_s2 dense_s2"}
R=$R TL=${TL:-540} bash tools/train/gpu_batch.sh "${RUNS:-tools/train/runs_confirm.txt}"
for d in "$R"/*/checkpoint; do
  python3 tools/train/eval.py "$d" --tokens "$DATA/valid.npy" --device cuda > "$(dirname "$d")/eval_export_f32.json" &
done
wait
grep -H '"val_ppl' "$R"/*/eval_export_f32.json
mkdir -p $G
for r in $PAIRS; do
  for t in q8_0 f32; do
    "$BIN/meki-convert" checkpoint "$R/$r/checkpoint" -o "$G/$r.$t.gguf" --type $t --table-type $t > "$G/$r.$t.convert.log" 2>&1 \
      || { echo "convert $r $t failed"; tail -n 5 "$G/$r.$t.convert.log"; }
  done
done
ls -la $G
echo "before perplexity $(( $(date +%s) - T0 )) s"
left=$(( ${BUDGET:-585} - ($(date +%s) - T0) - 15 ))
for r in ${PPL_RUNS:-meki_s1 dense_s1}; do
  for f in $G/$r.*.gguf; do
    timeout "$left" "$BIN/meki-run" perplexity -m "$f" -c 512 -f "$VALID" -t "${PT:-4}" > "$f.ppl" 2>&1 &
  done
done
wait
for f in $G/*.gguf; do [ -f "$f.ppl" ] || continue; echo "== $(basename "$f")"; grep -E "PPL =|chunks =" "$f.ppl" | tail -n 2; done > "${OUT:-/tmp}/ppl.txt"
cat "${OUT:-/tmp}/ppl.txt"
tar -C "$R" -czf "${OUT:-/tmp}/logs.tgz" --exclude='*.safetensors' .
for r in meki_s1 dense_s1; do split -b 15M "$G/$r.q8_0.gguf" "${OUT:-/tmp}/$r.q8_0.gguf.part-"; done
ls -la "${OUT:-/tmp}"
echo "total $(( $(date +%s) - T0 )) s"
