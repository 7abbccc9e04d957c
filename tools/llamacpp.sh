#!/usr/bin/env bash
# Fetch llama.cpp's source (vendored in the llama-cpp-python sdist on PyPI) and,
# on request, build its reference tools. Everything lands under $MEKI_EXT
# (default: <repo>/target/ext), which is git-ignored.
#
#   tools/llamacpp.sh fetch          # source only: gguf-py, vocab GGUFs + test vectors
#   tools/llamacpp.sh build [FLAVOR] # FLAVOR: avx2 (default) or native
#   tools/llamacpp.sh shim           # target/ext/affinity_nprocs.so: LD_PRELOAD it into
#                                    # test-backend-ops so it uses as many threads as
#                                    # taskset allows (see tools/affinity_nprocs.c)
#
# Prints the llama.cpp source directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ext=${MEKI_EXT:-$here/target/ext}
ver=0.3.36
src=$ext/llama_cpp_python-$ver/vendor/llama.cpp
mkdir -p "$ext"

fetch() {
  if [ ! -f "$src/CMakeLists.txt" ]; then
    python3 -m pip install -q scikit-build-core cmake ninja >&2
    python3 -m pip download -q --no-deps --no-build-isolation --no-binary :all: \
      "llama-cpp-python==$ver" -d "$ext" >&2
    tar xzf "$ext/llama_cpp_python-$ver.tar.gz" -C "$ext"
  fi
}

build() {
  local flavor=${1:-avx2}
  local bdir=$ext/build-$flavor
  local flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF)
  case $flavor in
    avx2) flags+=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF) ;;
    native) flags+=(-DGGML_NATIVE=ON) ;;
    *) echo "unknown flavor $flavor" >&2; exit 2 ;;
  esac
  cmake -S "$src" -B "$bdir" -G Ninja "${flags[@]}" -DLLAMA_BUILD_TESTS=ON >&2
  cmake --build "$bdir" -j "$(nproc)" --target llama-quantize llama-tokenize llama-perplexity \
    llama-completion llama-bench test-backend-ops >&2
  echo "$bdir/bin" >&2
}

case ${1:-fetch} in
  fetch) fetch ;;
  build) fetch; build "${2:-avx2}" ;;
  shim) cc -O2 -shared -fPIC -o "$ext/affinity_nprocs.so" "$here/tools/affinity_nprocs.c"
        echo "$ext/affinity_nprocs.so" >&2 ;;
  *) echo "usage: $0 fetch | build [avx2|native] | shim" >&2; exit 2 ;;
esac
echo "$src"
