#!/usr/bin/env bash
# End-to-end speed, meki-run vs llama.cpp's llama-bench on the same GGUF files,
# interleaved A/B/A/B in one run (the machine is shared and noisy: compare ratios).
#
#   tools/e2e_bench.sh make [SHAPE ...]    # random Qwen3-shaped models under target/bench/
#   tools/e2e_bench.sh MODEL.gguf [MODEL.gguf ...]
#
# make: SHAPE is q06 (Qwen3-0.6B: d 1024, 28 layers, FFN 3072, 16/8 heads of 128)
#   and/or q17 (Qwen3-1.7B: d 2048, 28 layers, FFN 6144, 16/8 heads of 128); default
#   both. Writes target/bench/SHAPE-{f16,q8_0,q4_0,q4_k_m}.gguf (meki-convert quantize
#   of a random F16 model) and the MeKi variant SHAPE-TYPE-meki.gguf of each
#   (tools/add_random_meki.py: d_mem 128, f16 table, projections typed as
#   meki-convert does). TYPES env narrows the types; NO_MEKI=1 skips the MeKi variants.
#
# run: env THREADS ("1 2"), ROUNDS (3), PP (512), TG (128), DEPTH (empty; e.g. 4096
#   adds a tg row at that many tokens of context: llama-bench -d, meki-run with a
#   DEPTH-token prompt), LLAMA_BIN (target/ext/build-avx2/bin), MEKI_RUN
#   (target/release/meki-run), MEKI_BENCH (target/release/meki-bench), SKIP_LLAMA=1
#   (meki-run only).
#   A MeKi model X-meki.gguf is compared with its dense twin X.gguf instead (measured
#   in the same rounds; llama.cpp cannot load MeKi tensors; skipped without a twin).
#   Each row: median tok/s of both engines with [min-max] over rounds, and the
#   median of the per-round ratios with its range.
#   tg rows also print meki's share of the roofline: per round, meki's tok/s times
#   the weight bytes read per generated token, over the memory read bandwidth
#   (meki-bench's probe) measured right before that round's tg run (the VM's
#   bandwidth moves within minutes); median [range] over the rounds, then the
#   bytes per token and the probe's median [range].
#   Each (model, threads) also gets a peak resident memory row (MiB, from
#   /usr/bin/time -f %M over meki-run's pp run and llama-bench's pp+tg run;
#   contexts PP+8 and PP+TG), ratio meki / llama.cpp (target: <= 1).
#   meki-run repacks Q4_0/Q4_K/Q8_0 matrices at load (MEKI_REPACK=0 to compare, =all adds Q6_K).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-3}
TG=${TG:-128}
PP=${PP:-512}
DEPTH=${DEPTH:-}
LLAMA_BIN=${LLAMA_BIN:-$here/target/ext/build-avx2/bin}
MEKI_RUN=${MEKI_RUN:-$here/target/release/meki-run}
MEKI_BENCH=${MEKI_BENCH:-$here/target/release/meki-bench}
MEKI_CONVERT=${MEKI_CONVERT:-$here/target/release/meki-convert}
export MEKI_CONVERT

if [ "${1:-}" = make ]; then
  shift
  shapes=("${@:-q06 q17}")
  # shellcheck disable=SC2206
  shapes=(${shapes[*]})
  mkdir -p "$here/target/bench"
  for s in "${shapes[@]}"; do
    case $s in
      q06) args=(--d 1024 --ffn 3072) ;;
      q17) args=(--d 2048 --ffn 6144) ;;
      *) echo "unknown shape $s (q06, q17)" >&2; exit 2 ;;
    esac
    # source weights: an existing F32 model of the shape, else a new random F16 one
    base=$here/target/bench/$s-f32.gguf
    [ -f "$base" ] || base=$here/target/bench/$s-f16-src.gguf
    [ -f "$base" ] || python3 "$here/tools/make_random_model.py" "$base" --arch qwen3 --layers 28 \
      "${args[@]}" --heads 16 --kv-heads 8 --head-dim 128 --type f16
    for ty in ${TYPES:-f16 q8_0 q4_0 q4_k_m}; do
      out=$here/target/bench/$s-$ty.gguf
      [ -f "$out" ] || "$MEKI_CONVERT" quantize "$base" "$out" "$ty" 2>/dev/null
      [ -n "${NO_MEKI:-}" ] || [ -f "${out%.gguf}-meki.gguf" ] ||
        python3 "$here/tools/add_random_meki.py" "$out" "${out%.gguf}-meki.gguf"
    done
  done
  exit 0
fi

# "median min max" of the numbers on stdin (an even count: the mean of the
# middle two; the lower one alone read every 2-round row at its worst round)
stats() {
  sort -g | awk '{a[NR]=$1} END {
    m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
    printf "%s %s %s", m, a[1], a[NR]
  }'
}
# tok/s of the prompt / of the generation in meki-run's summary
mrate() { sed -n "s/^$1 time.*(\([0-9.]*\) tokens per second)/\1/p"; }
# peak RSS in MiB from a `/usr/bin/time -f 'maxrss %M'` line
mrss() { sed -n 's/^maxrss \([0-9]*\)$/\1/p' | awk '{printf "%.1f", $1/1024}'; }
TIME=/usr/bin/time
[ -x "$TIME" ] || TIME=""
rss_file=$(mktemp)
# Prefix of the runs whose peak RSS is measured (written to $rss_file).
timed=()
[ -z "$TIME" ] || timed=("$TIME" -o "$rss_file" -f 'maxrss %M')
trap 'rm -f "$rss_file"' EXIT

# meki-run MODEL PROMPT N_GEN CTX at $t threads: its stderr (the timing
# summary). A first argument `timed` runs it under the peak-RSS prefix.
run() {
  local pre=()
  if [ "$1" = timed ]; then pre=("${timed[@]}"); shift; fi
  "${pre[@]}" "$MEKI_RUN" -m "$1" -p "$2" -n "$3" --temp 0 --ignore-eos -t "$t" -c "$4" 2>&1 >/dev/null
}

# A prompt of N tokens (or 1-2 fewer: a word may be several tokens) for this model
# (the GPL excerpt, repeated as needed). Rates are per token, so the few missing
# tokens do not bias the comparison with llama-bench's exact N.
prompt_of() {
  local model=$1 want=$2 words n count p best="" tries=0
  words=$(tr -s ' \n' ' ' < "$here/tests/fixtures/text/gpl3-excerpt.txt" | sed 's/^ //')
  while [ "$(echo "$words" | wc -w)" -lt $((want * 2)) ]; do words="$words $words"; done
  n=$want
  while [ $tries -lt 16 ]; do
    tries=$((tries + 1))
    p=$(echo "$words" | cut -d' ' -f1-"$n")
    count=$("$MEKI_RUN" tokenize -m "$model" -p "$p" | wc -w)
    if [ "$count" -le "$want" ]; then
      best=$p
      [ "$count" -lt $((want - 2)) ] || break
      n=$((n + (want - count + 1) / 2))
    else
      n=$((n - (count - want)))
      # Fewer words than tokens per word (a tiny vocabulary): one word.
      [ "$n" -ge 1 ] || n=1
    fi
  done
  echo "${best:-${words%% *}}"
}

# Bytes of weights read per generated token: every tensor but the embedding
# (one row read; unless it is also the output head) and the MeKi table (one row).
bytes_per_token() {
  python3 - "$1" <<'EOF'
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
names = {t.name for t in r.tensors}
total = 0
for t in r.tensors:
    if t.name == "token_embd.weight" and "output.weight" in names:
        total += int(t.n_bytes) // int(t.shape[1])
    elif t.name == "meki_table.weight":
        total += int(t.n_bytes) // int(t.shape[1])
    else:
        total += int(t.n_bytes)
print(total)
EOF
}

# llama-bench's mean tok/s of test pPP / tgTG (csv: n_prompt, n_gen, n_depth ... avg_ts)
lrate() {
  python3 -c '
import csv, sys
p, g = sys.argv[1], sys.argv[2]
for row in csv.DictReader(sys.stdin):
    if row["n_prompt"] == p and row["n_gen"] == g:
        print(row["avg_ts"]); break' "$1" "$2"
}

row() { # label meki[] llama[] (as space-separated strings)
  local label=$1 m=$2 l=$3 ms ls rs
  ms=$(printf '%s\n' $m | stats); ls=$(printf '%s\n' $l | stats)
  rs=$(paste <(printf '%s\n' $m) <(printf '%s\n' $l) | awk '{print $1/$2}' | stats)
  # shellcheck disable=SC2086
  printf '%-44s %8.2f [%6.2f-%6.2f] %8.2f [%6.2f-%6.2f] %6.2f [%4.2f-%4.2f]' "$label" $ms $ls $rs
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "# flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512_vnni|avx_vnni)$' | tr '\n' ' ')"
vendor=$(grep -m1 '^vendor_id' /proc/cpuinfo | awk '{print $3}' || true)
echo "# float decode (F32/F16/BF16): MEKI_FLOAT_DECODE=${MEKI_FLOAT_DECODE:-auto}, F16 prefill: MEKI_FLOAT_PREFILL=${MEKI_FLOAT_PREFILL:-auto} on ${vendor:-an unknown vendor} (auto: rows, f16 on AMD; tiles, f32 elsewhere)"
probe() { # threads -> GB/s (meki-bench's read probe)
  "$MEKI_BENCH" kernels -t "$1" --formats q8_0 --shapes 64x4096 --quick 2>&1 \
    | sed -n 's/^memory read bandwidth.*: \([0-9.]*\) GB\/s/\1/p'
}
for t in $THREADS; do
  echo "# memory read bandwidth, $t threads: $(probe "$t") GB/s (each round of a tg row is divided by a probe taken right before it)"
done
printf '%-44s %25s %25s %19s\n' "model / test / threads" "meki tok/s [range]" "llama.cpp tok/s [range]" "ratio [range]"

pp_prompt=""
for model in "$@"; do
  name=$(basename "$model" .gguf)
  twin=""
  case $model in
    *-meki.gguf)
      twin=${model%-meki.gguf}.gguf
      if [ ! -f "$twin" ]; then
        echo "# $name skipped: its dense twin $twin is missing (llama.cpp cannot load MeKi tensors)"
        continue
      fi ;;
  esac
  bpt=$(bytes_per_token "$model")
  pp_prompt=$(prompt_of "$model" "$PP")
  deep_prompt=""
  [ -z "$DEPTH" ] || [ -n "$twin" ] || deep_prompt=$(prompt_of "$model" "$DEPTH")
  for t in $THREADS; do
    declare -A M=() L=() T=() R=()
    probes=""
    for _ in $(seq "$ROUNDS"); do
      out=$(run timed "$model" "$pp_prompt" 1 $((PP + 8)))
      [ -z "$TIME" ] || R[meki]+=" $(mrss < "$rss_file")"
      M[pp]+=" $(echo "$out" | mrate 'prompt eval')"
      # The VM's bandwidth moves within minutes: each round's tg is divided
      # by a probe taken right before it.
      probes+=" $(probe "$t")"
      out=$(run "$model" "The" "$TG" $((TG + 8)));     M[tg]+=" $(echo "$out" | mrate eval)"
      if [ -n "$DEPTH" ] && [ -z "$twin" ]; then
        out=$(run "$model" "$deep_prompt" "$TG" $((DEPTH + TG + 8))); M[deep]+=" $(echo "$out" | mrate eval)"
      fi
      if [ -n "$twin" ]; then
        out=$(run "$twin" "$pp_prompt" 1 $((PP + 8))); T[pp]+=" $(echo "$out" | mrate 'prompt eval')"
        out=$(run "$twin" "The" "$TG" $((TG + 8)));    T[tg]+=" $(echo "$out" | mrate eval)"
      fi
      if [ -z "${SKIP_LLAMA:-}" ] && [ -z "$twin" ]; then
        lb=$("${timed[@]}" "$LLAMA_BIN/llama-bench" -m "$model" -p "$PP" -n "$TG" -t "$t" -r 1 -o csv 2>/dev/null) ||
          echo "# llama-bench failed on $model (its rows will be empty)"
        [ -z "$TIME" ] || R[llama]+=" $(mrss < "$rss_file")"
        L[pp]+=" $(echo "$lb" | lrate "$PP" 0)"; L[tg]+=" $(echo "$lb" | lrate 0 "$TG")"
        if [ -n "$DEPTH" ]; then
          lb=$("$LLAMA_BIN/llama-bench" -m "$model" -p 0 -n "$TG" -d "$DEPTH" -t "$t" -r 1 -o csv 2>/dev/null)
          L[deep]+=" $(echo "$lb" | lrate 0 "$TG")"
        fi
      else
        L[pp]+=" 1"; L[tg]+=" 1"; L[deep]+=" 1"
      fi
    done
    # Per round: the roofline at that round's probe, and meki's share of it.
    bws=$(printf '%s\n' $probes | stats)
    shares=$(paste <(printf '%s\n' ${M[tg]}) <(printf '%s\n' $probes) \
      | awk -v b="$bpt" '{print $1*b/($2*1e9)}' | stats)
    if [ -n "$twin" ]; then
      # llama.cpp cannot load a MeKi file (tensors it does not know): the
      # dense twin, measured in the same rounds, is the reference (no depth
      # or RSS rows).
      tag=" (dense twin in llama col)"; ref_pp=${T[pp]}; ref_tg=${T[tg]}
    else
      tag=""; ref_pp=${L[pp]}; ref_tg=${L[tg]}
    fi
    row "$name pp$PP t$t$tag" "${M[pp]}" "$ref_pp"; echo
    row "$name tg$TG t$t$tag" "${M[tg]}" "$ref_tg"
    # shellcheck disable=SC2086
    printf '  roofline share %.2f [%.2f-%.2f] (%.0f MB/token; probe %.1f [%.1f-%.1f] GB/s)\n' \
      $shares "$(echo "$bpt" | awk '{print $1/1e6}')" $bws
    if [ -n "$DEPTH" ] && [ -z "$twin" ]; then row "$name tg$TG@d$DEPTH t$t" "${M[deep]}" "${L[deep]}"; echo; fi
    if [ -n "${R[meki]:-}" ] && [ -n "${R[llama]:-}" ]; then
      row "$name peak RSS MiB t$t" "${R[meki]}" "${R[llama]}"; echo
    fi
    unset M L T R
  done
done
