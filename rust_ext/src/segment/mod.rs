//! Segmentation of one pre-token (a byte string) into the ids of a vocabulary, the way its
//! tokenizer model would: BPE by merge list (HF tokenizers), BPE by ranks (tiktoken,
//! SentencePiece BPE), Unigram (Viterbi) and WordPiece (greedy longest match).
//!
//! Conventions shared by every model:
//! - `pieces[id]` is the exact bytes of `id`, or None for ids that never take part in
//!   segmentation. Empty pieces are ignored; when several ids have the same bytes the lowest
//!   id wins.
//! - `byte_fallback` (256 ids, one per byte value) and `unk_id` cover input that no piece
//!   covers. Ids listed in `byte_fallback` are used only as fallback, never matched as pieces.
//! - Invalid UTF-8 in character-based models: each invalid byte is a character of its own.
pub mod bpe;
pub mod trie;
pub mod unigram;
pub mod units;
pub mod wordpiece;

use crate::error::{CoreError, Result};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

pub use bpe::{BpeMerges, BpeRanks};
pub use unigram::Unigram;
pub use units::Units;
pub use wordpiece::WordPiece;

impl std::str::FromStr for Units {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bytes" => Ok(Units::Bytes),
            "chars" => Ok(Units::Chars),
            _ => Err(CoreError::new(format!(
                "unknown units {s:?}; expected \"bytes\" or \"chars\""
            ))),
        }
    }
}

/// What to emit for a unit (character or byte) that no piece covers.
#[derive(Debug, Clone)]
pub struct Fallback {
    bytes: Option<Box<[u32; 256]>>,
    unk: Option<u32>,
}

impl Fallback {
    /// Checks `byte_fallback` (256 ids) and `unk` against a vocabulary of `n_ids` ids.
    pub fn new(n_ids: usize, byte_fallback: Option<&[u32]>, unk: Option<u32>) -> Result<Self> {
        if let Some(u) = unk {
            check_id(u, n_ids, "unk_id")?;
        }
        let bytes = match byte_fallback {
            None => None,
            Some(ids) => {
                if ids.len() != 256 {
                    return Err(CoreError::new(format!(
                        "byte_fallback must hold 256 ids (one per byte value), got {}",
                        ids.len()
                    )));
                }
                let mut table = Box::new([0u32; 256]);
                for (b, &id) in ids.iter().enumerate() {
                    check_id(id, n_ids, &format!("byte_fallback[{b}]"))?;
                    table[b] = id;
                }
                Some(table)
            }
        };
        Ok(Fallback { bytes, unk })
    }

    /// Ids that are fallbacks only and must not be matched as pieces.
    pub fn reserved_ids(&self) -> FxHashSet<u32> {
        self.bytes.iter().flat_map(|t| t.iter().copied()).collect()
    }

    pub fn has_bytes(&self) -> bool {
        self.bytes.is_some()
    }

    /// The unk id, or an error naming the uncovered input.
    pub fn unk(&self, uncovered: &[u8]) -> Result<u32> {
        self.unk.ok_or_else(|| {
            CoreError::new(format!(
                "input {} is not covered by the vocabulary and there is no byte_fallback or unk_id",
                show_bytes(uncovered)
            ))
        })
    }

    /// Pushes the ids for uncovered input: one byte-fallback id per byte, else one unk.
    pub fn push(&self, uncovered: &[u8], out: &mut Vec<u32>) -> Result<()> {
        match &self.bytes {
            Some(table) => out.extend(uncovered.iter().map(|&b| table[b as usize])),
            None => out.push(self.unk(uncovered)?),
        }
        Ok(())
    }
}

/// Short printable form of some bytes for error messages.
fn show_bytes(b: &[u8]) -> String {
    let shown = &b[..b.len().min(40)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if b.len() > shown.len() {
        s.push_str("...");
    }
    s
}

pub(crate) fn check_id(id: u32, n_ids: usize, what: &str) -> Result<()> {
    if (id as usize) < n_ids {
        Ok(())
    } else {
        Err(CoreError::new(format!(
            "{what}: id {id} out of range for {n_ids} pieces"
        )))
    }
}

pub(crate) fn check_len(n_ids: usize) -> Result<()> {
    if n_ids >= u32::MAX as usize {
        return Err(CoreError::new(format!("too many pieces ({n_ids})")));
    }
    Ok(())
}

pub(crate) fn check_same_len(what: &str, len: usize, n_ids: usize) -> Result<()> {
    if len != n_ids {
        return Err(CoreError::new(format!(
            "{what} has {len} entries but there are {n_ids} pieces"
        )));
    }
    Ok(())
}

/// Usable pieces in id order: (id, bytes), skipping None, empty and reserved ids.
pub(crate) fn usable_pieces<'a>(
    pieces: &'a [Option<Vec<u8>>],
    reserved: &'a FxHashSet<u32>,
) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
    pieces
        .iter()
        .enumerate()
        .filter_map(move |(id, p)| match p {
            Some(b) if !b.is_empty() && !reserved.contains(&(id as u32)) => {
                Some((id as u32, &b[..]))
            }
            _ => None,
        })
}

/// bytes -> lowest id having them.
pub(crate) fn piece_map(
    pieces: &[Option<Vec<u8>>],
    reserved: &FxHashSet<u32>,
) -> FxHashMap<Box<[u8]>, u32> {
    let mut map = FxHashMap::default();
    map.reserve(pieces.len());
    for (id, b) in usable_pieces(pieces, reserved) {
        map.entry(b.into()).or_insert(id);
    }
    map
}

/// `is_boundary[i]` for every offset 0..=len, from sorted unit boundaries.
pub(crate) fn boundary_mask(len: usize, bounds: &[usize], mask: &mut Vec<bool>) {
    mask.clear();
    mask.resize(len + 1, false);
    for &b in bounds {
        mask[b] = true;
    }
}

/// One vocabulary's segmentation model.
#[derive(Debug, Clone)]
pub enum Segmenter {
    BpeMerges(BpeMerges),
    BpeRanks(BpeRanks),
    Unigram(Unigram),
    WordPiece(WordPiece),
}

impl Segmenter {
    /// Ids for one pre-token. `word_start` only matters for WordPiece (false: the first piece
    /// is a continuation piece too).
    pub fn segment(&self, data: &[u8], word_start: bool) -> Result<Vec<u32>> {
        match self {
            Segmenter::BpeMerges(m) => m.segment(data),
            Segmenter::BpeRanks(m) => m.segment(data),
            Segmenter::Unigram(m) => m.segment(data),
            Segmenter::WordPiece(m) => m.segment(data, word_start),
        }
    }

    /// [`Segmenter::segment`] over many inputs in parallel on `num_threads` threads (0: all cores;
    /// see [`crate::pool`]).
    pub fn segment_batch(
        &self,
        data: &[&[u8]],
        word_start: Option<&[bool]>,
        num_threads: usize,
    ) -> Result<Vec<Vec<u32>>> {
        if let Some(ws) = word_start {
            if ws.len() != data.len() {
                return Err(CoreError::new(format!(
                    "word_start has {} entries but there are {} inputs",
                    ws.len(),
                    data.len()
                )));
            }
        }
        let run = || {
            data.par_iter()
                .with_min_len(64)
                .enumerate()
                .map(|(i, d)| {
                    let ws = word_start.is_none_or(|w| w[i]);
                    self.segment(d, ws)
                        .map_err(|e| CoreError::new(format!("input {i}: {e}")))
                })
                .collect::<Result<Vec<_>>>()
        };
        crate::pool::with_pool(num_threads, run).map_err(CoreError::new)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<Option<Vec<u8>>> {
        v.iter().map(|s| Some(s.as_bytes().to_vec())).collect()
    }

    #[test]
    fn fallback_checks() {
        assert!(Fallback::new(10, Some(&[0; 255]), None).is_err());
        assert!(Fallback::new(10, Some(&[10; 256]), None).is_err());
        assert!(Fallback::new(10, None, Some(10)).is_err());
        let f = Fallback::new(300, Some(&(0..256).collect::<Vec<u32>>()), None).unwrap();
        let mut out = vec![];
        f.push("é".as_bytes(), &mut out).unwrap();
        assert_eq!(out, vec![0xc3, 0xa9]);
        let f = Fallback::new(3, None, None).unwrap();
        assert!(f.push(b"x", &mut out).is_err());
    }

    #[test]
    fn batch_matches_single_and_checks_lengths() {
        let pieces = p(&["a", "b", "ab", "c"]);
        let seg = Segmenter::BpeRanks(
            BpeRanks::new(
                &pieces,
                &[0, 1, 2, 3],
                Units::Bytes,
                None,
                None,
                false,
                false,
            )
            .unwrap(),
        );
        let inputs: Vec<Vec<u8>> = (0..1000).map(|i| b"abcab".repeat(i % 7)).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
        for threads in [0, 1, 3] {
            let got = seg.segment_batch(&refs, None, threads).unwrap();
            for (d, g) in refs.iter().zip(&got) {
                assert_eq!(&seg.segment(d, true).unwrap(), g);
            }
        }
        assert!(seg.segment_batch(&refs, Some(&[true]), 0).is_err());
        let bad: Vec<&[u8]> = vec![b"ab", b"abz"];
        let err = seg.segment_batch(&bad, None, 0).unwrap_err();
        assert!(err.0.starts_with("input 1:"), "{err}");
    }
}
