//! A hand-written pre-tokenizer for the built-in split patterns (GPT-2, cl100k / Llama 3, Qwen2,
//! o200k).
//!
//! At each position the alternatives of the pattern are tried in order, as the regex does
//! (leftmost-first), but each alternative is a direct scan over character classes
//! (`char_class`), so no automaton runs. Every alternative of the GPT-2 / cl100k patterns is a
//! run of one class with at most one optional leading character, so a greedy scan is exact; the
//! alternatives that backtrack are solved in closed form:
//! - `\s+(?!\S)|\s+` on a whitespace run `[i, j)`: the whole run when it ends the text or is
//!   one character long, else the run without its last character.
//! - `\s*[\r\n]+` on a whitespace run: from `i` up to and including the run's last `\r`/`\n`.
//! - o200k's words `P?U*W+C?` and `P?U+W*C?` (`P` = `[^\r\n\p{L}\p{N}]`, `U` / `W` its upper /
//!   lower case classes, which share Lm, Lo and the marks \p{M}; `C` a contraction): see
//!   `Scan::upper_then_lower`. A mark is both a possible `P` and a letter of `U` and `W`, so the
//!   word is tried with the leading character as `P` first and then as part of the word.
//!
//! The patterns are recognised by their exact text (`Pattern::recognise`); any other pattern,
//! even an equivalent one, goes to the regex engines.
use super::char_class::{decode_at, CharClasses, LETTER, LNS, LOWER, NUMBER, SPACE, UPPER};
use std::sync::OnceLock;

pub const GPT2: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// The GPT-2 regex as HF `tokenizers` writes it (ByteLevel use_regex, GPT-2 tokenizer.json).
pub const GPT2_HF: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
pub const CL100K: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// tiktoken's o200k_base pattern (its seven alternatives joined by `|`).
pub const O200K: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2: case-sensitive contractions, ` ?` before letter / number / other runs.
    Gpt2,
    /// cl100k family: case-insensitive contractions, one non-letter before letters, numbers in
    /// groups of up to `max_digits`, other runs take trailing newlines, newline runs.
    Cl100k { max_digits: usize },
    /// o200k: case-split words with optional contraction suffixes, numbers in groups of up to
    /// 3, other runs take trailing `\r`, `\n` and `/`, newline runs.
    O200k,
}

impl Pattern {
    pub fn recognise(pattern: &str) -> Option<Pattern> {
        match pattern {
            GPT2 | GPT2_HF => Some(Pattern::Gpt2),
            CL100K => Some(Pattern::Cl100k { max_digits: 3 }),
            QWEN2 => Some(Pattern::Cl100k { max_digits: 1 }),
            O200K => Some(Pattern::O200k),
            _ => None,
        }
    }
}

/// Non-ASCII characters that `(?i:...)` folds onto the ASCII letters of the contractions
/// (e.g. U+017F LONG S for `s`), from the regex parser's own case folding.
fn folds() -> &'static [(u32, u8)] {
    static FOLDS: OnceLock<Vec<(u32, u8)>> = OnceLock::new();
    FOLDS.get_or_init(|| {
        use regex_syntax::hir::{Class, HirKind};
        let mut out = Vec::new();
        for letter in "stremvld".bytes() {
            let hir = regex_syntax::parse(&format!("(?i:{})", letter as char)).expect("a letter");
            if let HirKind::Class(Class::Unicode(cls)) = hir.kind() {
                for r in cls.ranges() {
                    for cp in r.start() as u32..=r.end() as u32 {
                        if cp >= 0x80 {
                            out.push((cp, letter));
                        }
                    }
                }
            }
        }
        out
    })
}

/// How many of the eight bytes of `x` (little-endian: byte 0 first) are ASCII letters before the
/// first byte that is not: `[A-Za-z]`, the only ASCII characters in `\p{L}`. Bytewise without
/// carries between bytes: `y` is each byte lowercased by `| 0x20` and cut to seven bits (at most
/// 0x7F, so adding at most 0x1F stays inside the byte); a byte is a letter when `y >= 0x61`
/// (`y + 0x1F` reaches 0x80), `y <= 0x7A` (`y + 0x05` stays below 0x80) and the byte is ASCII.
#[inline(always)]
fn ascii_letters(x: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let y = (x | (0x20 * ONES)) & (0x7F * ONES);
    let letter = (y + 0x1F * ONES) & !(y + 0x05 * ONES) & !x & HIGH;
    ((!letter & HIGH).trailing_zeros() / 8) as usize
}

struct Scan<'a> {
    b: &'a [u8],
    cls: &'static CharClasses,
    folds: &'static [(u32, u8)],
}

impl<'a> Scan<'a> {
    /// (class flags, length in bytes) of the character at `pos`.
    #[inline(always)]
    fn at(&self, pos: usize) -> (u8, usize) {
        let c = self.b[pos];
        if c < 0x80 {
            return (self.cls.ascii[c as usize], 1);
        }
        let (cp, len) = decode_at(self.b, pos);
        (self.cls.of(cp), len)
    }

    /// End of the run of characters with any of `flags`, from `pos`.
    #[inline(always)]
    fn run(&self, mut pos: usize, flags: u8) -> usize {
        while pos < self.b.len() {
            let (f, len) = self.at(pos);
            if f & flags == 0 {
                break;
            }
            pos += len;
        }
        pos
    }

    /// End of the run of letters from `pos` (`run(pos, LETTER)`): ASCII letters are skipped eight
    /// bytes at a time (`ascii_letters`), so the loop's exit branch is taken once per word rather
    /// than once per byte; the per-character loop finishes the run (non-ASCII letters, the last
    /// fewer-than-eight bytes of the text).
    #[inline(always)]
    fn run_letters(&self, mut pos: usize) -> usize {
        let b = self.b;
        while pos + 8 <= b.len() {
            let k = ascii_letters(u64::from_le_bytes(b[pos..pos + 8].try_into().unwrap()));
            pos += k;
            if k < 8 {
                break;
            }
        }
        self.run(pos, LETTER)
    }

    /// End of the run of characters that are neither letter, number nor whitespace.
    #[inline(always)]
    fn run_other(&self, mut pos: usize) -> usize {
        while pos < self.b.len() {
            let (f, len) = self.at(pos);
            if f & LNS != 0 {
                break;
            }
            pos += len;
        }
        pos
    }

    /// End of at most `max` number characters from `pos`.
    #[inline(always)]
    fn numbers(&self, mut pos: usize, max: usize) -> usize {
        for _ in 0..max {
            if pos >= self.b.len() {
                break;
            }
            let (f, len) = self.at(pos);
            if f & NUMBER == 0 {
                break;
            }
            pos += len;
        }
        pos
    }

    /// The lower-case ASCII letter that the character at `pos` is (case-insensitively).
    #[inline(always)]
    fn folded(&self, pos: usize) -> Option<(u8, usize)> {
        if pos >= self.b.len() {
            return None;
        }
        let (cp, len) = decode_at(self.b, pos);
        if cp < 0x80 {
            return Some(((cp as u8).to_ascii_lowercase(), len));
        }
        self.folds.iter().find(|f| f.0 == cp).map(|f| (f.1, len))
    }

    /// Length of a contraction `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (which holds `'`).
    #[inline(always)]
    fn contraction(&self, pos: usize, ignore_case: bool) -> Option<usize> {
        let letter = |p: usize| -> Option<(u8, usize)> {
            if ignore_case {
                self.folded(p)
            } else {
                self.b.get(p).map(|&c| (c, 1))
            }
        };
        let (c1, l1) = letter(pos + 1)?;
        match c1 {
            b's' | b't' | b'm' | b'd' => Some(1 + l1),
            b'r' | b'v' | b'l' => {
                let want = if c1 == b'l' { b'l' } else { b'e' };
                match letter(pos + 1 + l1) {
                    Some((c2, l2)) if c2 == want => Some(1 + l1 + l2),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A whitespace run from `pos`: (end, start of its last character, end of its last `\r`/`\n`).
    #[inline(always)]
    fn spaces(&self, mut pos: usize) -> (usize, usize, Option<usize>) {
        let mut last = pos;
        let mut newline = None;
        while pos < self.b.len() {
            let c = self.b[pos];
            let (f, len) = self.at(pos);
            if f & SPACE == 0 {
                break;
            }
            if c == b'\r' || c == b'\n' {
                newline = Some(pos + 1);
            }
            last = pos;
            pos += len;
        }
        (pos, last, newline)
    }

    /// `\s+(?!\S)|\s+` at `pos`, given the run's `(end, last)`.
    #[inline(always)]
    fn space_tail(&self, pos: usize, end: usize, last: usize) -> usize {
        if end == self.b.len() || last == pos {
            end
        } else {
            last
        }
    }

    /// End of the GPT-2 pre-token starting at `i`.
    fn next_gpt2(&self, i: usize) -> usize {
        let b = self.b;
        if b[i] == b'\'' {
            if let Some(len) = self.contraction(i, false) {
                return i + len;
            }
        }
        // ` ?` then a letter / number / other run
        let (p, g) = if b[i] == b' ' && i + 1 < b.len() { (i + 1, self.at(i + 1).0) } else { (i, self.at(i).0) };
        if g & LETTER != 0 {
            return self.run_letters(p);
        }
        if g & NUMBER != 0 {
            return self.run(p, NUMBER);
        }
        if g & LNS == 0 {
            return self.run_other(p);
        }
        // whitespace at `i` (a space before whitespace, or other whitespace)
        let (end, last, _) = self.spaces(i);
        self.space_tail(i, end, last)
    }

    /// End of the cl100k-family pre-token starting at `i`.
    fn next_cl100k(&self, i: usize, max_digits: usize) -> usize {
        let b = self.b;
        let n = b.len();
        if b[i] == b'\'' {
            if let Some(len) = self.contraction(i, true) {
                return i + len;
            }
        }
        let (f, len) = self.at(i);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if f & LETTER != 0 {
            return self.run_letters(i + len);
        }
        if f & NUMBER == 0 && b[i] != b'\r' && b[i] != b'\n' && i + len < n && self.at(i + len).0 & LETTER != 0 {
            return self.run_letters(i + len);
        }
        // \p{N}{1,max}
        if f & NUMBER != 0 {
            return self.numbers(i, max_digits);
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`, whitespace
        self.other_or_spaces(i, false)
    }

    /// The last alternatives of the cl100k family and o200k at `i`: ` ?[^\s\p{L}\p{N}]+` then
    /// `[\r\n]*` (`[\r\n/]*` when `slash`), else whitespace: `\s*[\r\n]+|\s+(?!\S)|\s+`.
    #[inline(always)]
    fn other_or_spaces(&self, i: usize, slash: bool) -> usize {
        let b = self.b;
        let n = b.len();
        let p = if b[i] == b' ' { i + 1 } else { i };
        if p < n && self.at(p).0 & LNS == 0 {
            let mut end = self.run_other(p);
            while end < n && (b[end] == b'\r' || b[end] == b'\n' || (slash && b[end] == b'/')) {
                end += 1;
            }
            return end;
        }
        let (end, last, newline) = self.spaces(i);
        match newline {
            Some(nl) => nl,
            None => self.space_tail(i, end, last),
        }
    }
}

impl<'a> Scan<'a> {
    /// `U*W+` from `s` (leftmost-first, greedy with backtracking), its end or None.
    /// `U*` takes the whole run of upper-class characters; if the next character is in `W`,
    /// `W+` takes the run of lower-class characters from there. Otherwise `U*` gives characters
    /// back until `W+` can take one: the match ends after the run's last character that is in
    /// both classes (Lm, Lo, a mark), and fails when there is none.
    #[inline(always)]
    fn upper_then_lower(&self, s: usize) -> Option<usize> {
        let n = self.b.len();
        let mut pos = s;
        let mut last_both = None;
        while pos < n {
            let (f, len) = self.at(pos);
            if f & UPPER == 0 {
                if f & LOWER != 0 {
                    return Some(self.run(pos + len, LOWER));
                }
                break;
            }
            pos += len;
            if f & LOWER != 0 {
                last_both = Some(pos);
            }
        }
        last_both
    }

    /// `U+W*` from `s`: the run of upper-class characters (at least one), then the run of
    /// lower-class ones.
    #[inline(always)]
    fn upper_run_then_lower(&self, s: usize) -> Option<usize> {
        let k = self.run(s, UPPER);
        if k == s {
            return None;
        }
        Some(self.run(k, LOWER))
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `end`: `end` moved past a contraction if one follows.
    #[inline(always)]
    fn with_contraction(&self, end: usize) -> usize {
        if end < self.b.len() && self.b[end] == b'\'' {
            if let Some(len) = self.contraction(end, true) {
                return end + len;
            }
        }
        end
    }

    /// End of the o200k pre-token starting at `i`.
    fn next_o200k(&self, i: usize) -> usize {
        let (f, len) = self.at(i);
        let c = self.b[i];
        // `[^\r\n\p{L}\p{N}]?`: tried with the leading character first, then without it
        let lead = f & (LETTER | NUMBER) == 0 && c != b'\r' && c != b'\n';
        // 1: P?U*W+C?
        if lead {
            if let Some(e) = self.upper_then_lower(i + len) {
                return self.with_contraction(e);
            }
        }
        if f & (UPPER | LOWER) != 0 {
            if let Some(e) = self.upper_then_lower(i) {
                return self.with_contraction(e);
            }
        }
        // 2: P?U+W*C?
        if lead {
            if let Some(e) = self.upper_run_then_lower(i + len) {
                return self.with_contraction(e);
            }
        }
        if f & UPPER != 0 {
            if let Some(e) = self.upper_run_then_lower(i) {
                return self.with_contraction(e);
            }
        }
        // 3: \p{N}{1,3}
        if f & NUMBER != 0 {
            return self.numbers(i, 3);
        }
        // 4-7: ` ?[^\s\p{L}\p{N}]+[\r\n/]*`, whitespace
        self.other_or_spaces(i, true)
    }
}

/// Calls `f` with every pre-token of `text` under `pattern`, in order; their concatenation is
/// `text` (these patterns match every character).
pub fn split<F: FnMut(&str)>(pattern: Pattern, text: &str, f: &mut F) {
    let scan = Scan { b: text.as_bytes(), cls: CharClasses::get(), folds: folds() };
    let mut i = 0;
    while i < text.len() {
        let end = match pattern {
            Pattern::Gpt2 => scan.next_gpt2(i),
            Pattern::Cl100k { max_digits } => scan.next_cl100k(i, max_digits),
            Pattern::O200k => scan.next_o200k(i),
        };
        f(&text[i..end]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_letters_counts_the_leading_letters_of_every_byte_pattern() {
        // every byte value at every position, behind letters and before letters
        for v in 0u32..256 {
            let v = v as u8;
            for at in 0..8 {
                let mut bytes = *b"abcdWXYZ";
                bytes[at] = v;
                let want = bytes.iter().take_while(|c| c.is_ascii_alphabetic()).count();
                assert_eq!(ascii_letters(u64::from_le_bytes(bytes)), want, "byte {v:#x} at {at}");
            }
        }
        assert_eq!(ascii_letters(u64::from_le_bytes(*b"@[`{AZaz")), 0);
        assert_eq!(ascii_letters(u64::from_le_bytes(*b"AZaz@[`{")), 4);
    }

    fn ours(p: Pattern, t: &str) -> Vec<String> {
        let mut out = Vec::new();
        split(p, t, &mut |s| out.push(s.to_string()));
        out
    }

    fn regex(pat: &str, t: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(pat).unwrap();
        re.find_iter(t).map(|m| m.unwrap().as_str().to_string()).collect()
    }

    const PATTERNS: [&str; 5] = [GPT2, GPT2_HF, CL100K, QWEN2, O200K];

    /// Characters that exercise every class and rule: letters of several scripts and cases,
    /// numbers of several kinds, marks, punctuation, apostrophes, the long s, spaces and newlines.
    const ALPHABET: &[char] = &[
        'a', 'B', 's', 'S', 't', 'T', 'r', 'R', 'e', 'E', 'v', 'V', 'm', 'l', 'L', 'd', 'D', 'ſ', 'K', 'é',
        'Ж', 'ß', 'ǅ', 'ʰ', '中', 'ع', 'ह', '\u{301}', '\u{94d}', '0', '7', '٣', '½', 'Ⅻ', '²', '\'', '\'',
        '\'', '.', ',', '!', '-', '/', '😀', '\u{200d}', ' ', ' ', ' ', ' ', '\t', '\n', '\n', '\r', '\u{a0}',
        '\u{3000}', '\u{85}', '\u{2028}', '\u{b}', '\u{c}', '\u{0}', '\u{ad}', '\u{feff}',
    ];

    #[test]
    fn recognises_only_the_exact_builtin_texts() {
        for p in PATTERNS {
            assert!(Pattern::recognise(p).is_some());
        }
        assert_eq!(Pattern::recognise(&CL100K.replace("{1,3}", "{1,2}")), None);
        assert_eq!(Pattern::recognise(&O200K.replace("[\\r\\n/]*", "[\\r\\n]*")), None);
        assert_eq!(Pattern::recognise(r" ?\S+|\s+(?!\S)|\s+"), None);
    }

    #[test]
    fn equals_the_regex_on_chosen_texts() {
        let texts = [
            "Hello world  foo   bar \n\n  baz\t\t x",
            "   ",
            "a   ",
            " \u{3000}\u{3000}x \r\n \n  y's  'LL 12345 ..!! \u{a0}\u{a0}z",
            "x\n \n",
            "I'm don't we'RE they'Ve 'ſ 'ſx ''s ?'s 's'll",
            "1234567 ½½½½ ٣٣٣٣ a1b2 x² .\n\n\r\n  foo!!\n\n bar",
            "  \n  x \t\ty\r\n\r\n\t \n",
            "\u{301}\u{301}abc \u{301}x éé'd",
            "",
        ];
        for pat in PATTERNS {
            let p = Pattern::recognise(pat).unwrap();
            for t in texts {
                assert_eq!(ours(p, t), regex(pat, t), "{pat} on {t:?}");
            }
        }
    }

    #[test]
    fn o200k_backtracking_cases() {
        let want: &[(&str, &[&str])] = &[
            // a lone mark after a non-letter: `P` then nothing, so the mark is the word
            ("\u{301}AB.", &["\u{301}", "AB", "."]),
            ("(\u{301}x", &["(\u{301}x"]),
            ("\u{301} ", &["\u{301}", " "]),
            // upper run then lower: one word; upper run alone: the second alternative
            ("HELLOworld", &["HELLOworld"]),
            ("ABC. ABc", &["ABC", ".", " ABc"]),
            ("aBC", &["a", "BC"]),
            // Lm / Lo end the first alternative's word when `U*` gives them back
            ("Aʰ.", &["Aʰ", "."]),
            ("ʰAB.", &["ʰ", "AB", "."]),
            ("中A中B.", &["中A中", "B", "."]),
            // titlecase is upper only
            ("ǅx ǅ", &["ǅx", " ǅ"]),
            // contractions attach to either alternative, case-insensitively, long s included
            ("DON'T don't HE'S x'ſ 'll", &["DON'T", " don't", " HE'S", " x'ſ", " '", "ll"]),
            ("a/b\n/\n/c", &["a", "/b", "\n", "/\n/", "c"]),
            ("x -->\r\n/y 1234567", &["x", " -->\r\n/", "y", " ", "123", "456", "7"]),
            ("\tWord \n\n Word", &["\tWord", " \n\n", " Word"]),
        ];
        let p = Pattern::recognise(O200K).unwrap();
        for (t, pieces) in want {
            assert_eq!(regex(O200K, t), *pieces, "the regex on {t:?}");
            assert_eq!(ours(p, t), *pieces, "{t:?}");
        }
    }

    #[test]
    fn equals_the_regex_on_random_texts() {
        // xorshift: deterministic, no extra crate
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let res: Vec<(Pattern, fancy_regex::Regex)> =
            PATTERNS.iter().map(|p| (Pattern::recognise(p).unwrap(), fancy_regex::Regex::new(p).unwrap())).collect();
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let t: String = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            for (p, re) in &res {
                let want: Vec<String> = re.find_iter(&t).map(|m| m.unwrap().as_str().to_string()).collect();
                assert_eq!(ours(*p, &t), want, "{p:?} on {t:?}");
            }
        }
    }
}
