#!/usr/bin/env bash
# Regenerate tests/fixtures/tokenizer/*.golden from llama.cpp (the reference peer):
# builds tools/tokenizer_golden.cpp against a llama.cpp build and runs it on the vocab GGUFs
# shipped in llama.cpp's source tree with tests/fixtures/tokenizer/prompts.txt (hand-written)
# and random.txt (tools/tokenizer_random_prompts.py, seeded), and on one long text
# (tests/fixtures/text/gpl3-excerpt.txt), and the digest of 1 MiB of llama.cpp's docs.
#
#   tools/tokenizer_golden.sh [LLAMA_CPP_SRC] [LLAMA_CPP_BUILD]
# defaults: $MEKI_LLAMA_CPP (or target/ext/.../vendor/llama.cpp) and target/ext/build-avx2
# (see tools/llamacpp.sh build).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-${MEKI_LLAMA_CPP:-$here/target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp}}
build=${2:-$here/target/ext/build-avx2}
out=$here/tests/fixtures/tokenizer
bin=$here/target/ext/tokenizer_golden
for lib in src/libllama.a ggml/src/libggml.a ggml/src/libggml-cpu.a ggml/src/libggml-base.a; do
  [ -f "$build/$lib" ] || { echo "missing $build/$lib (run tools/llamacpp.sh build)" >&2; exit 1; }
done
g++ -O1 -std=c++17 -I"$src/include" -I"$src/ggml/include" "$here/tools/tokenizer_golden.cpp" \
  "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
  "$build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -o "$bin"
python3 "$here/tools/tokenizer_random_prompts.py" 300 > "$out/random.txt"
english=$here/target/ext/english-1mb.txt
python3 "$here/tools/tokenizer_english_1mb.py" "$src" > "$english"
: > "$out/english-1mb.digest"
for name in qwen2 llama-bpe gpt-2 llama-spm qwen35 mpt phi-3 starcoder refact command-r; do
  "$bin" "$src/models/ggml-vocab-$name.gguf" "$out/prompts.txt" > "$out/$name.golden"
  "$bin" "$src/models/ggml-vocab-$name.gguf" "$out/random.txt" encode-only > "$out/$name.random.golden"
  "$bin" "$src/models/ggml-vocab-$name.gguf" "$here/tests/fixtures/text/gpl3-excerpt.txt" encode-only \
    > "$out/$name.long.golden"
  echo "$name $("$bin" "$src/models/ggml-vocab-$name.gguf" "$english" digest)" >> "$out/english-1mb.digest"
  echo "wrote $out/$name.golden, $name.random.golden" >&2
done
