//! Unicode facts the tokenizers need: the general-category class of a code point (for the
//! pre-tokenizer regexes' `\p{L}`, `\p{N}`, `\s`, ...), and GPT-2's byte <-> character map.
//!
//! The class table is generated (tools/tokenizer_gen_unicode.py) from Unicode 15.1, the same
//! version as llama.cpp's `unicode-data.cpp`, so new characters split the same way.

use std::sync::OnceLock;

#[path = "unicode_table.rs"]
mod table;

/// Major general-category class of a code point (`\p{X}` with one letter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// `Cn`: unassigned.
    Unassigned = 0,
    /// `\p{N}`
    Number = 1,
    /// `\p{L}`
    Letter = 2,
    /// `\p{Z}`
    Separator = 3,
    /// `\p{M}`
    Mark = 4,
    /// `\p{P}`
    Punctuation = 5,
    /// `\p{S}`
    Symbol = 6,
    /// `\p{C}` other than `Cn`.
    Control = 7,
}

impl Class {
    fn from_id(id: u8) -> Class {
        match id {
            1 => Class::Number,
            2 => Class::Letter,
            3 => Class::Separator,
            4 => Class::Mark,
            5 => Class::Punctuation,
            6 => Class::Symbol,
            7 => Class::Control,
            _ => Class::Unassigned,
        }
    }
}

/// Class of a code point plus whether it is `\s` (Unicode `White_Space`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharFlags(u8);

const WHITESPACE_BIT: u8 = 0x80;

impl CharFlags {
    pub fn class(self) -> Class {
        Class::from_id(self.0 & 0x7f)
    }
    pub fn is_letter(self) -> bool {
        self.class() == Class::Letter
    }
    pub fn is_number(self) -> bool {
        self.class() == Class::Number
    }
    pub fn is_mark(self) -> bool {
        self.class() == Class::Mark
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & WHITESPACE_BIT != 0
    }
}

/// The Unicode `White_Space` property (what `\s` matches in llama.cpp's splitters).
const WHITESPACE: [u32; 25] = [
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
];

const N_CODEPOINTS: usize = 0x11_0000;

/// One byte per code point (1.1 MB, built once): a flat lookup is what keeps the splitters fast.
fn flags_table() -> &'static [u8] {
    static TABLE: OnceLock<Box<[u8]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0u8; N_CODEPOINTS].into_boxed_slice();
        let runs = &table::CLASS_RUNS;
        for (i, &(start, class)) in runs.iter().enumerate() {
            let end = runs.get(i + 1).map_or(N_CODEPOINTS, |r| r.0 as usize);
            t[start as usize..end].fill(class);
        }
        for &cp in &WHITESPACE {
            t[cp as usize] |= WHITESPACE_BIT;
        }
        t
    })
}

/// Flags of a code point.
#[inline]
pub fn char_flags(c: char) -> CharFlags {
    CharFlags(flags_table()[c as usize])
}

/// General-category class of a code point.
pub fn char_class(c: char) -> Class {
    char_flags(c).class()
}

/// GPT-2's reversible byte -> printable character map (`bytes_to_unicode`): printable
/// Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
pub fn byte_to_char_table() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut t = ['\0'; 256];
        let mut next = 256u32;
        for (b, slot) in t.iter_mut().enumerate() {
            let b = b as u32;
            let cp = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            *slot = char::from_u32(cp).expect("table code points are below U+0144");
        }
        t
    })
}

/// Inverse of [`byte_to_char_table`]: the byte a character stands for, if any.
pub fn char_to_byte(c: char) -> Option<u8> {
    static INVERSE: OnceLock<[u16; 0x144]> = OnceLock::new();
    let inv = INVERSE.get_or_init(|| {
        let mut inv = [u16::MAX; 0x144];
        for (b, &c) in byte_to_char_table().iter().enumerate() {
            inv[c as usize] = b as u16;
        }
        inv
    });
    inv.get(c as usize).and_then(|&b| u8::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_sample_characters() {
        assert_eq!(char_class('a'), Class::Letter);
        assert_eq!(char_class('Z'), Class::Letter);
        assert_eq!(char_class('7'), Class::Number);
        assert_eq!(char_class('²'), Class::Number);
        assert_eq!(char_class('我'), Class::Letter);
        assert_eq!(char_class('é'), Class::Letter);
        assert_eq!(char_class('\u{301}'), Class::Mark);
        assert_eq!(char_class('!'), Class::Punctuation);
        assert_eq!(char_class('$'), Class::Symbol);
        assert_eq!(char_class('🦙'), Class::Symbol);
        assert_eq!(char_class('\u{200D}'), Class::Control);
        assert_eq!(char_class('\u{378}'), Class::Unassigned);
        // Unicode 15.1 additions (CJK extension I) are letters, as in llama.cpp
        assert_eq!(char_class('\u{2EBF0}'), Class::Letter);
        assert!(char_flags(' ').is_whitespace());
        assert!(char_flags('\u{3000}').is_whitespace());
        assert!(!char_flags('\u{200B}').is_whitespace());
    }

    #[test]
    fn gpt2_byte_map_is_a_bijection() {
        let t = byte_to_char_table();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('a'), Some(b'a'));
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{1000}'), None);
    }
}
