#!/usr/bin/env python3
"""Reference side of meki's GGUF round-trip tests, built on gguf-py.

  gguf_roundtrip.py write-sample OUT.gguf [--alignment N] [--tokens N]
      Write a GGUF with gguf.GGUFWriter: every metadata value type, typed and
      nested arrays, a string array of N entries, tensors of several ggml types.
  gguf_roundtrip.py dump --out-dir DIR FILE...
      Read each FILE with gguf.GGUFReader and write DIR/<basename>.dump, a
      canonical text listing that tests/gguf_reference.rs also produces:

        version V / alignment A / data_offset D
        kv <json key> <TYPE> <value>
        tensor <json name> <ggml type id> dims=<ne0,ne1..> offset=<rel> bytes=<n> sha256=<hex>

      Values: integers in decimal, FLOAT32/FLOAT64 as hex of their IEEE bits,
      BOOL true/false, strings as json.dumps(ensure_ascii=True), arrays as
      [<ELEMTYPE>;<len>:e0,e1,...] (nested arrays recursively).
  gguf_roundtrip.py fixture FILE... > tests/fixtures/gguf/vocab_dumps.txt
      One line per FILE: <basename> <sha256 of the file> <sha256 of its dump>.
      gguf-py takes minutes on the 150k-token vocabularies, so the test
      compares against these recorded hashes and runs gguf-py live only to
      explain a mismatch or for files not recorded.
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import sys

import numpy as np

import gguf
from gguf import GGUFValueType as VT
from gguf import GGMLQuantizationType as QT


# ---------------------------------------------------------------- dump

def fmt_scalar(vtype, part):
    if vtype == VT.FLOAT32:
        return "%08x" % int(part.view(np.uint32)[0])
    if vtype == VT.FLOAT64:
        return "%016x" % int(part.view(np.uint64)[0])
    if vtype == VT.BOOL:
        return "true" if bool(part[0]) else "false"
    return str(int(part[0]))


def decode(parts, i, vtype):
    """Consume the gguf-py field parts of one value of `vtype` from index i."""
    if vtype == VT.STRING:
        # parts: length, bytes
        s = bytes(parts[i + 1]).decode("utf-8")
        return json.dumps(s, ensure_ascii=True), i + 2
    if vtype == VT.ARRAY:
        itype = VT(int(parts[i][0]))
        n = int(parts[i + 1][0])
        i += 2
        elems = []
        for _ in range(n):
            e, i = decode(parts, i, itype)
            elems.append(e)
        return "[%s;%d:%s]" % (itype.name, n, ",".join(elems)), i
    return fmt_scalar(vtype, parts[i]), i + 1


def dump(path):
    r = gguf.GGUFReader(path)
    lines = []
    version = int(r.fields["GGUF.version"].parts[0][0])
    lines.append("version %d" % version)
    lines.append("alignment %d" % int(r.alignment))
    lines.append("data_offset %d" % int(r.data_offset))
    for name, field in r.fields.items():
        if name in ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"):
            continue
        vtype = VT(int(field.parts[2][0]))
        value, end = decode(field.parts, 3, vtype)
        assert end == len(field.parts), (name, end, len(field.parts))
        lines.append("kv %s %s %s" % (json.dumps(name, ensure_ascii=True), vtype.name, value))
    for t in r.tensors:
        dims = [int(x) for x in t.field.parts[3]]
        rel = int(t.field.parts[5][0])
        assert t.data_offset == r.data_offset + rel
        data = bytes(r.data[t.data_offset:t.data_offset + t.n_bytes])
        assert len(data) == t.n_bytes, "tensor data past end of file"
        lines.append("tensor %s %d dims=%s offset=%d bytes=%d sha256=%s" % (
            json.dumps(t.name, ensure_ascii=True), int(t.tensor_type),
            ",".join(map(str, dims)), rel, t.n_bytes, hashlib.sha256(data).hexdigest()))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- sample

def quant_bytes(rng, qtype, shape_ne):
    """Random bytes for a tensor of ggml type qtype and dims (ne0 first)."""
    block, tsize = gguf.GGML_QUANT_SIZES[qtype]
    ne0 = shape_ne[0]
    rows = int(np.prod(shape_ne[1:])) if len(shape_ne) > 1 else 1
    row_bytes = ne0 // block * tsize
    np_shape = tuple(reversed(shape_ne[1:])) + (row_bytes,)
    return rng.integers(0, 256, size=rows * row_bytes, dtype=np.uint8).reshape(np_shape)


def write_sample(out, alignment, n_tokens):
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(out, "meki-test")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("test.u8", 255)
    w.add_int8("test.i8", -128)
    w.add_uint16("test.u16", 65535)
    w.add_int16("test.i16", -32768)
    w.add_uint32("test.u32", 4294967295)
    w.add_int32("test.i32", -2147483648)
    w.add_float32("test.f32", 3.14159)
    w.add_float32("test.f32_neg_tiny", -1.5e-42)  # subnormal
    w.add_uint64("test.u64", 2**64 - 1)
    w.add_int64("test.i64", -2**63)
    w.add_float64("test.f64", -2.718281828459045)
    w.add_bool("test.true", True)
    w.add_bool("test.false", False)
    w.add_string("test.str", "plain")
    w.add_string("test.str_unicode", "ünïcødé ✓ 𝄞 中文 \"quoted\" back\\slash\nnew\tline\x01\x7f")
    typed = [
        (VT.UINT8, [0, 1, 255]), (VT.INT8, [-128, 0, 127]),
        (VT.UINT16, [0, 65535]), (VT.INT16, [-32768, 32767]),
        (VT.UINT32, [0, 4294967295]), (VT.INT32, [-2147483648, 2147483647]),
        (VT.FLOAT32, [0.0, -0.0, 1.5, 1e38, float("inf")]),
        (VT.UINT64, [0, 2**64 - 1]), (VT.INT64, [-2**63, 2**63 - 1]),
        (VT.FLOAT64, [1e-300, -1e300, 0.1]), (VT.BOOL, [True, False, True]),
        (VT.STRING, ["a", "", "ß", "🦀"]),
    ]
    for vt, vals in typed:
        w.add_key_value("test.arr.%s" % vt.name.lower(), vals, VT.ARRAY, sub_type=vt)
    w.add_array("test.nested.int", [[1, 2, 3], [4], [5, 6]])
    w.add_array("test.nested.str", [["x", "y"], ["z"]])
    w.add_array("test.nested.deep", [[[1.5, 2.5], [3.5]], [[4.5]]])
    w.add_array("test.nested.bool", [[True], [False, True]])
    vocab = ["tok%d_%s" % (i, "ü" * (i % 4)) for i in range(n_tokens)]
    w.add_array("tokenizer.ggml.tokens", vocab)
    w.add_key_value("tokenizer.ggml.scores", [float(-i) / 7 for i in range(1000)],
                    VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("tokenizer.ggml.token_type", [i % 6 for i in range(1000)],
                    VT.ARRAY, sub_type=VT.INT32)

    w.add_tensor("t.f32", rng.standard_normal((3, 5), dtype=np.float32))
    w.add_tensor("t.f16", rng.standard_normal((2, 64)).astype(np.float16))
    w.add_tensor("t.f32_1d", rng.standard_normal(7, dtype=np.float32))
    w.add_tensor("t.f32_4d", rng.standard_normal((2, 3, 1, 4), dtype=np.float32))
    w.add_tensor("t.i8", rng.integers(-128, 128, size=(4, 9), dtype=np.int8))
    w.add_tensor("t.i16", rng.integers(-3000, 3000, size=(5,), dtype=np.int16))
    w.add_tensor("t.i32", rng.integers(-10**9, 10**9, size=(3, 3), dtype=np.int32))
    w.add_tensor("t.i64", rng.integers(-10**15, 10**15, size=(2,), dtype=np.int64))
    w.add_tensor("t.f64", rng.standard_normal((3,), dtype=np.float64))
    for name, qt, ne in [
        ("t.bf16", QT.BF16, [10, 3]),
        ("t.q4_0", QT.Q4_0, [64, 3]),
        ("t.q4_1", QT.Q4_1, [32, 2]),
        ("t.q5_0", QT.Q5_0, [32, 2]),
        ("t.q5_1", QT.Q5_1, [96, 1]),
        ("t.q8_0", QT.Q8_0, [32, 5]),
        ("t.q4_k", QT.Q4_K, [256, 2]),
        ("t.q5_k", QT.Q5_K, [512, 1]),
        ("t.q6_k", QT.Q6_K, [256, 3]),
        ("t.q8_k", QT.Q8_K, [256, 1, 2]),
    ]:
        w.add_tensor(name, quant_bytes(rng, qt, ne), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    ws = sub.add_parser("write-sample")
    ws.add_argument("out")
    ws.add_argument("--alignment", type=int, default=0)
    ws.add_argument("--tokens", type=int, default=1000, help="entries of tokenizer.ggml.tokens")
    d = sub.add_parser("dump")
    d.add_argument("--out-dir", required=True)
    d.add_argument("files", nargs="+")
    fx = sub.add_parser("fixture")
    fx.add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.cmd == "fixture":
        print("# generated by tools/gguf_roundtrip.py fixture (gguf-py %s): name file-sha256 dump-sha256"
              % importlib.metadata.version("gguf"))
        for f in sorted(a.files, key=os.path.basename):
            with open(f, "rb") as fh:
                file_sha = hashlib.sha256(fh.read()).hexdigest()
            dump_sha = hashlib.sha256(dump(f).encode("utf-8")).hexdigest()
            print("%s %s %s" % (os.path.basename(f), file_sha, dump_sha), flush=True)
        return
    if a.cmd == "write-sample":
        write_sample(a.out, a.alignment, a.tokens)
    else:
        for f in a.files:
            text = dump(f)
            with open(os.path.join(a.out_dir, os.path.basename(f) + ".dump"), "w") as fh:
                fh.write(text)


if __name__ == "__main__":
    sys.exit(main())
