//! Streaming detokenization: token pieces are byte strings and one character (an emoji, a
//! CJK character) is often split across tokens, so text is released only up to the last
//! complete UTF-8 sequence; the incomplete tail waits for the next token.

use super::Tokenizer;

/// Turns a stream of token ids into text without ever emitting a broken UTF-8 sequence.
///
/// Bytes that can never become valid UTF-8 are replaced by U+FFFD as soon as that is
/// certain; an incomplete tail is held back until completed or [`StreamDecoder::finish`].
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    hide_special: bool,
}

impl StreamDecoder {
    /// A decoder that renders control tokens as their text (like [`Tokenizer::decode`]).
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// A decoder that renders control and unknown tokens as nothing (llama.cpp's
    /// `token_to_piece(special = false)`, what chat front-ends print).
    pub fn without_special() -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            hide_special: true,
        }
    }

    /// Add one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        let piece = tokenizer.token_to_piece_with(id, !self.hide_special);
        self.push_bytes(piece)
    }

    /// Add raw bytes; returns the text that became complete (possibly empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&rest[..valid]).expect("valid prefix"));
                    match e.error_len() {
                        // a sequence that cannot be completed: replace it and go on
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed += valid + bad;
                        }
                        // an incomplete sequence at the end: wait for more bytes
                        None => {
                            consumed += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        out
    }

    /// Bytes held back (an incomplete UTF-8 sequence, at most 3 bytes).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// End of stream: flush what is held back, an incomplete sequence as U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_incomplete_sequences() {
        let mut d = StreamDecoder::new();
        let emoji = "🦙".as_bytes(); // 4 bytes
        assert_eq!(d.push_bytes(b"a"), "a");
        assert_eq!(d.push_bytes(&emoji[..1]), "");
        assert_eq!(d.push_bytes(&emoji[1..3]), "");
        assert_eq!(d.pending().len(), 3);
        assert_eq!(d.push_bytes(&[emoji[3], b'b']), "🦙b");
        assert!(d.pending().is_empty());
    }

    #[test]
    fn replaces_impossible_bytes_and_flushes_lossy() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push_bytes(b"x\xffy"), "x\u{FFFD}y");
        // a lead byte followed by a non-continuation byte can never complete
        assert_eq!(d.push_bytes(b"\xe6z"), "\u{FFFD}z");
        assert_eq!(d.push_bytes(b"\xe6\x88"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert!(d.pending().is_empty());
    }
}
