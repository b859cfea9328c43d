//! Character classes of the split regexes (`\p{L}`, `\p{N}`, `\s` and o200k's two case classes) as a
//! two-level lookup table of bit flags.
//!
//! The table is filled from the very class definitions the regex engines use: each class is
//! parsed with `regex-syntax` (the parser behind `regex-automata` and `fancy-regex`) and its
//! Unicode ranges are written into the table, so the hand-written pre-tokenizer and the regex
//! agree on every code point by construction.
use regex_syntax::hir::{Class, HirKind};
use std::sync::OnceLock;

/// `\p{L}`
pub const LETTER: u8 = 1;
/// `\p{N}`
pub const NUMBER: u8 = 2;
/// `\s` (Unicode White_Space)
pub const SPACE: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, o200k's "upper" letters (marks and Lm/Lo are in both case classes)
pub const UPPER: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`, o200k's "lower" letters
pub const LOWER: u8 = 16;
/// Letter, number or whitespace: a character with none of these is `[^\s\p{L}\p{N}]`.
pub const LNS: u8 = LETTER | NUMBER | SPACE;

const CLASSES: [(&str, u8); 5] = [
    (r"\p{L}", LETTER),
    (r"\p{N}", NUMBER),
    (r"\s", SPACE),
    (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPER),
    (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWER),
];

/// Code points per second-level block.
const BLOCK_BITS: u32 = 7;
const BLOCK: usize = 1 << BLOCK_BITS;
const N_BLOCKS: usize = 0x110000 >> BLOCK_BITS;

pub struct CharClasses {
    /// block index per high part of a code point
    stage1: Box<[u16]>,
    /// deduplicated blocks of flags
    stage2: Box<[u8]>,
    /// the flags of the ASCII characters, for the one-load fast path
    pub ascii: [u8; 128],
}

impl CharClasses {
    fn build() -> Self {
        let mut flat = vec![0u8; 0x110000];
        for (pattern, flag) in CLASSES {
            let hir = regex_syntax::parse(pattern).expect("a valid class");
            let HirKind::Class(Class::Unicode(cls)) = hir.kind() else {
                panic!("{pattern} is not a Unicode class")
            };
            for r in cls.ranges() {
                for cp in r.start() as usize..=r.end() as usize {
                    flat[cp] |= flag;
                }
            }
        }
        let mut stage1 = Vec::with_capacity(N_BLOCKS);
        let mut stage2: Vec<u8> = Vec::new();
        let mut seen: rustc_hash::FxHashMap<&[u8], u16> = Default::default();
        for block in flat.chunks(BLOCK) {
            let next = (stage2.len() / BLOCK) as u16;
            let idx = *seen.entry(block).or_insert_with(|| {
                stage2.extend_from_slice(block);
                next
            });
            stage1.push(idx);
        }
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);
        CharClasses { stage1: stage1.into(), stage2: stage2.into(), ascii }
    }

    /// The table shared by every splitter (built once, a few ms).
    pub fn get() -> &'static CharClasses {
        static TABLE: OnceLock<CharClasses> = OnceLock::new();
        TABLE.get_or_init(CharClasses::build)
    }

    /// The flags of code point `cp` (< 0x110000).
    #[inline(always)]
    pub fn of(&self, cp: u32) -> u8 {
        let block = self.stage1[(cp >> BLOCK_BITS) as usize] as usize;
        self.stage2[(block << BLOCK_BITS) | (cp as usize & (BLOCK - 1))]
    }
}

/// The code point at byte `pos` of valid UTF-8 `b` and its length in bytes.
#[inline(always)]
pub fn decode_at(b: &[u8], pos: usize) -> (u32, usize) {
    let b0 = b[pos] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (b[pos + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (((b0 & 0x0F) << 12) | ((b[pos + 1] as u32 & 0x3F) << 6) | (b[pos + 2] as u32 & 0x3F), 3)
    } else {
        let cp = ((b0 & 0x07) << 18)
            | ((b[pos + 1] as u32 & 0x3F) << 12)
            | ((b[pos + 2] as u32 & 0x3F) << 6)
            | (b[pos + 3] as u32 & 0x3F);
        (cp, 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::meta::Regex;

    #[test]
    fn table_equals_regex_on_every_code_point() {
        let t = CharClasses::get();
        for (pattern, flag) in CLASSES {
            let re = Regex::new(&format!("^{pattern}$")).unwrap();
            for c in (0..0x110000u32).filter_map(char::from_u32) {
                let mut buf = [0u8; 4];
                let s = c.encode_utf8(&mut buf);
                assert_eq!(t.of(c as u32) & flag != 0, re.is_match(s as &str), "{pattern} U+{:04X}", c as u32);
                assert_eq!(decode_at(s.as_bytes(), 0), (c as u32, c.len_utf8()));
                if (c as u32) < 128 {
                    assert_eq!(t.ascii[c as usize], t.of(c as u32));
                }
            }
        }
    }
}
