//! Byte-level BPE: merge the bytes of one pre-token by merge rank (lowest first, leftmost
//! on ties), as llama.cpp's `llm_tokenizer_bpe_session` does.
//!
//! Vocabulary and merge strings are in GPT-2's byte-encoded form (each byte is one printable
//! character). Every such string is interned to a symbol id (vocabulary tokens keep their
//! token id; merge parts that are not tokens get ids past the vocabulary), so merging works
//! on raw bytes and integer pairs without building strings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::hash::FxBuild;
use super::unicode::byte_to_char_table;

const NONE: u32 = u32::MAX;

/// Words up to this many bytes merge by rescanning (quadratic but allocation- and heap-free).
const SMALL_WORD: usize = 24;

/// Merge table and byte maps of a byte-level BPE vocabulary.
pub(crate) struct BpeModel {
    /// `(left symbol, right symbol)` as `left << 32 | right` -> `(rank, merged symbol)`.
    merges: HashMap<u64, (u32, u32), FxBuild>,
    /// Symbol of each single byte (its byte-encoded character), or `NONE`.
    byte_symbol: [u32; 256],
    /// Fallback token of each raw byte inside a symbol that is not a token, or `NONE`.
    /// llama.cpp looks up each byte of the byte-encoded text as a one-byte string, which
    /// only finds printable ASCII (the bytes that encode as themselves).
    byte_token: [u32; 256],
    /// Look a whole pre-token up in the vocabulary before merging (`ignore_merges`).
    ignore_merges: bool,
    n_vocab: u32,
}

/// Queued merge: `(rank, left, right, left symbol, right symbol, merged symbol)`; the
/// min-heap pops the lowest rank, then the leftmost pair.
type Candidate = Reverse<(u32, u32, u32, u32, u32, u32)>;

/// Reusable per-call work space.
#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Candidate>,
    rules: Vec<(u32, u32)>,
    /// The word in byte-encoded form (for whole-word lookups).
    encoded: String,
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

impl BpeModel {
    /// `token_to_id`: byte-encoded text -> token (the last id wins for duplicate texts, as in
    /// llama.cpp). `merges`: `"left right"` strings in rank order.
    pub(crate) fn new(
        token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
        n_vocab: u32,
        merges: &[Box<[u8]>],
        ignore_merges: bool,
    ) -> BpeModel {
        let mut extra: HashMap<Box<[u8]>, u32, FxBuild> = HashMap::default();
        let mut intern = |s: &[u8]| -> u32 {
            if let Some(&id) = token_to_id.get(s) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.into()).or_insert(next)
        };
        let mut merge_map: HashMap<u64, (u32, u32), FxBuild> = HashMap::default();
        merge_map.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // split at the first space after the first byte (a merge part may be " "-free
            // only; llama.cpp does the same)
            let Some(pos) = m.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (left, right) = (&m[..pos], &m[pos + 1..]);
            if left.is_empty() || right.is_empty() {
                continue;
            }
            let l = intern(left);
            let r = intern(right);
            let merged = intern(&[left, right].concat());
            // the first occurrence of a pair keeps its rank
            merge_map.entry(pair(l, r)).or_insert((rank as u32, merged));
        }
        let chars = byte_to_char_table();
        let mut byte_symbol = [NONE; 256];
        let mut byte_token = [NONE; 256];
        for b in 0..256 {
            let mut buf = [0u8; 4];
            let s = chars[b].encode_utf8(&mut buf).as_bytes();
            if let Some(&id) = token_to_id.get(s) {
                byte_symbol[b] = id;
                if s.len() == 1 {
                    byte_token[b] = id;
                }
            } else if let Some(&id) = extra.get(s) {
                byte_symbol[b] = id;
            }
        }
        BpeModel {
            merges: merge_map,
            byte_symbol,
            byte_token,
            ignore_merges,
            n_vocab,
        }
    }

    /// Number of merge rules kept.
    pub(crate) fn n_merges(&self) -> usize {
        self.merges.len()
    }

    /// Tokens of one pre-token given as raw bytes.
    /// `token_to_id` is the vocabulary the model was built from.
    pub(crate) fn encode_word(
        &self,
        word: &[u8],
        token_to_id: &HashMap<Box<[u8]>, u32, FxBuild>,
        scratch: &mut BpeScratch,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            let encoded = &mut scratch.encoded;
            encoded.clear();
            let chars = byte_to_char_table();
            encoded.extend(word.iter().map(|&b| chars[b as usize]));
            if let Some(&id) = token_to_id.get(encoded.as_bytes()) {
                out.push(id);
                return;
            }
        }
        if word.len() <= SMALL_WORD {
            self.merge_small(word, scratch);
        } else {
            self.merge_queued(word, scratch);
        }
        for s in scratch.symbols.iter().filter(|s| s.len > 0) {
            if s.id < self.n_vocab {
                out.push(s.id);
            } else {
                // not a token: fall back to single-byte tokens, dropping bytes without one
                let bytes = &word[s.start as usize..(s.start + s.len) as usize];
                out.extend(
                    bytes
                        .iter()
                        .map(|&b| self.byte_token[b as usize])
                        .filter(|&t| t != NONE),
                );
            }
        }
    }

    fn rule(&self, l: u32, r: u32) -> (u32, u32) {
        if l == NONE || r == NONE {
            return (NONE, NONE);
        }
        self.merges
            .get(&pair(l, r))
            .copied()
            .unwrap_or((NONE, NONE))
    }

    /// Short words: rescan the pair ranks after each merge (no queue). Picks the same merge
    /// as the queue does: the lowest rank, leftmost on ties.
    fn merge_small(&self, word: &[u8], scratch: &mut BpeScratch) {
        let syms = &mut scratch.symbols;
        syms.clear();
        syms.extend(word.iter().enumerate().map(|(i, &b)| Symbol {
            id: self.byte_symbol[b as usize],
            start: i as u32,
            len: 1,
            prev: NONE,
            next: NONE,
        }));
        // rules[i]: (rank, merged) of the pair (syms[i], syms[i + 1])
        let rules = &mut scratch.rules;
        rules.clear();
        rules.extend(syms.windows(2).map(|w| self.rule(w[0].id, w[1].id)));
        loop {
            let mut best = NONE;
            let mut at = 0;
            for (i, &(rank, _)) in rules.iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = i;
                }
            }
            if best == NONE {
                break;
            }
            let merged = rules[at].1;
            syms[at].id = merged;
            syms[at].len += syms[at + 1].len;
            syms.remove(at + 1);
            rules.remove(at);
            if at + 1 < syms.len() {
                rules[at] = self.rule(merged, syms[at + 1].id);
            }
            if at > 0 {
                rules[at - 1] = self.rule(syms[at - 1].id, merged);
            }
        }
    }

    /// Long words: a priority queue of candidate merges over a linked list of symbols, stale
    /// entries skipped when popped (O(n log n)).
    fn merge_queued(&self, word: &[u8], scratch: &mut BpeScratch) {
        let syms = &mut scratch.symbols;
        syms.clear();
        let n = word.len() as u32;
        syms.extend(word.iter().enumerate().map(|(i, &b)| {
            let i = i as u32;
            Symbol {
                id: self.byte_symbol[b as usize],
                start: i,
                len: 1,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            }
        }));
        let queue = &mut scratch.queue;
        queue.clear();
        for i in 1..n {
            self.push_pair(syms, queue, i - 1, i);
        }
        while let Some(Reverse((_, left, right, lid, rid, merged))) = queue.pop() {
            let (l, r) = (syms[left as usize], syms[right as usize]);
            // stale: one side was merged away or has grown since the pair was queued
            if l.len == 0 || r.len == 0 || l.id != lid || r.id != rid {
                continue;
            }
            let ls = &mut syms[left as usize];
            ls.id = merged;
            ls.len += r.len;
            ls.next = r.next;
            syms[right as usize].len = 0;
            if r.next != NONE {
                syms[r.next as usize].prev = left;
            }
            self.push_pair(syms, queue, l.prev, left);
            self.push_pair(syms, queue, left, r.next);
        }
    }

    fn push_pair(&self, syms: &[Symbol], queue: &mut BinaryHeap<Candidate>, left: u32, right: u32) {
        if left == NONE || right == NONE {
            return;
        }
        let (lid, rid) = (syms[left as usize].id, syms[right as usize].id);
        if lid == NONE || rid == NONE {
            return;
        }
        if let Some(&(rank, merged)) = self.merges.get(&pair(lid, rid)) {
            queue.push(Reverse((rank, left, right, lid, rid, merged)));
        }
    }
}

fn pair(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}
