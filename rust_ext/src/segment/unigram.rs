//! Unigram LM segmentation: Viterbi over character boundaries maximising the sum of piece
//! scores (SentencePiece / HF tokenizers Unigram).
//!
//! A character that no single-character piece covers also gets an "unknown" edge scored
//! `min_score - 10` (the two libraries' penalty); adjacent unknown characters on the best
//! path are fused, then emitted as one unk id, or as byte-fallback ids for their bytes.
//! Ties keep the first path found (earliest start), like HF tokenizers.
use super::trie::Trie;
use super::units::char_boundaries;
use super::{boundary_mask, check_len, check_same_len, usable_pieces, Fallback};
use crate::error::Result;

const UNK_PENALTY: f64 = 10.0;
const UNK_EDGE: u32 = u32::MAX;
const UNSET: usize = usize::MAX;

#[derive(Debug, Clone)]
pub struct Unigram {
    trie: Trie,
    scores: Vec<f64>,
    unk_score: f64,
    fallback: Fallback,
}

impl Unigram {
    /// `min_score` (for the unknown penalty) is taken over the usable pieces.
    pub fn new(
        pieces: &[Option<Vec<u8>>],
        scores: &[f64],
        byte_fallback: Option<&[u32]>,
        unk: Option<u32>,
    ) -> Result<Self> {
        let n = pieces.len();
        check_len(n)?;
        check_same_len("scores", scores.len(), n)?;
        let fallback = Fallback::new(n, byte_fallback, unk)?;
        let reserved = fallback.reserved_ids();
        let trie = Trie::new(usable_pieces(pieces, &reserved).map(|(id, b)| (b, id)));
        let mut min_score = usable_pieces(pieces, &reserved)
            .map(|(id, _)| scores[id as usize])
            .fold(f64::INFINITY, f64::min);
        if !min_score.is_finite() {
            min_score = 0.0;
        }
        Ok(Unigram {
            trie,
            scores: scores.to_vec(),
            unk_score: min_score - UNK_PENALTY,
            fallback,
        })
    }

    pub fn segment(&self, data: &[u8]) -> Result<Vec<u32>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let n = data.len();
        let mut bounds = Vec::new();
        char_boundaries(data, &mut bounds);
        let mut is_boundary = Vec::new();
        boundary_mask(n, &bounds, &mut is_boundary);
        // best path ending at each byte offset: (score, start, id)
        let mut score = vec![0.0f64; n + 1];
        let mut from = vec![UNSET; n + 1];
        let mut via = vec![UNK_EDGE; n + 1];
        from[0] = 0;
        for w in bounds.windows(2) {
            let (s, char_end) = (w[0], w[1]);
            if from[s] == UNSET {
                continue; // unreachable; cannot happen, every character has an edge
            }
            let base = score[s];
            let mut has_single = false;
            self.trie.for_each_prefix(data, s, |e, id| {
                if !is_boundary[e] {
                    return;
                }
                let cand = base + self.scores[id as usize];
                if from[e] == UNSET || cand > score[e] {
                    score[e] = cand;
                    from[e] = s;
                    via[e] = id;
                }
                has_single |= e == char_end;
            });
            if !has_single {
                let cand = base + self.unk_score;
                if from[char_end] == UNSET || cand > score[char_end] {
                    score[char_end] = cand;
                    from[char_end] = s;
                    via[char_end] = UNK_EDGE;
                }
            }
        }
        // backtrack into (start, id) edges, then emit left to right fusing unknown runs
        let mut path = Vec::new();
        let mut e = n;
        while e > 0 {
            path.push((from[e], via[e]));
            e = from[e];
        }
        path.reverse();
        let mut out = Vec::with_capacity(path.len());
        let mut i = 0;
        while i < path.len() {
            let (s, id) = path[i];
            if id != UNK_EDGE {
                out.push(id);
                i += 1;
                continue;
            }
            let mut j = i;
            while j < path.len() && path[j].1 == UNK_EDGE {
                j += 1;
            }
            let end = if j < path.len() { path[j].0 } else { n };
            self.fallback.push(&data[s..end], &mut out)?;
            i = j;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<Option<Vec<u8>>> {
        v.iter().map(|s| Some(s.as_bytes().to_vec())).collect()
    }

    #[test]
    fn viterbi_picks_best_sum() {
        let mut pieces = p(&["<unk>", "a", "b", "ab", "abc", "c", "bc"]);
        pieces[0] = None;
        let scores = [0.0, -1.0, -1.0, -1.5, -5.0, -1.0, -1.2];
        let m = Unigram::new(&pieces, &scores, None, Some(0)).unwrap();
        assert_eq!(m.segment(b"ab").unwrap(), vec![3]); // -1.5 > -2
        assert_eq!(m.segment(b"abc").unwrap(), vec![1, 6]); // a+bc -2.2 > ab+c -2.5 > abc -5
    }

    #[test]
    fn unk_fused_and_byte_fallback() {
        let mut pieces = p(&["<unk>", "a", "b"]);
        pieces[0] = None;
        let scores = [0.0, -1.0, -2.0];
        let m = Unigram::new(&pieces, &scores, None, Some(0)).unwrap();
        assert_eq!(m.segment("a日本b".as_bytes()).unwrap(), vec![1, 0, 2]);
        assert_eq!(m.segment(b"\xffa\xfe\xfd").unwrap(), vec![0, 1, 0]);
        let none = Unigram::new(&pieces, &scores, None, None).unwrap();
        assert!(none.segment(b"ax").is_err());
        assert_eq!(none.segment(b"ab").unwrap(), vec![1, 2]);
        // byte fallback ids 3..259 hold single bytes and must never match as pieces
        let mut pieces2 = pieces.clone();
        pieces2.extend((0..=255u8).map(|b| Some(vec![b])));
        let mut scores2 = scores.to_vec();
        scores2.extend([0.0; 256]);
        let bf: Vec<u32> = (3..259).collect();
        let m = Unigram::new(&pieces2, &scores2, Some(&bf), Some(0)).unwrap();
        assert_eq!(m.segment(b"ab").unwrap(), vec![1, 2]);
        assert_eq!(
            m.segment("aé".as_bytes()).unwrap(),
            vec![1, 3 + 0xc3, 3 + 0xa9]
        );
    }
}
