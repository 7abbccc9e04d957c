//! SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`), as llama.cpp's
//! `llm_tokenizer_spm_session`: start from UTF-8 characters, repeatedly merge the adjacent
//! pair whose concatenation is the vocabulary token of highest score (leftmost on ties);
//! leftover characters that are not tokens become `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::hash::FxBuild;

const NONE: u32 = u32::MAX;

/// Distinct chunks whose tokens one `encode` call remembers.
const CHUNK_CACHE_ENTRIES: usize = 1 << 16;

/// Reusable per-call work space.
#[derive(Default)]
pub(crate) struct SpmScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl Ord for Bigram {
    // max-heap: highest score first, then the leftmost pair
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// What the SPM merge loop reads from the vocabulary.
pub(crate) struct SpmModel {
    /// `<0xXX>` token of each byte (else the one-character token, else `NONE`).
    pub(crate) byte_token: [u32; 256],
    /// Used where a byte has no token at all (llama.cpp aborts there).
    pub(crate) unk: u32,
    /// No token contains `▁` after another character, so no merge crosses the start of a
    /// `▁` run: text can be merged run by run (same result, small queues, linear time).
    split_at_space: bool,
}

impl SpmModel {
    pub(crate) fn new(
        token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
        unk: Option<u32>,
    ) -> SpmModel {
        let mut byte_token = [NONE; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            if let Some(&id) = token_to_id.get(hex.as_bytes()) {
                *slot = id;
            } else if let Some(&id) = token_to_id.get(&[b as u8][..]) {
                *slot = id;
            }
        }
        let split_at_space = token_to_id.keys().all(|t| {
            let t = String::from_utf8_lossy(t);
            let mut prev = '▁';
            t.chars().all(|c| {
                let ok = c != '▁' || prev == '▁';
                prev = c;
                ok
            })
        });
        SpmModel {
            byte_token,
            unk: unk.unwrap_or(NONE),
            split_at_space,
        }
    }

    /// Tokens of `text` (spaces already escaped to `▁`).
    pub(crate) fn encode(
        &self,
        text: &str,
        token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
        scores: &[f32],
        scratch: &mut SpmScratch,
        out: &mut Vec<u32>,
    ) {
        if !self.split_at_space {
            return self.encode_chunk(text, token_to_id, scores, scratch, out);
        }
        // chunks (words) repeat a lot in text: remember each distinct chunk's tokens
        let mut cache: HashMap<&str, (usize, usize), FxBuild> = HashMap::default();
        let mut cached_ids: Vec<u32> = Vec::new();
        let mut chunk = |a: usize, b: usize, scratch: &mut SpmScratch, out: &mut Vec<u32>| {
            let piece = &text[a..b];
            if let Some(&(at, len)) = cache.get(piece) {
                out.extend_from_slice(&cached_ids[at..at + len]);
                return;
            }
            let before = out.len();
            self.encode_chunk(piece, token_to_id, scores, scratch, out);
            if cache.len() < CHUNK_CACHE_ENTRIES {
                cache.insert(piece, (cached_ids.len(), out.len() - before));
                cached_ids.extend_from_slice(&out[before..]);
            }
        };
        let mut start = 0;
        let mut prev = '▁';
        for (i, c) in text.char_indices() {
            if c == '▁' && prev != '▁' {
                chunk(start, i, scratch, out);
                start = i;
            }
            prev = c;
        }
        chunk(start, text.len(), scratch, out);
    }

    fn encode_chunk(
        &self,
        text: &str,
        token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
        scores: &[f32],
        scratch: &mut SpmScratch,
        out: &mut Vec<u32>,
    ) {
        let bytes = text.as_bytes();
        let syms = &mut scratch.symbols;
        syms.clear();
        let mut it = text.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            let idx = syms.len() as u32;
            let last = it.peek().is_none();
            syms.push(Symbol {
                start: i as u32,
                len: c.len_utf8() as u32,
                prev: if idx == 0 { NONE } else { idx - 1 },
                next: if last { NONE } else { idx + 1 },
            });
        }
        if syms.is_empty() {
            return;
        }
        let queue = &mut scratch.queue;
        queue.clear();
        let try_pair = |syms: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: u32, right: u32| {
            if left == NONE || right == NONE {
                return;
            }
            let (l, r) = (syms[left as usize], syms[right as usize]);
            let piece = &bytes[l.start as usize..(l.start + l.len + r.len) as usize];
            if let Some(&id) = token_to_id.get(piece) {
                queue.push(Bigram {
                    score: scores[id as usize],
                    left,
                    right,
                    size: l.len + r.len,
                });
            }
        };
        for i in 1..syms.len() as u32 {
            try_pair(syms, queue, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
            // stale: a side was merged away or has grown since the pair was queued
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            syms[b.left as usize].len += r.len;
            syms[b.left as usize].next = r.next;
            syms[b.right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = b.left;
            }
            try_pair(syms, queue, l.prev, b.left);
            try_pair(syms, queue, b.left, r.next);
        }
        let mut i = 0u32;
        while i != NONE {
            let s = syms[i as usize];
            let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
            if let Some(&id) = token_to_id.get(piece) {
                out.push(id);
            } else {
                for &byte in piece {
                    let t = self.byte_token[byte as usize];
                    let t = if t == NONE { self.unk } else { t };
                    if t != NONE {
                        out.push(t);
                    }
                }
            }
            i = s.next;
        }
    }
}
