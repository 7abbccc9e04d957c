#!/usr/bin/env bash
# MeKi's cost in decoding: a MeKi GGUF, the same file with --no-meki, and the dense
# twin (the backbone file alone), interleaved A/B/C for ROUNDS rounds; then the
# MeKi file again with its pages dropped from the page cache before every run
# (posix_fadvise DONTNEED), so table rows come from storage while decoding.
#
#   tools/meki_overhead_bench.sh MEKI.gguf DENSE.gguf
#   env: THREADS (2), ROUNDS (5), TG (64), MEKI_RUN (target/release/meki-run)
# Separate processes drown a 2% difference in machine noise: for the decode ratio
# itself prefer the in-process, alternating `meki-bench twin MEKI.gguf DENSE.gguf -t N`
# (it also prints no-meki/dense, how far apart identical work lands in two files).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${THREADS:-2}; ROUNDS=${ROUNDS:-5}; TG=${TG:-64}
MEKI_RUN=${MEKI_RUN:-$here/target/release/meki-run}
meki=$1; dense=$2
tg() { "$MEKI_RUN" -m "$1" "${@:2}" -p "In the beginning" -n "$TG" --temp 0 --ignore-eos -t "$THREADS" -c 512 2>&1 >/dev/null \
  | sed -n 's/^eval time.*(\([0-9.]*\) tokens per second)/\1/p'; }
drop() { python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)" "$1"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
A=(); B=(); C=(); D=()
for r in $(seq "$ROUNDS"); do
  # Alternate the order so that neither side always runs first.
  if [ $((r % 2)) = 1 ]; then
    A+=("$(tg "$meki")"); B+=("$(tg "$meki" --no-meki)"); C+=("$(tg "$dense")")
  else
    C+=("$(tg "$dense")"); B+=("$(tg "$meki" --no-meki)"); A+=("$(tg "$meki")")
  fi
  drop "$meki"; D+=("$(tg "$meki")")
done
a=$(printf '%s\n' "${A[@]}" | median); b=$(printf '%s\n' "${B[@]}" | median)
c=$(printf '%s\n' "${C[@]}" | median); d=$(printf '%s\n' "${D[@]}" | median)
# Per-round ratios (the runs of a round are seconds apart, so a slow phase of the
# machine hits both sides): median [min-max] over rounds.
ratio() { local -n num=$1 den=$2; for i in "${!num[@]}"; do echo "${num[$i]} ${den[$i]}" | awk '{printf "%.4f\n", $1/$2}'; done \
  | sort -g | awk '{r[NR]=$1} END {printf "%.3f [%.3f-%.3f]", r[int((NR+1)/2)], r[1], r[NR]}'; }
echo "tg$TG tok/s (median of $ROUNDS, $THREADS threads): MeKi $a | --no-meki $b | dense twin $c | MeKi, page cache dropped $d"
echo "per-round ratios, median [min-max]: MeKi/--no-meki $(ratio A B)  MeKi/dense $(ratio A C)  cold/warm $(ratio D A)"
