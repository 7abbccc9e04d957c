#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer for the MeKi reference models, and pre-tokenize the corpus.

One command:  python3 tools/corpus/train_tokenizer.py [--corpus target/corpus] [--out target/corpus/tok]

Tokenizer: HF `tokenizers` byte-level BPE, vocab exactly 16384 (16381 BPE tokens incl. the 256
byte symbols + 3 special tokens), laid out like Qwen2/Qwen3's tokenizer.json so that llama.cpp
handles it as `tokenizer.ggml.model = gpt2`, `tokenizer.ggml.pre = qwen2`:
  pre_tokenizer = Sequence[Split(Qwen2 regex, Isolated), ByteLevel(add_prefix_space=False, use_regex=False)]
  decoder = ByteLevel, no normalizer (llama.cpp applies none for qwen2; omitting NFC keeps HF and
  llama.cpp tokenizations identical), no BOS added (Qwen convention: add_bos_token = false).
The Qwen2 regex (not GPT-2's) is used because it splits digits one by one and keeps newlines in
their own pre-tokens, which suits a small vocabulary and is exactly llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2.
Special tokens: <|endoftext|> (id 16381, eos/pad/document separator), <|im_start|> (16382),
<|im_end|> (16383) for a ChatML template.

Also writes the token streams used by tools/train/train.py (uint16, little-endian .npy):
  train.npy  every training document encoded, each followed by <|endoftext|>
  valid.npy  valid.txt encoded as ONE string, exactly what `meki-run perplexity valid.txt` sees.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 16384
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2/Qwen2.5/Qwen3), = llama.cpp's qwen2.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
                 " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def build_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="target/corpus")
    ap.add_argument("--out", default=None, help="default: <corpus>/tok")
    args = ap.parse_args()
    out = args.out or os.path.join(args.corpus, "tok")
    os.makedirs(out, exist_ok=True)

    docs = [json.loads(l) for l in open(os.path.join(args.corpus, "train_docs.jsonl"), encoding="utf-8")]
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIALS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    # Specials go last (ids 16381..16383), like Qwen's added tokens after the BPE vocab.
    tok.add_special_tokens(SPECIALS)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    eos = tok.token_to_id("<|endoftext|>")
    assert eos == VOCAB_SIZE - 3
    tok.save(os.path.join(out, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 32768,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True} for s in SPECIALS},
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)

    # Pre-tokenize once so the GPU never waits on tokenization.
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    train = np.asarray(ids, dtype=np.uint16)
    valid_text = open(os.path.join(args.corpus, "valid.txt"), encoding="utf-8").read()
    valid = np.asarray(tok.encode(valid_text, add_special_tokens=False).ids, dtype=np.uint16)
    np.save(os.path.join(out, "train.npy"), train)
    np.save(os.path.join(out, "valid.npy"), valid)
    info = {"vocab_size": VOCAB_SIZE, "eos_id": eos, "specials": {s: tok.token_to_id(s) for s in SPECIALS},
            "pre_tokenizer": "qwen2", "train_tokens": int(train.size), "valid_tokens": int(valid.size),
            "train_chars_per_token": sum(len(d) for d in docs) / max(1, train.size - len(docs)),
            "sha256": {f: hashlib.sha256(open(os.path.join(out, f), "rb").read()).hexdigest()
                       for f in ("tokenizer.json", "train.npy", "valid.npy")}}
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
