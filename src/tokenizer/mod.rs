//! Tokenizers built from GGUF metadata, token for token equal to llama.cpp
//! (`src/llama-vocab.cpp`, `src/unicode.cpp`):
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE with a named pre-tokenizer
//!   (`tokenizer.ggml.pre`: `qwen2`, `qwen35`, `llama-bpe`/llama3, `gpt-2`, `starcoder` and
//!   the aliases llama.cpp groups with them; anything else is an error);
//! - `tokenizer.ggml.model = "llama"`: SentencePiece-style BPE with `<0xXX>` byte fallback.
//!
//! Layout: [`pretokenize`] (split rules), `bpe` (rank merges), `spm` (score merges),
//! `special` (cutting special-token text out of the input), [`unicode`] (code-point classes,
//! GPT-2 byte map), [`stream`] (UTF-8-safe incremental detokenization); this module holds the
//! vocabulary, the special-token roles and flags, and the encode/decode API.
//!
//! Where llama.cpp's choice depends on hash-map iteration order (which of several candidate
//! texts becomes EOT/FIM when the GGUF does not name one; the order of special tokens of
//! equal text length), the first candidate in llama.cpp's list order / the lower id is used.
//!
//! ```no_run
//! use meki::gguf::GgufFile;
//! use meki::tokenizer::{StreamDecoder, Tokenizer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gguf = GgufFile::open("model.gguf")?;
//! let tok = Tokenizer::from_gguf(&gguf)?;
//! let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", true, true);
//! let mut stream = StreamDecoder::new();
//! for &id in &ids {
//!     print!("{}", stream.push(&tok, id));
//! }
//! print!("{}", stream.finish());
//! # Ok(())
//! # }
//! ```

mod bpe;
mod hash;
pub mod pretokenize;
mod special;
mod spm;
pub mod stream;
pub mod unicode;

use std::collections::{BTreeSet, HashMap};

use crate::gguf::{Array, GgufFile, Metadata, Value};
use bpe::{BpeModel, BpeScratch};
use hash::FxBuild;
pub use pretokenize::{PreTokenizer, PreTokenizerConfig};
use special::{Fragment, SpecialToken};
use spm::{SpmModel, SpmScratch};
pub use stream::StreamDecoder;

/// Why a tokenizer could not be built from metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key is missing or has the wrong type or an invalid value.
    #[error("tokenizer metadata key {key:?}: {message}")]
    Metadata { key: String, message: String },
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error(
        "unsupported tokenizer model {0:?} (tokenizer.ggml.model; supported: \"gpt2\", \"llama\")"
    )]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a split rule this crate does not implement.
    #[error(
        "unsupported pre-tokenizer {0:?} (tokenizer.ggml.pre; supported: qwen2, qwen35, llama-bpe/llama3, gpt-2, starcoder and aliases)"
    )]
    UnsupportedPreTokenizer(String),
}

fn meta_err(key: &str, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Metadata {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Token attributes (llama.cpp's `llama_token_attr` bits).
pub mod attr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;

    /// Attribute of a GGUF `tokenizer.ggml.token_type` value.
    pub fn from_token_type(t: i32) -> u16 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => UNDEFINED,
        }
    }
}

/// Which algorithm turns text fragments into tokens (boxed: both carry KBs of byte maps).
enum Model {
    Bpe {
        bpe: Box<BpeModel>,
        pre: PreTokenizerConfig,
    },
    Spm {
        spm: Box<SpmModel>,
    },
}

/// Accessor of one role's slot in [`SpecialIds`].
type RoleSlot = fn(&mut SpecialIds) -> &mut Option<u32>;

/// The ids of the special roles a vocabulary may define.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A tokenizer: vocabulary, merge rules, special tokens and flags from GGUF metadata.
pub struct Tokenizer {
    model_name: String,
    pre_name: String,
    model: Model,
    texts: Vec<Box<[u8]>>,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    /// Text -> id; for duplicate texts the last id wins (as llama.cpp's map assignment).
    token_to_id: HashMap<Box<[u8]>, u32, FxBuild>,
    /// `token_to_piece(id, special = true)` of every token.
    pieces: Vec<Box<[u8]>>,
    /// Control, user-defined and unknown tokens, longest text first.
    specials: Vec<SpecialToken>,
    ids: SpecialIds,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model_name)
            .field("pre", &self.pre_name)
            .field("n_vocab", &self.texts.len())
            .field("ids", &self.ids)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

/// Distinct words whose tokens one `encode` call remembers.
const WORD_CACHE_ENTRIES: usize = 1 << 16;

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_MERGES: &str = "tokenizer.ggml.merges";
const K_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const K_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const K_ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// Texts that mark end-of-generation tokens (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Optional integer-valued key as u64 (any integer width); wrong type is an error.
fn opt_uint(md: &Metadata, key: &str) -> Result<Option<u64>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64_lossless().map(Some).ok_or_else(|| {
            meta_err(
                key,
                format!("expected a non-negative integer, found {}", v.type_label()),
            )
        }),
    }
}

fn opt_bool(md: &Metadata, key: &str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(meta_err(
            key,
            format!("expected BOOL, found {}", v.type_label()),
        )),
    }
}

fn opt_str<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(meta_err(
            key,
            format!("expected STRING, found {}", v.type_label()),
        )),
    }
}

fn str_array<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [String]>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(Array::String(v))) => Ok(Some(v)),
        Some(v) => Err(meta_err(
            key,
            format!("expected [STRING], found {}", v.type_label()),
        )),
    }
}

/// Leading hex digits of `s` as a byte (C `strtol(s, 16)` on a 2-character field).
fn parse_hex_byte(s: &[u8]) -> u8 {
    let mut v = 0u32;
    for &c in s {
        match (c as char).to_digit(16) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
    }
    v as u8
}

impl Tokenizer {
    /// Build the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_metadata(gguf.metadata())
    }

    /// Build the tokenizer described by `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model_name = opt_str(md, K_MODEL)?
            .ok_or_else(|| meta_err(K_MODEL, "missing"))?
            .to_string();
        let pre_name = opt_str(md, K_PRE)?.unwrap_or("").to_string();
        let is_bpe = match model_name.as_str() {
            "gpt2" => true,
            "llama" => false,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };

        // vocabulary: texts, scores, attributes
        let tokens = str_array(md, K_TOKENS)?.ok_or_else(|| meta_err(K_TOKENS, "missing"))?;
        let n = tokens.len();
        if n == 0 || n > i32::MAX as usize {
            return Err(meta_err(
                K_TOKENS,
                format!("vocabulary size {n} out of range"),
            ));
        }
        let texts: Vec<Box<[u8]>> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // llama.cpp renames empty tokens so that every text is unique and non-empty
                if t.is_empty() {
                    format!("[EMPTY_{i}]").into_bytes().into_boxed_slice()
                } else {
                    t.as_bytes().into()
                }
            })
            .collect();
        let scores: Vec<f32> = match md.get(K_SCORES) {
            None => vec![0.0; n],
            Some(Value::Array(Array::F32(v))) if v.len() >= n => v[..n].to_vec(),
            Some(Value::Array(Array::I32(v))) if v.len() >= n => {
                v[..n].iter().map(|&s| s as f32).collect()
            }
            Some(v) => {
                return Err(meta_err(
                    K_SCORES,
                    format!(
                        "expected [FLOAT32] or [INT32] of at least {n} entries, found {}",
                        v.type_label()
                    ),
                ))
            }
        };
        // -0.0 and 0.0 compare equal in llama.cpp's merge queue; keep one zero
        let scores: Vec<f32> = scores
            .into_iter()
            .map(|s| if s == 0.0 { 0.0 } else { s })
            .collect();
        let mut attrs: Vec<u16> = match md.get(K_TYPES) {
            None => vec![attr::NORMAL; n],
            Some(Value::Array(Array::I32(v))) if v.len() >= n => {
                v[..n].iter().map(|&t| attr::from_token_type(t)).collect()
            }
            Some(v) => {
                return Err(meta_err(
                    K_TYPES,
                    format!(
                        "expected [INT32] of at least {n} entries, found {} of {}",
                        v.type_label(),
                        array_len(v)
                    ),
                ))
            }
        };
        let mut token_to_id: HashMap<Box<[u8]>, u32, FxBuild> = HashMap::default();
        token_to_id.reserve(n);
        for (i, t) in texts.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }

        // flags and the tokenizer proper
        let (mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces);
        let mut ids = SpecialIds::default();
        let pre = if is_bpe {
            if pre_name.is_empty() {
                return Err(TokenizerError::UnsupportedPreTokenizer(
                    "(missing; llama.cpp would fall back to 'default')".into(),
                ));
            }
            let pre = PreTokenizer::from_gguf_name(&pre_name)?;
            add_bos = pre.add_bos;
            add_eos = false;
            add_space_prefix = false;
            clean_spaces = pre.clean_spaces;
            ids.bos = Some(11);
            ids.eos = Some(11);
            Some(pre)
        } else {
            add_bos = true;
            add_eos = false;
            add_space_prefix = true;
            clean_spaces = false;
            ids.bos = Some(1);
            ids.eos = Some(2);
            ids.unk = Some(0);
            None
        };
        if let Some(v) = opt_bool(md, K_ADD_PREFIX)? {
            add_space_prefix = v;
        }

        // special ids: defaults out of range are dropped; metadata ids in range win
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        ids.bos = in_range(ids.bos);
        ids.eos = in_range(ids.eos);
        ids.unk = in_range(ids.unk);
        let keyed: [(&str, RoleSlot); 17] = [
            ("tokenizer.ggml.bos_token_id", |s| &mut s.bos),
            ("tokenizer.ggml.eos_token_id", |s| &mut s.eos),
            ("tokenizer.ggml.eot_token_id", |s| &mut s.eot),
            ("tokenizer.ggml.eom_token_id", |s| &mut s.eom),
            ("tokenizer.ggml.unknown_token_id", |s| &mut s.unk),
            ("tokenizer.ggml.seperator_token_id", |s| &mut s.sep),
            ("tokenizer.ggml.padding_token_id", |s| &mut s.pad),
            ("tokenizer.ggml.mask_token_id", |s| &mut s.mask),
            ("tokenizer.ggml.fim_pre_token_id", |s| &mut s.fim_pre),
            ("tokenizer.ggml.fim_suf_token_id", |s| &mut s.fim_suf),
            ("tokenizer.ggml.fim_mid_token_id", |s| &mut s.fim_mid),
            ("tokenizer.ggml.fim_pad_token_id", |s| &mut s.fim_pad),
            ("tokenizer.ggml.fim_rep_token_id", |s| &mut s.fim_rep),
            ("tokenizer.ggml.fim_sep_token_id", |s| &mut s.fim_sep),
            // deprecated spellings, read last as llama.cpp does
            ("tokenizer.ggml.prefix_token_id", |s| &mut s.fim_pre),
            ("tokenizer.ggml.suffix_token_id", |s| &mut s.fim_suf),
            ("tokenizer.ggml.middle_token_id", |s| &mut s.fim_mid),
        ];
        for (key, slot) in keyed {
            if let Some(v) = opt_uint(md, key)? {
                // an out-of-range id keeps the default (llama.cpp warns and does the same)
                if v < n as u64 {
                    *slot(&mut ids) = Some(v as u32);
                }
            }
        }
        if let Some(v) = opt_bool(md, K_ADD_BOS)? {
            add_bos = v;
        }
        if let Some(v) = opt_bool(md, K_ADD_EOS)? {
            add_eos = v;
        }
        let model = match pre {
            Some(pre) => {
                let merges = str_array(md, K_MERGES)?.ok_or_else(|| {
                    meta_err(K_MERGES, "missing (required for gpt2 vocabularies)")
                })?;
                let merges: Vec<Box<[u8]>> = merges.iter().map(|m| m.as_bytes().into()).collect();
                Model::Bpe {
                    bpe: Box::new(BpeModel::new(
                        &token_to_id,
                        n as u32,
                        &merges,
                        pre.ignore_merges,
                    )),
                    pre,
                }
            }
            None => Model::Spm {
                spm: Box::new(SpmModel::new(&token_to_id, ids.unk)),
            },
        };

        let eog = detect_special_roles(&token_to_id, &texts, &mut attrs, &mut ids);

        // special tokens for partitioning: longest text first (ties by id; llama.cpp's
        // unstable sort leaves them in an unspecified order)
        let mut special_ids: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_ids.sort_by(|&a, &b| {
            texts[b as usize]
                .len()
                .cmp(&texts[a as usize].len())
                .then(a.cmp(&b))
        });
        let strip = strip_rules(md, &token_to_id, &special_ids)?;
        let specials = special_ids
            .into_iter()
            .filter_map(|id| {
                // a non-UTF-8 text cannot be matched at character boundaries; skip it
                let text = std::str::from_utf8(&texts[id as usize]).ok()?.to_string();
                let needs_parse_special = attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) != 0;
                let (lstrip, rstrip) = strip.get(&id).copied().unwrap_or((false, false));
                Some(SpecialToken {
                    id,
                    text,
                    needs_parse_special,
                    lstrip,
                    rstrip,
                })
            })
            .collect();

        let pieces = (0..n)
            .map(|i| piece_of(&texts[i], attrs[i], is_bpe))
            .collect();

        Ok(Tokenizer {
            model_name,
            pre_name,
            model,
            texts,
            scores,
            attrs,
            token_to_id,
            pieces,
            specials,
            ids,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
        })
    }

    /// Tokenize `text`. `add_special` adds BOS/EOS as the vocabulary's flags say;
    /// `parse_special` turns text of control tokens (e.g. `<|im_start|>`) into those tokens
    /// (user-defined tokens are always matched). llama.cpp tools use `true, true` for prompts.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let frags = special::partition(text, &self.specials, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.ids.bos);
        }
        match &self.model {
            Model::Bpe { bpe, pre } => {
                let mut splitter = pretokenize::Splitter::default();
                let mut scratch = BpeScratch::default();
                let mut words = Vec::new();
                // words repeat a lot in text: remember each distinct word's tokens (per call)
                let mut cache: HashMap<&[u8], (usize, usize), FxBuild> = HashMap::default();
                let mut cached_ids: Vec<u32> = Vec::new();
                for f in frags {
                    match f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(a, b) => {
                            words.clear();
                            splitter.split(pre.rule, &text[a..b], &mut words);
                            for &(s, e) in &words {
                                let word = &text.as_bytes()[a + s..a + e];
                                if word.len() < 2 {
                                    bpe.encode_word(
                                        word,
                                        &self.token_to_id,
                                        &mut scratch,
                                        &mut out,
                                    );
                                } else if let Some(&(at, len)) = cache.get(word) {
                                    out.extend_from_slice(&cached_ids[at..at + len]);
                                } else {
                                    let before = out.len();
                                    bpe.encode_word(
                                        word,
                                        &self.token_to_id,
                                        &mut scratch,
                                        &mut out,
                                    );
                                    if cache.len() < WORD_CACHE_ENTRIES {
                                        cache.insert(word, (cached_ids.len(), out.len() - before));
                                        cached_ids.extend_from_slice(&out[before..]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Model::Spm { spm } => {
                let mut scratch = SpmScratch::default();
                let mut escaped = String::new();
                // a space is prefixed to the text and to text after a special token
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(a, b) => {
                            escaped.clear();
                            if self.add_space_prefix && prev_special {
                                escaped.push('▁');
                            }
                            for c in text[a..b].chars() {
                                escaped.push(if c == ' ' { '▁' } else { c });
                            }
                            spm.encode(
                                &escaped,
                                &self.token_to_id,
                                &self.scores,
                                &mut scratch,
                                &mut out,
                            );
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.ids.eos);
        }
        out
    }

    /// Bytes a token stands for, rendering control tokens as their text (llama.cpp's
    /// `token_to_piece(special = true)`). Unknown ids give an empty piece.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p)
    }

    /// [`Tokenizer::token_to_piece`], with control and unknown tokens rendered as nothing
    /// when `special` is false.
    pub fn token_to_piece_with(&self, id: u32, special: bool) -> &[u8] {
        let Some(&a) = self.attrs.get(id as usize) else {
            return &[];
        };
        if !special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        &self.pieces[id as usize]
    }

    /// Text of token ids, as llama.cpp's `common_detokenize(special = true)`: pieces joined,
    /// the space-prefix of SentencePiece text removed, invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false, true)).into_owned()
    }

    /// llama.cpp's `llama_detokenize`: `remove_special` drops a leading BOS / trailing EOS that
    /// the flags would add; `unparse_special` renders control tokens as their text.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.ids.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special
            && self.add_eos
            && !ids.is_empty()
            && Some(ids[ids.len() - 1]) == self.ids.eos
        {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut piece = self.token_to_piece_with(id, unparse_special);
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }
    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }
    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }
    /// All special-role ids.
    pub fn special_ids(&self) -> &SpecialIds {
        &self.ids
    }
    /// Whether generation stops at this token (EOS, EOT, `<|im_end|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// The end-of-generation tokens.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// `tokenizer.ggml.model`.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }
    /// `tokenizer.ggml.pre` (empty for SentencePiece).
    pub fn pre_name(&self) -> &str {
        &self.pre_name
    }
    /// Raw vocabulary text of a token (byte-encoded for byte-level BPE).
    pub fn token_text(&self, id: u32) -> Option<&[u8]> {
        self.texts.get(id as usize).map(|t| &t[..])
    }
    /// Attribute bits ([`attr`]) of a token.
    pub fn token_attr(&self, id: u32) -> Option<u16> {
        self.attrs.get(id as usize).copied()
    }
    /// Id of the token with exactly this vocabulary text.
    pub fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text.as_bytes()).copied()
    }
    /// Number of BPE merge rules (0 for SentencePiece).
    pub fn n_merges(&self) -> usize {
        match &self.model {
            Model::Bpe { bpe, .. } => bpe.n_merges(),
            Model::Spm { .. } => 0,
        }
    }
}

fn array_len(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

/// `token_to_piece(special = true)` of one token.
fn piece_of(text: &[u8], a: u16, is_bpe: bool) -> Box<[u8]> {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        return text.into();
    }
    if a & attr::NORMAL != 0 {
        if !is_bpe {
            return String::from_utf8_lossy(text)
                .replace('▁', " ")
                .into_bytes()
                .into();
        }
        return decode_byte_level_piece(text).into();
    }
    if a & attr::BYTE != 0 {
        return Box::new([parse_hex_byte(text.get(3..5).unwrap_or(&[]))]);
    }
    Box::default()
}

/// Raw bytes of a byte-level BPE token; a character outside GPT-2's byte map becomes
/// `[UNK_BYTE_0x..<text>]` as in llama.cpp.
fn decode_byte_level_piece(text: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    let mut out = Vec::with_capacity(text.len());
    for c in s.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
    out
}

/// Find EOT/EOM/FIM tokens by text where the metadata does not name them, mark them as
/// control tokens, and collect the end-of-generation set (llama.cpp's heuristics).
fn detect_special_roles(
    token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
    texts: &[Box<[u8]>],
    attrs: &mut [u16],
    ids: &mut SpecialIds,
) -> BTreeSet<u32> {
    let find = |list: &[&str]| {
        list.iter()
            .find_map(|t| token_to_id.get(t.as_bytes()).copied())
    };
    // llama.cpp takes the first match in hash-map order; we take the first in list order
    let roles: [(RoleSlot, &[&str]); 8] = [
        (|s| &mut s.eot, EOT_TEXTS),
        (|s| &mut s.eom, &["<|eom_id|>"]),
        (|s| &mut s.fim_pre, FIM_PRE_TEXTS),
        (|s| &mut s.fim_suf, FIM_SUF_TEXTS),
        (|s| &mut s.fim_mid, FIM_MID_TEXTS),
        (|s| &mut s.fim_pad, FIM_PAD_TEXTS),
        (|s| &mut s.fim_rep, FIM_REP_TEXTS),
        (|s| &mut s.fim_sep, FIM_SEP_TEXTS),
    ];
    for (slot, list) in roles {
        let slot = slot(ids);
        if slot.is_none() {
            if let Some(id) = find(list) {
                *slot = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
    }
    // control tokens named "unused" are unused
    for &id in token_to_id.values() {
        let a = &mut attrs[id as usize];
        if *a & attr::CONTROL != 0 && contains(&texts[id as usize], b"unused") {
            *a |= attr::UNUSED;
        }
    }
    let mut eog = BTreeSet::new();
    eog.extend(ids.fim_pad);
    eog.extend(ids.fim_rep);
    eog.extend(ids.fim_sep);
    for t in EOG_TEXTS {
        if let Some(&id) = token_to_id.get(t.as_bytes()) {
            eog.insert(id);
            attrs[id as usize] |= attr::CONTROL;
        }
    }
    // gpt-oss: these are always rendered
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = token_to_id.get(t.as_bytes()) {
            attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend(ids.eos);
    eog.extend(ids.eot);
    eog.extend(ids.eom);
    let text_of = |id: u32| &texts[id as usize][..];
    let has =
        |eog: &BTreeSet<u32>, t: &str| eog.iter().find(|&&id| text_of(id) == t.as_bytes()).copied();
    // o200k_harmony / solar-open: "<|end|>" is not end-of-generation there
    if let Some(end) = has(&eog, "<|end|>") {
        let ret = has(&eog, "<|return|>").is_some();
        let call = has(&eog, "<|call|>").is_some() || has(&eog, "<|calls|>").is_some();
        let flush = has(&eog, "<|flush|>").is_some();
        if call && (ret || flush) {
            eog.remove(&end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // gemma4 / plamo: "</s>" is a normal token there
    if let Some(s) = has(&eog, "</s>") {
        if has(&eog, "<|tool_response>").is_some() || has(&eog, "<|plamo:eos|>").is_some() {
            eog.remove(&s);
            attrs[s as usize] = attr::NORMAL;
        }
    }
    eog
}

/// Per-model whitespace stripping around special tokens, which GGUF does not store;
/// llama.cpp sets it by model name (`general.name`): id -> (lstrip, rstrip).
fn strip_rules(
    md: &Metadata,
    token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
    special_ids: &[u32],
) -> Result<HashMap<u32, (bool, bool)>, TokenizerError> {
    let mut rules = HashMap::new();
    let name = opt_str(md, "general.name")?
        .unwrap_or("")
        .to_ascii_lowercase();
    let id_of = |t: &str| token_to_id.get(t.as_bytes()).copied();
    if name.contains("phi-3") || name.contains("phi3") {
        for &id in special_ids {
            rules.insert(id, (false, true));
        }
        if let Some(id) = id_of("</s>") {
            rules.insert(id, (false, true));
        }
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            if let Some(id) = id_of(t) {
                rules.insert(id, (false, false));
            }
        }
    } else if name.contains("modern-bert") {
        if let Some(id) = id_of("[MASK]") {
            rules.insert(id, (true, false));
        }
    }
    Ok(rules)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// llama.cpp's `clean_spaces` detokenization passes (in place, same index arithmetic):
/// drop the space before `?!.,`, around a lone `'`, and before `'s 'm 're 've`.
fn clean_up_spaces(t: &mut Vec<u8>) {
    // pass 1: " ?", " !", " .", " ,"
    let n1 = t.len();
    let mut total = usize::from(n1 > 0);
    for i in 1..n1 {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    // pass 2: " ' " -> "'"
    let n2 = t.len();
    let mut total = usize::from(n2 > 0);
    let mut i = 1;
    while i < n2 {
        let x = t[i];
        if x == b'\'' && i + 1 < n2 && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    t.truncate(total);
    // pass 3: " 's", " 'm", " 're", " 've"
    let n3 = t.len();
    let mut total = usize::from(n3 > 0);
    for i in 1..n3 {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n3 {
            let x1 = t[i + 1];
            if matches!(x1, b's' | b'm') {
                total -= 1;
            } else if i + 2 < n3 {
                let x2 = t[i + 2];
                if matches!(x1, b'r' | b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
}

#[cfg(test)]
mod tests;
