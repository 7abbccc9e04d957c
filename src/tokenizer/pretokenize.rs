//! Pre-tokenizers of byte-level BPE vocabularies: split text into words before merging.
//!
//! llama.cpp names each split regex by `tokenizer.ggml.pre` and runs hand-written matchers
//! for the common ones (src/unicode.cpp); these are equivalent hand-written matchers, so no
//! regex engine (the regexes need the `\s+(?!\S)` look-ahead) is involved:
//!
//! - `gpt2`:   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! - `llama3`: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! - `qwen2`:  as `llama3` with `\p{N}` (one digit per word) instead of `\p{N}{1,3}`.
//! - `starcoder` (also refact, command-r, smollm, ...): first `\p{N}` (every digit alone),
//!   then `gpt2` within the pieces between digits.
//! - `qwen35`: as `qwen2` with marks in words: `[\p{L}\p{M}]+`, `[^\s\p{L}\p{M}\p{N}]+`.

use super::unicode::{char_flags, CharFlags};
use super::TokenizerError;

/// A supported split rule, chosen from the GGUF `tokenizer.ggml.pre` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    /// `\p{N}` split first, then `gpt2`.
    DigitsThenGpt2,
}

/// What a `tokenizer.ggml.pre` name implies, as llama.cpp's vocabulary loader sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreTokenizerConfig {
    pub rule: PreTokenizer,
    /// Look up a whole pre-token in the vocabulary before merging (`ignore_merges`).
    pub ignore_merges: bool,
    /// Detokenization removes spaces before punctuation (`clean_spaces`).
    pub clean_spaces: bool,
    /// Default of `add_bos` when the GGUF does not say.
    pub add_bos: bool,
}

impl PreTokenizer {
    /// Map a `tokenizer.ggml.pre` value to its split rule and flags (llama.cpp's grouping of
    /// names). Anything else is an error: a wrong split silently changes every token.
    pub fn from_gguf_name(name: &str) -> Result<PreTokenizerConfig, TokenizerError> {
        use PreTokenizer::*;
        let cfg = |rule, ignore_merges, clean_spaces, add_bos| PreTokenizerConfig {
            rule,
            ignore_merges,
            clean_spaces,
            add_bos,
        };
        Ok(match name {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => cfg(Llama3, true, true, true),
            "dbrx" | "smaug-bpe" => cfg(Llama3, false, true, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" => {
                cfg(Qwen2, false, false, false)
            }
            "stablelm2" | "megrez" => cfg(Qwen2, false, true, false),
            "qwen35" => cfg(Qwen35, false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                cfg(DigitsThenGpt2, false, true, false)
            }
            "command-r" | "smollm" => cfg(DigitsThenGpt2, false, false, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "exaone4" => cfg(Gpt2, false, true, false),
            "trillion" | "granite-docling" => cfg(Gpt2, false, false, false),
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        })
    }
}

/// Reusable scratch space for splitting (avoids an allocation per fragment).
#[derive(Default)]
pub struct Splitter {
    /// `(flags, byte offset)` of each code point of the current text.
    chars: Vec<(char, CharFlags, u32)>,
}

impl Splitter {
    /// Split `text` into words; pushes `(start, end)` byte ranges to `out`.
    pub fn split(&mut self, pre: PreTokenizer, text: &str, out: &mut Vec<(usize, usize)>) {
        self.chars.clear();
        self.chars.extend(
            text.char_indices()
                .map(|(i, c)| (c, char_flags(c), i as u32)),
        );
        let cur = Cursor {
            chars: &self.chars,
            text_len: text.len(),
        };
        match pre {
            PreTokenizer::Gpt2 => cur.split_gpt2(out),
            PreTokenizer::Llama3 => cur.split_llama3(3, false, out),
            PreTokenizer::Qwen2 => cur.split_llama3(1, false, out),
            PreTokenizer::Qwen35 => cur.split_llama3(1, true, out),
            PreTokenizer::DigitsThenGpt2 => {
                // each number code point is a piece; gpt2 splits the runs between them, with
                // look-ahead ending at the run's end
                let chars = &self.chars;
                let mut i = 0;
                while i < chars.len() {
                    let mut j = i + 1;
                    if !chars[i].1.is_number() {
                        while j < chars.len() && !chars[j].1.is_number() {
                            j += 1;
                        }
                    }
                    let byte_end = chars.get(j).map_or(text.len(), |c| c.2 as usize);
                    let run = Cursor {
                        chars: &chars[i..j],
                        text_len: byte_end,
                    };
                    if chars[i].1.is_number() {
                        out.push((chars[i].2 as usize, byte_end));
                    } else {
                        run.split_gpt2(out);
                    }
                    i = j;
                }
            }
        }
    }
}

struct Cursor<'a> {
    chars: &'a [(char, CharFlags, u32)],
    text_len: usize,
}

impl Cursor<'_> {
    fn n(&self) -> usize {
        self.chars.len()
    }
    fn cpt(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|c| c.0)
    }
    fn flags(&self, i: usize) -> Option<CharFlags> {
        self.chars.get(i).map(|c| c.1)
    }
    fn is(&self, i: usize, p: impl Fn(CharFlags) -> bool) -> bool {
        self.flags(i).is_some_and(p)
    }
    fn byte(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.text_len, |c| c.2 as usize)
    }
    fn emit(&self, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
        if end > start {
            out.push((self.byte(start), self.byte(end)));
        }
    }
    /// Length of a contraction (`'s`, `'re`, ...) at `pos`, 0 if none.
    fn contraction(&self, pos: usize, fold_case: bool) -> usize {
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.n() {
            return 0;
        }
        let low = |i: usize| {
            let c = self.cpt(i).unwrap_or('\0');
            if fold_case {
                c.to_ascii_lowercase()
            } else {
                c
            }
        };
        let c1 = low(pos + 1);
        if matches!(c1, 's' | 't' | 'm' | 'd') {
            return 2;
        }
        if pos + 2 < self.n() {
            let c2 = low(pos + 2);
            if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return 3;
            }
        }
        0
    }
    /// Whitespace run at `pos`: its length and the end of its last `\r`/`\n` (0 if none).
    fn whitespace_run(&self, pos: usize) -> (usize, usize) {
        let (mut k, mut last_rn) = (0, 0);
        while self.is(pos + k, |f| f.is_whitespace()) {
            if matches!(self.cpt(pos + k), Some('\r' | '\n')) {
                last_rn = pos + k + 1;
            }
            k += 1;
        }
        (k, last_rn)
    }

    fn split_gpt2(&self, out: &mut Vec<(usize, usize)>) {
        let n = self.n();
        let mut pos = 0;
        while pos < n {
            let start = pos;
            let c = self.cpt(pos);
            let k = self.contraction(pos, false);
            if k > 0 {
                pos += k;
                self.emit(start, pos, out);
                continue;
            }
            let space = c == Some(' ');
            let f2 = self.flags(if space { pos + 1 } else { pos });
            let other = |f: CharFlags| !(f.is_whitespace() || f.is_letter() || f.is_number());
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let class: Option<fn(CharFlags) -> bool> = match f2 {
                Some(f) if f.is_letter() => Some(|f: CharFlags| f.is_letter()),
                Some(f) if f.is_number() => Some(|f: CharFlags| f.is_number()),
                Some(f) if other(f) => {
                    Some(|f: CharFlags| !(f.is_whitespace() || f.is_letter() || f.is_number()))
                }
                _ => None,
            };
            if let Some(in_class) = class {
                pos += usize::from(space);
                while self.is(pos, in_class) {
                    pos += 1;
                }
                self.emit(start, pos, out);
                continue;
            }
            let (n_ws, _) = self.whitespace_run(pos);
            if n_ws > 1 && pos + n_ws < n {
                // `\s+(?!\S)`: leave the last space to prefix the next word
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            self.emit(start, pos, out);
        }
    }

    /// llama3 (`max_digits` = 3), qwen2 (`max_digits` = 1) and qwen35 (qwen2 where marks
    /// count as letters: `with_marks`).
    fn split_llama3(&self, max_digits: usize, with_marks: bool, out: &mut Vec<(usize, usize)>) {
        let wordy = |g: CharFlags| g.is_letter() || (with_marks && g.is_mark());
        let n = self.n();
        let mut pos = 0;
        while pos < n {
            let start = pos;
            let c = self.cpt(pos).unwrap_or('\0');
            let f = self.flags(pos).expect("pos < n");
            let k = self.contraction(pos, true);
            if k > 0 {
                pos += k;
                self.emit(start, pos, out);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(c == '\r' || c == '\n' || f.is_number()) && (wordy(f) || self.is(pos + 1, wordy)) {
                pos += 1;
                while self.is(pos, wordy) {
                    pos += 1;
                }
                self.emit(start, pos, out);
                continue;
            }
            // `\p{N}{1,max_digits}`
            if f.is_number() {
                let mut ini = pos;
                while self.is(pos, |g| g.is_number()) {
                    pos += 1;
                    if pos - ini >= max_digits {
                        self.emit(ini, pos, out);
                        ini = pos;
                    }
                }
                self.emit(ini, pos, out);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (a lone trailing space also lands here)
            let space = c == ' ';
            let f2 = if space { self.flags(pos + 1) } else { Some(f) };
            let other = |g: CharFlags| !(g.is_whitespace() || wordy(g) || g.is_number());
            if f2.is_none_or(other) {
                pos += usize::from(space);
                while self.is(pos, other) {
                    pos += 1;
                }
                while matches!(self.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                self.emit(start, pos, out);
                continue;
            }
            let (n_ws, last_rn) = self.whitespace_run(pos);
            if last_rn > 0 {
                // `\s*[\r\n]+`
                pos = last_rn;
            } else if n_ws > 1 && pos + n_ws < n {
                // `\s+(?!\S)`
                pos += n_ws - 1;
            } else if n_ws > 0 {
                pos += n_ws;
            } else {
                pos += 1;
            }
            self.emit(start, pos, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        s.split(pre, text, &mut out);
        // the words tile the text
        let mut at = 0;
        for &(a, b) in &out {
            assert_eq!(a, at);
            at = b;
        }
        assert_eq!(at, text.len());
        out.iter().map(|&(a, b)| &text[a..b]).collect()
    }

    #[test]
    fn gpt2_rules() {
        use PreTokenizer::Gpt2;
        assert_eq!(words(Gpt2, "Hello world"), ["Hello", " world"]);
        assert_eq!(
            words(Gpt2, "I'm  here 123"),
            ["I", "'m", " ", " here", " 123"]
        );
        assert_eq!(words(Gpt2, "a  \n"), ["a", "  \n"]);
        assert_eq!(words(Gpt2, "x!!  y"), ["x", "!!", " ", " y"]);
        assert_eq!(words(Gpt2, "'S"), ["'", "S"]);
    }

    #[test]
    fn llama3_rules() {
        use PreTokenizer::{Llama3, Qwen2};
        assert_eq!(words(Llama3, "12345 I'M"), ["123", "45", " I", "'M"]);
        assert_eq!(words(Qwen2, "123"), ["1", "2", "3"]);
        assert_eq!(words(Llama3, "a.\n\nb"), ["a", ".\n\n", "b"]);
        assert_eq!(words(Llama3, "  \n  x"), ["  \n", " ", " x"]);
        assert_eq!(words(Llama3, "x "), ["x", " "]);
        assert_eq!(words(Llama3, "我想在apple"), ["我想在apple"]);
        // a combining mark splits a qwen2 word but not a qwen35 word
        assert_eq!(words(Qwen2, "ne\u{301}e"), ["ne", "\u{301}e"]);
        assert_eq!(words(PreTokenizer::Qwen35, "ne\u{301}e"), ["ne\u{301}e"]);
    }

    #[test]
    fn unknown_name_is_an_error() {
        let e = PreTokenizer::from_gguf_name("no-such-pre").unwrap_err();
        assert!(e.to_string().contains("no-such-pre"));
    }
}
