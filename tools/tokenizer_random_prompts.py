#!/usr/bin/env python3
"""Write tests/fixtures/tokenizer/random.txt: seeded random texts built from segments that
stress pre-tokenizers and special-token partitioning (letters of many scripts, marks,
digits, symbols, emoji, whitespace kinds, contractions, special token texts, unassigned and
private-use code points). Separated like llama.cpp's .inp files."""
import random
import sys

SEGMENTS = [
    "a", "Z", "hello", " world", "The", " quick", "brown", "x", "qu'il", "DON'T", "'s", "'ll", "'VE", "'d", "'", "''",
    "0", "7", "42", "2024", "1234567", "3.14", "1,000", "²", "٣٤", "Ⅻ", "½",
    ".", ",", "!", "?", "...", "--", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "#", "@", "$", "€", "%", "^", "&", "*", "_", "+", "=", "|", "~", "`", "\"",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\u00a0", "\u3000", "\u2028", "\u200b", "\u200d", "\u0085", "\x0b", "\x0c",
    "é", "ß", "Ω", "я", "Привет", "中", "日本", "한국어", "ไทย", "עברית", "مرحبا", "हिन्दी", "e\u0301", "\u0903", "ñ", "Ǆ", "ǅ",
    "🦙", "😀", "👍🏽", "👩‍💻", "🇫🇷", "✅", "∑", "√", "𝔸", "ꙮ", "\U0001FA77", "\U00031350", "\U0002EBF0", "\u0378", "\ue000", "\U000F0000", "\x01", "\x7f",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|begin_of_text|>", "<s>", "</s>", "<unk>", "<|im_", "|>", "<|",
    "▁", "Ġ", "Ċ", "<0x0A>", "[INST]",
]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rng = random.Random(20261125)
    sep = "\n__ggml_vocab_test__\n"
    texts = []
    while len(texts) < n:
        t = "".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 24)))
        if sep not in t and t:
            texts.append(t)
    sys.stdout.write(sep.join(texts))


if __name__ == "__main__":
    main()
