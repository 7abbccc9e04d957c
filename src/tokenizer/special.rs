//! Special-token partitioning (llama.cpp's `tokenizer_st_partition`): before the tokenizer
//! proper runs, occurrences of special token texts are cut out of the input and emitted as
//! those tokens. Tokens are tried longest text first; each one splits every text fragment
//! left by the previous ones at all its non-overlapping occurrences, left to right.

/// A piece of the input: raw text (a byte range) still to be tokenized, or a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(usize, usize),
    Token(u32),
}

/// A special token as partitioning sees it.
pub(crate) struct SpecialToken {
    pub(crate) id: u32,
    pub(crate) text: String,
    /// Control or unknown token: only matched when the caller asks to parse specials.
    /// (User-defined tokens are always matched, as in llama.cpp and HF tokenizers.)
    pub(crate) needs_parse_special: bool,
    /// Whitespace before / after a match is dropped (llama.cpp's LSTRIP / RSTRIP attributes).
    pub(crate) lstrip: bool,
    pub(crate) rstrip: bool,
}

/// C `isspace` in the "C" locale, what llama.cpp strips around LSTRIP/RSTRIP tokens.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Split `text` at the special tokens (in the given order, longest first).
pub(crate) fn partition(
    text: &str,
    specials: &[SpecialToken],
    parse_special: bool,
) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0, text.len()));
    let mut next = Vec::new();
    for sp in specials {
        if sp.needs_parse_special && !parse_special {
            continue;
        }
        let needle = sp.text.as_str();
        // cheap pre-check: most special tokens do not occur at all
        let occurs = frags.iter().any(|f| match *f {
            Fragment::Text(a, b) => text[a..b].contains(needle),
            Fragment::Token(_) => false,
        });
        if !occurs {
            continue;
        }
        next.clear();
        for &f in &frags {
            let Fragment::Text(mut a, b) = f else {
                next.push(f);
                continue;
            };
            let bytes = text.as_bytes();
            while let Some(m) = text[a..b].find(needle) {
                let mut left_end = a + m;
                if sp.lstrip {
                    while left_end > a && is_c_space(bytes[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > a {
                    next.push(Fragment::Text(a, left_end));
                }
                next.push(Fragment::Token(sp.id));
                a += m + needle.len();
                if sp.rstrip {
                    while a < b && is_c_space(bytes[a]) {
                        a += 1;
                    }
                }
            }
            if a < b {
                next.push(Fragment::Text(a, b));
            }
        }
        std::mem::swap(&mut frags, &mut next);
    }
    frags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(id: u32, text: &str, control: bool) -> SpecialToken {
        SpecialToken {
            id,
            text: text.into(),
            needs_parse_special: control,
            lstrip: false,
            rstrip: false,
        }
    }

    #[test]
    fn splits_longest_first_and_respects_parse_special() {
        let specials = [
            sp(1, "<|im_start|>", true),
            sp(2, "<tool>", false),
            sp(3, "<|", true),
        ];
        let t = "a<|im_start|>b<tool><tool>c<|";
        let f = partition(t, &specials, true);
        use Fragment::*;
        assert_eq!(
            f,
            [
                Text(0, 1),
                Token(1),
                Text(13, 14),
                Token(2),
                Token(2),
                Text(26, 27),
                Token(3)
            ]
        );
        // without parse_special only the user-defined token is cut out
        let f = partition(t, &specials, false);
        assert_eq!(f, [Text(0, 14), Token(2), Token(2), Text(26, 29)]);
        assert!(partition("", &specials, true).is_empty());
    }

    #[test]
    fn strips_whitespace_around_lstrip_rstrip_tokens() {
        let mut t = sp(7, "<|end|>", true);
        t.lstrip = true;
        t.rstrip = true;
        let f = partition("a \n<|end|>\t b", &[t], true);
        use Fragment::*;
        assert_eq!(f, [Text(0, 1), Token(7), Text(12, 13)]);
    }
}
