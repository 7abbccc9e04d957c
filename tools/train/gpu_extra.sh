#!/usr/bin/env bash
# Second GPU call: more init seeds for the dense/MeKi pair (3, 4, 5) and MeKi in Megatron form
# (u = A, G with its own input RMSNorm), same data order, same tokens and schedule as gpu_main.sh.
# 7 processes need ~12.5 GiB each: on an 80 GB H100 run the dense ones separately (SKIP_DENSE=1).
# $OUT gets results.json, logs.tgz and the meki_megatron_s1 checkpoint (tar split in 15 MiB parts).
set -u
export PYTHONUNBUFFERED=1
DATA=${DATA:-target/corpus/tok}
R=${R:-/tmp/extra}; rm -rf $R; mkdir -p $R
TOKENS=${TOKENS:-40e6}
T0=$(date +%s)
launch() {
  local name=$1; shift
  python3 tools/train/train.py --data $DATA --out $R/$name --tokens $TOKENS --compile --time-limit "${TL:-450}" \
    --log-every 100 "$@" > $R/$name.log 2>&1 &
}
for s in 3 4 5; do
  [ -z "${SKIP_DENSE:-}" ] && launch dense_s$s --variant dense --seed $s
  launch meki_s$s --variant meki --seed $s
done
launch meki_megatron_s1 --variant meki --meki-form megatron --seed 1
wait
echo "train phase $(( $(date +%s) - T0 )) s"
python3 tools/train/eval.py $R/meki_megatron_s1/checkpoint --tokens $DATA/valid.npy > $R/meki_megatron_s1/eval_export_f32.json
grep -E '"val_ppl' $R/meki_megatron_s1/eval_export_f32.json
python3 tools/train/collect.py $R > $R/results.json
cp $R/results.json ${OUT:-/tmp}/
tar -C $R -czf ${OUT:-/tmp}/logs.tgz --exclude='*.safetensors' .
tar -C $R/meki_megatron_s1 -cf - checkpoint | split -b 15M - ${OUT:-/tmp}/meki_megatron_s1_ckpt.tar.part-
echo "total $(( $(date +%s) - T0 )) s"
