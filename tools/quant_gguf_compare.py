#!/usr/bin/env python3
"""Check with gguf-py that a quantized GGUF carries over its input's metadata.

  quant_gguf_compare.py IN.gguf OUT.gguf

Every key of IN must be in OUT with the same value type and value, except
general.file_type (printed) and general.quantization_version (printed); keys
only in OUT are listed. Tensors must have the same names and shapes; their
output types are printed. Output lines (parsed by tests/quant_golden.rs):

  key_mismatch KEY ...      (one per problem; none means OK)
  extra_key KEY
  file_type N
  quantization_version N
  tensor NAME TYPE NE0xNE1...
  checked_keys N

Exit 3 without gguf-py.
"""
import sys

try:
    from gguf import GGUFReader, GGUFValueType
except ImportError as e:
    print(f"quant_gguf_compare.py: {e}", file=sys.stderr)
    sys.exit(3)


def value(f):
    if f.types[0] == GGUFValueType.ARRAY:
        if f.types[-1] == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def fields(r):
    return {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}


def main() -> None:
    a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
    fa, fb = fields(a), fields(b)
    special = {"general.file_type", "general.quantization_version"}
    n = 0
    for k, f in fa.items():
        if k in special:
            continue
        n += 1
        if k not in fb:
            print(f"key_mismatch {k} missing")
        elif [t.name for t in f.types] != [t.name for t in fb[k].types]:
            print(f"key_mismatch {k} type {[t.name for t in f.types]} != {[t.name for t in fb[k].types]}")
        elif value(f) != value(fb[k]):
            print(f"key_mismatch {k} value")
    for k in fb:
        if k not in fa and k not in special:
            print(f"extra_key {k}")
    for k in sorted(special):
        if k in fb:
            print(f"{k.split('.')[1]} {value(fb[k])}")
    ta = {t.name: [int(d) for d in t.shape] for t in a.tensors}
    for t in b.tensors:
        shape = [int(d) for d in t.shape]
        if ta.get(t.name) != shape:
            print(f"key_mismatch tensor {t.name} shape {shape} != {ta.get(t.name)}")
        print(f"tensor {t.name} {t.tensor_type.name} {'x'.join(map(str, shape))}")
    if set(ta) != {t.name for t in b.tensors}:
        print("key_mismatch tensor set differs")
    print(f"checked_keys {n}")


if __name__ == "__main__":
    main()
