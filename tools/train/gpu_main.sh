#!/usr/bin/env bash
# The main GPU call (device machine, <= 10 min): all variants concurrently with torch.compile,
# equal tokens, same data order; f32 eval of the exported meki_s1/dense_s1 checkpoints; HF check.
# $OUT gets results.json, logs.tgz (logs + metrics) and the meki_s1 checkpoint as a tar split
# into 15 MiB parts; the dense_s1 checkpoint tar is left in /tmp/dense_s1_ckpt.tar for a
# follow-up call on the still-warm machine (both do not fit the 64 MiB $OUT limit together).
set -u
export PYTHONUNBUFFERED=1
DATA=${DATA:-target/corpus/tok}
R=/tmp/main; rm -rf $R; mkdir -p $R
T0=$(date +%s)
bash tools/train/run_all.sh $DATA $R "${TOKENS:-40e6}" --compile --time-limit "${TL:-450}" --log-every 100 2>&1 | tail -n 40
echo "train phase $(( $(date +%s) - T0 )) s"
for r in meki_s1 dense_s1; do
  python3 tools/train/eval.py $R/$r/checkpoint --tokens $DATA/valid.npy > $R/$r/eval_export_f32.json
  grep -E '"val_ppl|"ckpt' $R/$r/eval_export_f32.json
done
python3 tools/train/check_hf.py $R/dense_s1/checkpoint --tokens $DATA/valid.npy 2>&1 | tail -n 1
python3 tools/train/collect.py $R > $R/results.json
cp $R/results.json ${OUT:-/tmp}/
tar -C $R -czf ${OUT:-/tmp}/logs.tgz --exclude='*.safetensors' .
tar -C $R/meki_s1 -cf - checkpoint | split -b 15M - ${OUT:-/tmp}/meki_s1_ckpt.tar.part-
tar -C $R/dense_s1 -cf /tmp/dense_s1_ckpt.tar checkpoint
ls -la ${OUT:-/tmp} /tmp/dense_s1_ckpt.tar
echo "total $(( $(date +%s) - T0 )) s"
