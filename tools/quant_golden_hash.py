#!/usr/bin/env python3
"""Per-tensor hashes of a GGUF for tests/fixtures/quant/llama_quantize_golden.txt.

  quant_golden_hash.py RUN FILE.gguf   -> lines "RUN TENSOR TYPE SHA256"

SHA256 is over the tensor's raw data bytes as stored (gguf-py GGUFReader).
"""
import hashlib
import sys

from gguf import GGUFReader


def main() -> None:
    run, path = sys.argv[1:3]
    r = GGUFReader(path)
    for t in sorted(r.tensors, key=lambda t: t.name):
        h = hashlib.sha256(t.data.tobytes()).hexdigest()
        print(f"{run} {t.name} {t.tensor_type.name} {h}")


if __name__ == "__main__":
    main()
