//! Pre-tokenization by a split regex.
//!
//! The GPT-2 / cl100k / Qwen2 / o200k patterns end in `|\s+(?!\S)|\s+`: a run of whitespace
//! leaves its last character to the next pre-token unless the run ends the text. Lookahead
//! needs a backtracking engine (fancy-regex). The fast path instead compiles the pattern
//! without that alternative as two patterns `[prefix, \s+]` of one `regex-automata` meta regex
//! (leftmost-first across patterns = alternation order) and, when the match came from the
//! `\s+` pattern, gives the last whitespace character back unless the run ends the text or
//! is one character long. That is exactly what `\s+(?!\S)|\s+` does at a position where
//! the prefix fails: greedy `\s+` then backtracking by one character.
//!
//! The built-in patterns (GPT-2, cl100k / Llama 3, Qwen2, o200k), recognised by their exact text, run
//! on a hand-written scanner instead (`pretokenize_hand`), which gives the same pieces.
use super::pretokenize_hand::{self, Pattern};
use regex_automata::{meta, Input};

const WS_TAIL: &str = r"|\s+(?!\S)|\s+";

pub enum Engine {
    /// No split: the whole text is one pre-token.
    Whole,
    /// The hand-written scanner of a built-in pattern.
    Hand(Pattern),
    /// `regex-automata` meta regex; `fixup` when pattern 1 is the `\s+` tail (see module doc).
    Fast { re: meta::Regex, fixup: bool },
    /// Backtracking engine for anything else (lookaround, backreferences).
    Fancy(fancy_regex::Regex),
}

pub struct Splitter {
    engine: Engine,
    /// Isolate every numeric character first and split the spans between them
    /// (HF `Digits(individual_digits=True)` before a regex pre-tokenizer, SmolLM2).
    individual_digits: bool,
    /// Text the regex does not match becomes pre-tokens of its own (HF `Split`, Isolated);
    /// otherwise it is dropped (tiktoken `find_iter`).
    keep_unmatched: bool,
}

/// Per-thread scratch of the fast engine.
pub type Cache = Option<meta::Cache>;

impl Splitter {
    /// `engine`: "auto" (hand-written scanner for a built-in pattern, else the fast regex path
    /// when possible, else fancy), "hand", "fast", "fancy".
    pub fn new(
        pattern: Option<&str>,
        individual_digits: bool,
        keep_unmatched: bool,
        engine: &str,
    ) -> Result<Self, String> {
        let engine = match pattern {
            None => Engine::Whole,
            Some(p) => match engine {
                "fancy" => Engine::Fancy(compile_fancy(p)?),
                "fast" => fast(p)?,
                "hand" => match Pattern::recognise(p) {
                    Some(h) => Engine::Hand(h),
                    None => {
                        return Err("engine \"hand\" runs only the built-in patterns gpt2, llama3 (cl100k), qwen2, o200k".into())
                    }
                },
                "auto" => match Pattern::recognise(p) {
                    Some(h) => Engine::Hand(h),
                    None => match fast(p) {
                        Ok(e) => e,
                        Err(_) => Engine::Fancy(compile_fancy(p)?),
                    },
                },
                other => return Err(format!("unknown regex engine {other:?} (auto, hand, fast, fancy)")),
            },
        };
        Ok(Splitter { engine, individual_digits, keep_unmatched })
    }

    pub fn engine_name(&self) -> &'static str {
        match &self.engine {
            Engine::Whole => "none",
            Engine::Hand(_) => "hand",
            Engine::Fast { fixup: true, .. } => "fast+fixup",
            Engine::Fast { .. } => "fast",
            Engine::Fancy(_) => "fancy",
        }
    }

    /// Byte offsets (ascending, inside `text`, at most `parts - 1`) where `text` can be cut into
    /// spans that split, one by one, into exactly the pre-tokens of the whole text. Only for the
    /// hand-written patterns (GPT-2, cl100k, Qwen2, o200k) without the digit split: there an ASCII
    /// letter, a space, an ASCII letter always has a pre-token boundary before the space (no
    /// alternative runs a letter into a space: the optional leading character of a word comes
    /// before its letters, a word and a contraction end in a letter), and the scanner only looks
    /// forward from a boundary. Other patterns: no cuts.
    pub fn cuts(&self, text: &str, parts: usize) -> Vec<usize> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        if !matches!(self.engine, Engine::Hand(_)) || self.individual_digits || parts < 2 {
            return out;
        }
        let mut from = 1;
        for k in 1..parts {
            let target = (b.len() * k / parts).max(from);
            let found = (target..b.len().saturating_sub(1))
                .find(|&p| b[p] == b' ' && b[p - 1].is_ascii_alphabetic() && b[p + 1].is_ascii_alphabetic());
            match found {
                Some(p) => {
                    out.push(p);
                    from = p + 1;
                }
                None => break,
            }
        }
        out
    }

    pub fn new_cache(&self) -> Cache {
        match &self.engine {
            Engine::Fast { re, .. } => Some(re.create_cache()),
            _ => None,
        }
    }

    /// Calls `f` with every pre-token of `text`, in order.
    pub fn split<F: FnMut(&str)>(&self, text: &str, cache: &mut Cache, f: &mut F) -> Result<(), String> {
        if !self.individual_digits {
            return self.split_span(text, cache, f);
        }
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                if start < i {
                    self.split_span(&text[start..i], cache, f)?;
                }
                let end = i + c.len_utf8();
                f(&text[i..end]);
                start = end;
            }
        }
        if start < text.len() {
            self.split_span(&text[start..], cache, f)?;
        }
        Ok(())
    }

    fn split_span<F: FnMut(&str)>(&self, text: &str, cache: &mut Cache, f: &mut F) -> Result<(), String> {
        match &self.engine {
            Engine::Whole => {
                if !text.is_empty() {
                    f(text)
                }
            }
            Engine::Hand(p) => pretokenize_hand::split(*p, text, f),
            Engine::Fast { re, fixup } => {
                let cache = cache.get_or_insert_with(|| re.create_cache());
                let len = text.len();
                let mut pos = 0;
                while pos < len {
                    let Some(m) = re.search_with(cache, &Input::new(text).span(pos..len)) else {
                        break;
                    };
                    let (s, mut e) = (m.start(), m.end());
                    if e == s {
                        // an empty match: step over one character, as find_iter does
                        if self.keep_unmatched && s > pos {
                            f(&text[pos..s]);
                        }
                        let step = text[s..].chars().next().map_or(1, |c| c.len_utf8());
                        if self.keep_unmatched {
                            f(&text[s..s + step]);
                        }
                        pos = s + step;
                        continue;
                    }
                    if *fixup && m.pattern().as_usize() == 1 && e < len {
                        let last = text[s..e].chars().next_back().unwrap();
                        if e - s > last.len_utf8() {
                            e -= last.len_utf8();
                        }
                    }
                    if self.keep_unmatched && s > pos {
                        f(&text[pos..s]);
                    }
                    f(&text[s..e]);
                    pos = e;
                }
                if self.keep_unmatched && pos < len {
                    f(&text[pos..]);
                }
            }
            Engine::Fancy(re) => {
                let mut pos = 0;
                for m in re.find_iter(text) {
                    let m = m.map_err(|e| format!("split regex failed: {e}"))?;
                    if m.start() == m.end() {
                        continue;
                    }
                    if self.keep_unmatched && m.start() > pos {
                        f(&text[pos..m.start()]);
                    }
                    f(m.as_str());
                    pos = m.end();
                }
                if self.keep_unmatched && pos < text.len() {
                    f(&text[pos..]);
                }
            }
        }
        Ok(())
    }
}

fn compile_fancy(p: &str) -> Result<fancy_regex::Regex, String> {
    fancy_regex::RegexBuilder::new(p)
        .backtrack_limit(100_000_000)
        .build()
        .map_err(|e| format!("invalid split regex: {e}"))
}

fn fast(p: &str) -> Result<Engine, String> {
    if let Some(prefix) = p.strip_suffix(WS_TAIL) {
        if !prefix.is_empty() && !prefix.ends_with('\\') {
            let re = meta::Regex::new_many(&[prefix, r"\s+"]).map_err(|e| e.to_string())?;
            return Ok(Engine::Fast { re, fixup: true });
        }
    }
    let re = meta::Regex::new(p).map_err(|e| e.to_string())?;
    Ok(Engine::Fast { re, fixup: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPT2: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const CL100K: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    use crate::bpe::pretokenize_hand::O200K;

    fn pieces(s: &Splitter, t: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut c = s.new_cache();
        s.split(t, &mut c, &mut |p| out.push(p.to_string())).unwrap();
        out
    }

    #[test]
    fn cuts_are_boundaries_of_the_whole_split() {
        let text = "It's a test: don't stop 'em  now\n\n  x  ok   y's   Zz AND 'll a b c \u{3000}é e  \
                    HELLO World'S x\u{301} A\u{301}B cD Ab/cd\n/ ʰA ".repeat(40);
        for pat in [GPT2, CL100K, O200K] {
            let s = Splitter::new(Some(pat), false, false, "auto").unwrap();
            let whole = pieces(&s, &text);
            for parts in [2, 3, 7, 50] {
                let cuts = s.cuts(&text, parts);
                assert!(!cuts.is_empty());
                let mut bounds = vec![0];
                bounds.extend(&cuts);
                bounds.push(text.len());
                let joined: Vec<String> = bounds.windows(2).flat_map(|w| pieces(&s, &text[w[0]..w[1]])).collect();
                assert_eq!(joined, whole, "{pat} {parts}");
            }
            let fast = Splitter::new(Some(pat), false, false, "fast").unwrap();
            assert!(fast.cuts(&text, 4).is_empty());
        }
    }

    #[test]
    fn fast_equals_fancy() {
        let texts = [
            "Hello world  foo   bar \n\n  baz\t\t x",
            "   ",
            "a   ",
            " \u{3000}\u{3000}x \r\n \n  y's  'LL 12345 ..!! \u{a0}\u{a0}z",
            "x\n \n",
        ];
        for pat in [GPT2, CL100K, O200K] {
            let fast = Splitter::new(Some(pat), false, false, "fast").unwrap();
            assert_eq!(Splitter::new(Some(pat), false, false, "auto").unwrap().engine_name(), "hand");
            assert_eq!(fast.engine_name(), "fast+fixup");
            let fancy = Splitter::new(Some(pat), false, false, "fancy").unwrap();
            for t in texts {
                assert_eq!(pieces(&fast, t), pieces(&fancy, t), "{pat} on {t:?}");
            }
        }
    }
}
