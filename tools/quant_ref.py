#!/usr/bin/env python3
"""gguf-py reference for meki's quantization tests (tests/quant_formats.rs).

  quant_ref.py dequant TYPE IN.bin OUT.f32   raw ggml bytes -> f32 (gguf.quants.dequantize)
  quant_ref.py quant   TYPE IN.f32 OUT.bin   f32 rows of 256 -> ggml bytes (gguf.quants.quantize)

TYPE is a GGMLQuantizationType name (Q4_0, Q4_K, BF16, ...). Exit 3 if the
gguf package is missing, so the caller can tell "no reference" from a failure.
"""
import sys

try:
    import numpy as np
    from gguf import GGMLQuantizationType, quants
    from gguf.constants import GGML_QUANT_SIZES
except ImportError as e:  # reference not installed
    print(f"quant_ref.py: {e}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    mode, tname, src, dst = sys.argv[1:5]
    qtype = GGMLQuantizationType[tname]
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if mode == "dequant":
        raw = np.fromfile(src, dtype=np.uint8)
        rows = raw.reshape((-1, type_size))  # one block per row
        out = quants.dequantize(rows, qtype).astype(np.float32, copy=False)
        out.tofile(dst)
    elif mode == "quant":
        x = np.fromfile(src, dtype=np.float32).reshape((-1, 256))
        out = quants.quantize(x, qtype)
        np.ascontiguousarray(out).view(np.uint8).tofile(dst)
    else:
        sys.exit(f"quant_ref.py: unknown mode {mode}")


if __name__ == "__main__":
    main()
