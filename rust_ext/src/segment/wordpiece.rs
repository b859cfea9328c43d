//! WordPiece: greedy longest-match-first on character boundaries (BERT / HF tokenizers).
use super::trie::Trie;
use super::units::char_boundaries;
use super::{boundary_mask, check_id, check_len, check_same_len, usable_pieces};
use crate::error::Result;
use rustc_hash::FxHashSet;

#[derive(Debug, Clone)]
pub struct WordPiece {
    /// pieces that may start a word
    start: Trie,
    /// "##" continuation pieces (stored without the prefix)
    cont: Trie,
    unk: u32,
    max_chars: usize,
}

impl WordPiece {
    pub fn new(
        pieces: &[Option<Vec<u8>>],
        word_start: &[bool],
        unk: u32,
        max_chars: usize,
    ) -> Result<Self> {
        let n = pieces.len();
        check_len(n)?;
        check_same_len("word_start", word_start.len(), n)?;
        check_id(unk, n, "unk_id")?;
        let none = FxHashSet::default();
        let usable = || usable_pieces(pieces, &none).map(|(id, b)| (b, id));
        let start = Trie::new(usable().filter(|&(_, id)| word_start[id as usize]));
        let cont = Trie::new(usable().filter(|&(_, id)| !word_start[id as usize]));
        Ok(WordPiece {
            start,
            cont,
            unk,
            max_chars,
        })
    }

    /// `word_start` false: the first piece is taken from the continuation pieces too.
    pub fn segment(&self, data: &[u8], word_start: bool) -> Result<Vec<u32>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let mut bounds = Vec::new();
        char_boundaries(data, &mut bounds);
        if bounds.len() - 1 > self.max_chars {
            return Ok(vec![self.unk]);
        }
        let mut is_boundary = Vec::new();
        boundary_mask(data.len(), &bounds, &mut is_boundary);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut trie = if word_start { &self.start } else { &self.cont };
        while pos < data.len() {
            let mut best = None;
            trie.for_each_prefix(data, pos, |e, id| {
                if is_boundary[e] {
                    best = Some((e, id));
                }
            });
            let Some((e, id)) = best else {
                return Ok(vec![self.unk]);
            };
            out.push(id);
            pos = e;
            trie = &self.cont;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_longest_match() {
        // [UNK] un ##aff ##able aff ##a ##ff able
        let pieces: Vec<Option<Vec<u8>>> = [
            None,
            Some("un"),
            Some("aff"),
            Some("able"),
            Some("aff"),
            Some("a"),
            Some("ff"),
            Some("able"),
        ]
        .iter()
        .map(|p| p.map(|s: &str| s.as_bytes().to_vec()))
        .collect();
        let ws = [true, true, false, false, true, false, false, true];
        let m = WordPiece::new(&pieces, &ws, 0, 100).unwrap();
        assert_eq!(m.segment(b"unaffable", true).unwrap(), vec![1, 2, 3]);
        assert_eq!(m.segment(b"affable", true).unwrap(), vec![4, 3]);
        assert_eq!(m.segment(b"affable", false).unwrap(), vec![2, 3]);
        assert_eq!(m.segment(b"unx", true).unwrap(), vec![0]);
        assert_eq!(m.segment(b"", true).unwrap(), Vec::<u32>::new());
        let short = WordPiece::new(&pieces, &ws, 0, 8).unwrap();
        assert_eq!(short.segment(b"unaffable", true).unwrap(), vec![0]);
        assert_eq!(short.segment(b"affable", true).unwrap(), vec![4, 3]);
        assert!(WordPiece::new(&pieces, &ws[..3], 0, 8).is_err());
        assert!(WordPiece::new(&pieces, &ws, 8, 8).is_err());
    }

    #[test]
    fn match_ends_on_char_boundary() {
        // piece "\xc3" (half of "é") must not split a character
        let pieces = vec![Some(vec![0xc3]), Some("é".as_bytes().to_vec()), None];
        let m = WordPiece::new(&pieces, &[true, true, true], 2, 100).unwrap();
        assert_eq!(m.segment("é".as_bytes(), true).unwrap(), vec![1]);
        assert_eq!(m.segment(b"\xc3", true).unwrap(), vec![0]); // invalid byte alone
        assert_eq!(m.segment(b"\xc3x", true).unwrap(), vec![2]);
    }
}
