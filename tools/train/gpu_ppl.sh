#!/usr/bin/env bash
# Follow-up on the still-warm device machine after gpu_confirm.sh: meki-run perplexity of the GGUFs
# in /tmp/gguf that have no result yet (2 threads each, all at once), results to $OUT/ppl2.txt.
set -u
BIN=${BIN:-target/tcarry/bin}; G=/tmp/gguf; VALID=${VALID:-target/tcarry/valid.txt}
ls $G/*.gguf >/dev/null || { echo "no GGUFs left on this machine"; exit 1; }
for f in $G/*.gguf; do
  [ -s "$f.ppl" ] && grep -q "PPL =" "$f.ppl" && continue
  timeout "${LEFT:-560}" "$BIN/meki-run" perplexity -m "$f" -c 512 -f "$VALID" -t "${PT:-2}" > "$f.ppl" 2>&1 &
done
wait
for f in $G/*.gguf; do echo "== $(basename "$f")"; grep -E "PPL =|chunks =" "$f.ppl" | tail -n 2; done > "${OUT:-/tmp}/ppl2.txt"
cat "${OUT:-/tmp}/ppl2.txt"
