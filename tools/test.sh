#!/usr/bin/env bash
# The project's test command (named in the README; CI runs it after .ci/run's set-up):
# host tests, then the kernel tests for aarch64 under qemu (NEON with and without
# dotprod), then a compile check for Android (Termux).
set -euo pipefail
cd "$(dirname "$0")/.."
export MEKI_LLAMA_CPP=${MEKI_LLAMA_CPP:-$(tools/llamacpp.sh fetch | tail -n1)}

# --cross-only: skip the host tests (.ci/run runs them itself, then calls this).
if [ "${1:-}" != "--cross-only" ]; then
  cargo test --workspace --release
fi

if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
  cargo test --release -p meki-kernels --target aarch64-unknown-linux-gnu
  MEKI_KERNELS=neon-nodotprod cargo test --release -p meki-kernels --target aarch64-unknown-linux-gnu
  # The engine on NEON: library unit tests and one llama.cpp golden model (qemu is slow).
  MEKI_GOLDEN_ONLY=qwen3-gqa2-hd64-f32 cargo test --release -p meki --target aarch64-unknown-linux-gnu \
    --lib --test engine_golden
elif [ "${MEKI_REQUIRE_REFERENCE:-0}" = 1 ]; then
  echo "qemu-aarch64 / aarch64-linux-gnu-gcc missing: cannot run the NEON tests" >&2
  exit 1
fi
cargo check --workspace --target aarch64-linux-android
