#!/usr/bin/env bash
# End-to-end speed, meki-run vs llama.cpp's llama-bench on the same GGUF files,
# interleaved A/B/A/B in one run (the machine is shared and noisy: compare ratios).
#
#   tools/e2e_bench.sh MODEL.gguf [MODEL.gguf ...]
#   env: THREADS (2), ROUNDS (3), TG (32 generated tokens), PP (128 prompt tokens),
#        LLAMA_BIN (target/ext/build-avx2/bin), MEKI_RUN (target/release/meki-run)
#
# Prints one line per model: pp and tg tokens/s of both engines (median of ROUNDS)
# and the ratio meki/llama.cpp.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
TG=${TG:-32}
PP=${PP:-128}
LLAMA_BIN=${LLAMA_BIN:-$here/target/ext/build-avx2/bin}
MEKI_RUN=${MEKI_RUN:-$here/target/release/meki-run}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# A prompt of exactly PP tokens for this model (words of the GPL excerpt).
prompt_of() {
  local model=$1 words
  words=$(tr -s ' \n' ' ' < "$here/tests/fixtures/text/gpl3-excerpt.txt")
  local n=$PP
  while :; do
    local p
    p=$(echo "$words" | cut -d' ' -f1-"$n")
    local count
    count=$("$MEKI_RUN" tokenize -m "$model" -p "$p" | wc -w)
    if [ "$count" -le "$PP" ]; then echo "$p"; return; fi
    n=$((n - (count - PP) ))
  done
}

printf '%-28s %10s %10s %7s %10s %10s %7s\n' model "pp meki" "pp llama" ratio "tg meki" "tg llama" ratio
for model in "$@"; do
  prompt=$(prompt_of "$model")
  mpp=(); lpp=(); mtg=(); ltg=()
  for _ in $(seq "$ROUNDS"); do
    # pp: a PP-token prompt; tg: TG tokens after a one-token prompt (llama-bench's
    # tg test also starts from an empty context).
    out=$("$MEKI_RUN" -m "$model" -p "$prompt" -n 1 --temp 0 --ignore-eos -t "$THREADS" -c 1024 2>&1 >/dev/null)
    mpp+=("$(echo "$out" | sed -n 's/^prompt eval time.*(\([0-9.]*\) tokens per second)/\1/p')")
    out=$("$MEKI_RUN" -m "$model" -p "The" -n "$TG" --temp 0 --ignore-eos -t "$THREADS" -c 1024 2>&1 >/dev/null)
    mtg+=("$(echo "$out" | sed -n 's/^eval time.*(\([0-9.]*\) tokens per second)/\1/p')")
    lb=$("$LLAMA_BIN/llama-bench" -m "$model" -p "$PP" -n "$TG" -t "$THREADS" -r 1 -o csv 2>/dev/null)
    lpp+=("$(echo "$lb" | awk -F'","' -v n="$PP" 'NR>1 && $0 ~ "\"" n "\",\"0\"" {split($0,a,"\",\""); print a[length(a)-1]}' | head -1)")
    ltg+=("$(echo "$lb" | awk -F'","' -v n="$TG" 'NR>1 && $0 ~ "\"0\",\"" n "\"" {split($0,a,"\",\""); print a[length(a)-1]}' | head -1)")
  done
  a=$(printf '%s\n' "${mpp[@]}" | median); b=$(printf '%s\n' "${lpp[@]}" | median)
  c=$(printf '%s\n' "${mtg[@]}" | median); d=$(printf '%s\n' "${ltg[@]}" | median)
  printf '%-28s %10.2f %10.2f %7.2f %10.2f %10.2f %7.2f\n' "$(basename "$model")" "$a" "$b" \
    "$(echo "$a $b" | awk '{print $1/$2}')" "$c" "$d" "$(echo "$c $d" | awk '{print $1/$2}')"
done
