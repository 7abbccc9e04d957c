#!/usr/bin/env bash
# One short GPU smoke run (device machine): all variants concurrently for ~40 s each (tokens/s
# under contention), then dense alone eager vs torch.compile, then the HF cross-check and an
# exported-checkpoint eval. Writes a tarball of logs + results to $OUT.
set -u
export PYTHONUNBUFFERED=1
DATA=${DATA:-target/corpus/tok}
R=/tmp/smoke; rm -rf $R; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch,transformers,tokenizers,safetensors,numpy;print('torch',torch.__version__,'tf',transformers.__version__,'tok',tokenizers.__version__,'st',safetensors.__version__,'np',numpy.__version__)"
T0=$(date +%s)
bash tools/train/run_all.sh $DATA $R/conc 1e9 --time-limit 40 --max-eval-chunks 64 --log-every 25 2>&1 | tail -n 30
cat $R/conc/results.json | python3 -c "import json,sys; [print(r['run'], r['tokens_per_s'], r['val_ppl']) for r in json.load(sys.stdin)]"
echo "phase1 $(( $(date +%s) - T0 )) s"
python3 tools/train/train.py --data $DATA --out $R/alone_eager --variant dense --tokens 1e9 --time-limit 15 --max-eval-chunks 8 --log-every 25 > $R/alone_eager.log 2>&1
tail -n 1 $R/alone_eager.log
python3 tools/train/train.py --data $DATA --out $R/alone_compile --variant meki --compile --tokens 1e9 --time-limit 50 --max-eval-chunks 8 --log-every 25 > $R/alone_compile.log 2>&1
grep -E '"step": (0|25|50)\b' $R/alone_compile.log | head -3; tail -n 1 $R/alone_compile.log
echo "phase2 $(( $(date +%s) - T0 )) s"
python3 tools/train/check_hf.py $R/conc/dense_s1/checkpoint --tokens $DATA/valid.npy 2>&1 | tail -n 3
python3 tools/train/eval.py $R/conc/meki_s1/checkpoint --tokens $DATA/valid.npy --max-chunks 64 | grep -E 'val_ppl|chunks'
grep -h val_ppl $R/conc/meki_s1/metrics.json | head -2
echo "total $(( $(date +%s) - T0 )) s"
ls -la $R/conc/meki_s1/checkpoint
tar -C $R -czf ${OUT:-/tmp}/smoke_logs.tgz --exclude='*.safetensors' .
