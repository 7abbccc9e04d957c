#!/usr/bin/env python3
"""Print 1 MiB of English text: llama.cpp's docs/*.md (sorted by name) concatenated and
repeated, cut at a character boundary. tests/tokenizer_perf.rs builds the same bytes.

usage: tokenizer_english_1mb.py LLAMA_CPP_SRC > out.txt"""
import os
import sys

docs = os.path.join(sys.argv[1], "docs")
files = sorted(f for f in os.listdir(docs) if f.endswith(".md"))
text = b""
while len(text) < 1 << 20:
    for f in files:
        with open(os.path.join(docs, f), "rb") as fh:
            text += fh.read()
end = 1 << 20
while text[end] & 0xC0 == 0x80:
    end -= 1
sys.stdout.buffer.write(text[:end])
