//! Byte-pair encoding of one pre-token, two flavours:
//! - [`BpeMerges`]: HF tokenizers' BPE. Symbols are ids; `merges[i] = (left, right)` has
//!   priority i; the lowest-priority applicable merge is applied first, leftmost on ties.
//! - [`BpeRanks`]: tiktoken / SentencePiece BPE. Symbols are byte spans; the adjacent pair
//!   whose joined bytes is the piece of lowest rank is merged first, leftmost on ties.
//!
//! Both use a binary heap with lazily discarded stale entries and a doubly linked list of
//! symbols: O(n log n) in the input length.
use super::units::{unit_boundaries, Units};
use super::{check_id, check_len, check_same_len, piece_map, Fallback};
use crate::error::{CoreError, Result};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NIL: u32 = u32::MAX;

/// HF tokenizers BPE model.
#[derive(Debug, Clone)]
pub struct BpeMerges {
    units: Units,
    piece_ids: FxHashMap<Box<[u8]>, u32>,
    /// (left, right) -> (priority, merged id)
    merges: FxHashMap<(u32, u32), (u32, u32)>,
    fallback: Fallback,
    ignore_merges: bool,
    fuse_unk: bool,
}

impl BpeMerges {
    /// Merges whose left or right id has no bytes can never apply and are dropped; a merge
    /// whose joined bytes are not a piece is an error (as in HF tokenizers). When the same
    /// pair is listed twice, its first priority is kept. `fuse_unk`: a run of uncovered
    /// characters gives one unk (HF `fuse_unk`) instead of one per character.
    pub fn new(
        pieces: &[Option<Vec<u8>>],
        merges: &[(u32, u32)],
        units: Units,
        byte_fallback: Option<&[u32]>,
        unk: Option<u32>,
        ignore_merges: bool,
        fuse_unk: bool,
    ) -> Result<Self> {
        let n = pieces.len();
        check_len(n)?;
        let fallback = Fallback::new(n, byte_fallback, unk)?;
        let piece_ids = piece_map(pieces, &fallback.reserved_ids());
        let mut merge_map = FxHashMap::default();
        merge_map.reserve(merges.len());
        let mut joined = Vec::new();
        for (rank, &(l, r)) in merges.iter().enumerate() {
            check_id(l, n, &format!("merges[{rank}]"))?;
            check_id(r, n, &format!("merges[{rank}]"))?;
            let (Some(lb), Some(rb)) = (&pieces[l as usize], &pieces[r as usize]) else {
                continue;
            };
            joined.clear();
            joined.extend_from_slice(lb);
            joined.extend_from_slice(rb);
            let Some(&new_id) = piece_ids.get(&joined[..]) else {
                return Err(CoreError::new(format!(
                    "merges[{rank}] = ({l}, {r}): no piece has the joined bytes {:?}",
                    String::from_utf8_lossy(&joined)
                )));
            };
            merge_map.entry((l, r)).or_insert((rank as u32, new_id));
        }
        Ok(BpeMerges {
            units,
            piece_ids,
            merges: merge_map,
            fallback,
            ignore_merges,
            fuse_unk,
        })
    }

    pub fn segment(&self, data: &[u8]) -> Result<Vec<u32>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if self.ignore_merges {
            if let Some(&id) = self.piece_ids.get(data) {
                return Ok(vec![id]);
            }
        }
        let mut bounds = Vec::new();
        unit_boundaries(data, self.units, &mut bounds);
        let mut ids = Vec::with_capacity(bounds.len());
        let mut uncovered = Uncovered::new(self.fuse_unk);
        for w in bounds.windows(2) {
            match self.piece_ids.get(&data[w[0]..w[1]]) {
                Some(&id) => {
                    uncovered.flush(&self.fallback, data, w[0], &mut ids)?;
                    ids.push(id);
                }
                None => uncovered.add(&self.fallback, data, w[0], w[1], &mut ids)?,
            }
        }
        uncovered.flush(&self.fallback, data, data.len(), &mut ids)?;
        Ok(self.merge_all(ids))
    }

    fn merge_all(&self, mut ids: Vec<u32>) -> Vec<u32> {
        let n = ids.len();
        if n < 2 {
            return ids;
        }
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NIL;
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NIL;
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            if let Some(&(rank, new_id)) = self.merges.get(&(ids[i], ids[i + 1])) {
                heap.push(Reverse((rank, i as u32, new_id)));
            }
        }
        while let Some(Reverse((_, pos, new_id))) = heap.pop() {
            let p = pos as usize;
            if !alive[p] || next[p] == NIL {
                continue;
            }
            let q = next[p] as usize;
            // stale entry: the pair at `pos` changed since it was queued
            match self.merges.get(&(ids[p], ids[q])) {
                Some(&(_, id)) if id == new_id => {}
                _ => continue,
            }
            ids[p] = new_id;
            alive[q] = false;
            next[p] = next[q];
            if next[q] != NIL {
                prev[next[q] as usize] = pos;
            }
            if prev[p] != NIL {
                let l = prev[p];
                if let Some(&(rank, id)) = self.merges.get(&(ids[l as usize], new_id)) {
                    heap.push(Reverse((rank, l, id)));
                }
            }
            if next[p] != NIL {
                if let Some(&(rank, id)) = self.merges.get(&(new_id, ids[next[p] as usize])) {
                    heap.push(Reverse((rank, pos, id)));
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut i = 0u32;
        while i != NIL {
            out.push(ids[i as usize]);
            i = next[i as usize];
        }
        out
    }
}

/// Rank BPE (tiktoken; SentencePiece BPE with rank = position by descending score).
#[derive(Debug, Clone)]
pub struct BpeRanks {
    units: Units,
    /// bytes -> (rank, id) of the lowest id with those bytes
    pieces: FxHashMap<Box<[u8]>, (i64, u32)>,
    fallback: Fallback,
    ignore_merges: bool,
    fuse_unk: bool,
}

impl BpeRanks {
    /// `ignore_merges`: an input that is itself a piece is returned as that one id without
    /// merging (tiktoken does this). `fuse_unk`: adjacent uncovered characters left after
    /// merging give one unk (SentencePiece does this) instead of one each.
    pub fn new(
        pieces: &[Option<Vec<u8>>],
        ranks: &[i64],
        units: Units,
        byte_fallback: Option<&[u32]>,
        unk: Option<u32>,
        ignore_merges: bool,
        fuse_unk: bool,
    ) -> Result<Self> {
        let n = pieces.len();
        check_len(n)?;
        check_same_len("ranks", ranks.len(), n)?;
        let fallback = Fallback::new(n, byte_fallback, unk)?;
        let map = piece_map(pieces, &fallback.reserved_ids())
            .into_iter()
            .map(|(b, id)| (b, (ranks[id as usize], id)))
            .collect();
        Ok(BpeRanks {
            units,
            pieces: map,
            fallback,
            ignore_merges,
            fuse_unk,
        })
    }

    fn rank(&self, bytes: &[u8]) -> Option<i64> {
        self.pieces.get(bytes).map(|&(r, _)| r)
    }

    pub fn segment(&self, data: &[u8]) -> Result<Vec<u32>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if self.ignore_merges {
            if let Some(&(_, id)) = self.pieces.get(data) {
                return Ok(vec![id]);
            }
        }
        // symbol i is data[start[i]..end(i)], end(i) = start of the next live symbol
        let mut start = Vec::new();
        unit_boundaries(data, self.units, &mut start);
        let len = data.len();
        start.pop();
        let n = start.len();
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NIL;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NIL;
        let mut alive = vec![true; n];
        let end_of = |next: &[u32], i: usize| -> usize {
            match next[i] {
                NIL => len,
                j => start[j as usize],
            }
        };
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n.saturating_sub(1) {
            let e = end_of(&next, i + 1);
            if let Some(r) = self.rank(&data[start[i]..e]) {
                heap.push(Reverse((r, i as u32, e)));
            }
        }
        while let Some(Reverse((_, pos, e))) = heap.pop() {
            let p = pos as usize;
            if !alive[p] || next[p] == NIL {
                continue;
            }
            let q = next[p] as usize;
            if end_of(&next, q) != e {
                continue; // stale: the right neighbour changed
            }
            alive[q] = false;
            next[p] = next[q];
            if next[q] != NIL {
                prev[next[q] as usize] = pos;
            }
            if prev[p] != NIL {
                let l = prev[p];
                if let Some(r) = self.rank(&data[start[l as usize]..e]) {
                    heap.push(Reverse((r, l, e)));
                }
            }
            if next[p] != NIL {
                let e2 = end_of(&next, next[p] as usize);
                if let Some(r) = self.rank(&data[start[p]..e2]) {
                    heap.push(Reverse((r, pos, e2)));
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut uncovered = Uncovered::new(self.fuse_unk);
        let mut i = 0u32;
        while i != NIL {
            let s = start[i as usize];
            let e = end_of(&next, i as usize);
            match self.pieces.get(&data[s..e]) {
                Some(&(_, id)) => {
                    uncovered.flush(&self.fallback, data, s, &mut out)?;
                    out.push(id);
                }
                // only single units stay unmerged without being pieces
                None => uncovered.add(&self.fallback, data, s, e, &mut out)?,
            }
            i = next[i as usize];
        }
        uncovered.flush(&self.fallback, data, len, &mut out)?;
        Ok(out)
    }
}

/// Emits fallback ids for uncovered units, one unit at a time or (fused) one run at a time.
struct Uncovered {
    fuse: bool,
    run_start: Option<usize>,
}

impl Uncovered {
    fn new(fuse: bool) -> Self {
        Uncovered {
            fuse,
            run_start: None,
        }
    }

    fn add(
        &mut self,
        fb: &Fallback,
        data: &[u8],
        s: usize,
        e: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if self.fuse {
            self.run_start.get_or_insert(s);
            Ok(())
        } else {
            fb.push(&data[s..e], out)
        }
    }

    /// Ends a run of uncovered units at offset `end`.
    fn flush(&mut self, fb: &Fallback, data: &[u8], end: usize, out: &mut Vec<u32>) -> Result<()> {
        match self.run_start.take() {
            Some(s) => fb.push(&data[s..end], out),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<Option<Vec<u8>>> {
        v.iter().map(|s| Some(s.as_bytes().to_vec())).collect()
    }

    /// Quadratic reference for rank BPE: scan for the lowest-rank pair, leftmost on ties.
    fn naive_ranks(pieces: &[Option<Vec<u8>>], ranks: &[i64], data: &[u8]) -> Vec<u32> {
        let find = |b: &[u8]| {
            pieces
                .iter()
                .position(|p| p.as_deref() == Some(b))
                .map(|id| (ranks[id], id as u32))
        };
        let mut parts: Vec<Vec<u8>> = data.iter().map(|&b| vec![b]).collect();
        loop {
            let mut best: Option<(i64, usize)> = None;
            for i in 0..parts.len().saturating_sub(1) {
                let j = [parts[i].clone(), parts[i + 1].clone()].concat();
                if let Some((r, _)) = find(&j) {
                    if best.is_none_or(|(br, _)| r < br) {
                        best = Some((r, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let right = parts.remove(i + 1);
            parts[i].extend(right);
        }
        parts.iter().map(|b| find(b).unwrap().1).collect()
    }

    #[test]
    fn ranks_basic() {
        let pieces = p(&["a", "b", "c", "ab", "bc", "abc"]);
        let ranks = [0, 1, 2, 4, 3, 5];
        let m = BpeRanks::new(&pieces, &ranks, Units::Bytes, None, None, false, false).unwrap();
        assert_eq!(m.segment(b"abc").unwrap(), vec![5]); // b+c (rank 3), then a+bc
        assert_eq!(m.segment(b"abcab").unwrap(), vec![5, 3]);
        assert_eq!(m.segment(b"").unwrap(), Vec::<u32>::new());
        assert_eq!(m.segment(b"ab").unwrap(), vec![3]);
        assert!(m.segment(b"abd").is_err()); // 'd' uncovered, no fallback
                                             // "abc" cannot be reached by merges; ignore_merges returns it whole
        let pieces = p(&["a", "b", "c", "abc"]);
        let m = BpeRanks::new(
            &pieces,
            &[0, 1, 2, 3],
            Units::Bytes,
            None,
            None,
            false,
            false,
        )
        .unwrap();
        assert_eq!(m.segment(b"abc").unwrap(), vec![0, 1, 2]);
        let m = BpeRanks::new(
            &pieces,
            &[0, 1, 2, 3],
            Units::Bytes,
            None,
            None,
            true,
            false,
        )
        .unwrap();
        assert_eq!(m.segment(b"abc").unwrap(), vec![3]);
        assert_eq!(m.segment(b"abca").unwrap(), vec![0, 1, 2, 0]);
        let ranks = [0, 1, 2, 4, 3, 5];
        assert!(
            BpeRanks::new(&pieces, &ranks[..3], Units::Bytes, None, None, false, false).is_err()
        );
    }

    #[test]
    fn ranks_match_naive_on_generated_input() {
        let pieces = p(&[
            "a", "b", "c", "aa", "ab", "ba", "aaa", "abab", "bab", "cab", "aab",
        ]);
        let ranks: Vec<i64> = vec![0, 1, 2, 7, 3, 5, 4, 8, 6, 9, 10];
        let m = BpeRanks::new(&pieces, &ranks, Units::Bytes, None, None, false, false).unwrap();
        let mut x = 12345u64;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"abc"[((x >> 33) % 3) as usize]
                })
                .collect();
            assert_eq!(
                m.segment(&data).unwrap(),
                naive_ranks(&pieces, &ranks, &data)
            );
        }
    }

    #[test]
    fn ranks_chars_with_fallback() {
        // ids 0..256 byte fallback (never matched as pieces), then pieces
        let mut pieces: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        pieces.extend(p(&["é", "t", "é", "té"]));
        let ranks: Vec<i64> = (0..pieces.len() as i64).collect();
        let bf: Vec<u32> = (0..256).collect();
        let m =
            BpeRanks::new(&pieces, &ranks, Units::Chars, Some(&bf), None, false, false).unwrap();
        assert_eq!(m.segment("tét".as_bytes()).unwrap(), vec![259, 257]); // lowest id for "é"
        assert_eq!(
            m.segment("x日".as_bytes()).unwrap(),
            vec![b'x' as u32, 0xe6, 0x97, 0xa5]
        );
        assert_eq!(m.segment(b"\xfft").unwrap(), vec![0xff, 257]);
        let m = BpeRanks::new(&p(&["a"]), &[0], Units::Chars, None, Some(0), false, false).unwrap();
        assert_eq!(m.segment("ßaß".as_bytes()).unwrap(), vec![0, 0, 0]);
        assert_eq!(m.segment("ßßaß".as_bytes()).unwrap(), vec![0, 0, 0, 0]);
        let m = BpeRanks::new(
            &p(&["a", "<unk>"]),
            &[0, 1],
            Units::Chars,
            None,
            Some(1),
            false,
            true,
        )
        .unwrap();
        assert_eq!(
            m.segment(b"\xc3\x9f\xc3\x9f\xffa\xc3\x9f").unwrap(),
            vec![1, 0, 1]
        );
        // with byte fallback, fusing changes nothing
        let m = BpeRanks::new(&pieces, &ranks, Units::Chars, Some(&bf), None, false, true).unwrap();
        assert_eq!(
            m.segment("x日t".as_bytes()).unwrap(),
            vec![b'x' as u32, 0xe6, 0x97, 0xa5, 257]
        );
    }

    #[test]
    fn ranks_long_input_is_fast() {
        let pieces = p(&["a", "aa", "aaaa", "aaaaaaaa"]);
        let m = BpeRanks::new(
            &pieces,
            &[0, 1, 2, 3],
            Units::Bytes,
            None,
            None,
            false,
            false,
        )
        .unwrap();
        let data = vec![b'a'; 200_000];
        let t = std::time::Instant::now();
        let out = m.segment(&data).unwrap();
        assert_eq!(out.len(), 25_000);
        assert!(out.iter().all(|&id| id == 3));
        assert!(t.elapsed().as_secs_f64() < 5.0);
    }

    #[test]
    fn merges_basic() {
        // ids: a b c ab bc abc
        let pieces = p(&["a", "b", "c", "ab", "bc", "abc"]);
        let merges = [(1, 2), (0, 1), (0, 4)];
        let m =
            BpeMerges::new(&pieces, &merges, Units::Bytes, None, Some(0), false, false).unwrap();
        assert_eq!(m.segment(b"abc").unwrap(), vec![5]); // b+c, then a+bc
        assert_eq!(m.segment(b"abab").unwrap(), vec![3, 3]);
        assert_eq!(m.segment(b"cab").unwrap(), vec![2, 3]);
        assert_eq!(m.segment(b"").unwrap(), Vec::<u32>::new());
        assert_eq!(m.segment(b"xa").unwrap(), vec![0, 0]); // unk = 0 here
        let fused =
            BpeMerges::new(&pieces, &merges, Units::Bytes, None, Some(5), false, true).unwrap();
        assert_eq!(fused.segment(b"xyabzc").unwrap(), vec![5, 3, 5, 2]);
        assert_eq!(m.segment(b"xyabzc").unwrap(), vec![0, 0, 3, 0, 2]);
        // bad merges
        assert!(
            BpeMerges::new(&pieces, &[(0, 2)], Units::Bytes, None, None, false, false).is_err()
        );
        assert!(
            BpeMerges::new(&pieces, &[(0, 6)], Units::Bytes, None, None, false, false).is_err()
        );
        let mut with_none = pieces.clone();
        with_none[2] = None;
        assert!(BpeMerges::new(
            &with_none,
            &[(0, 2)],
            Units::Bytes,
            None,
            None,
            false,
            false
        )
        .is_ok());
    }

    #[test]
    fn merges_priority_and_ties() {
        let pieces = p(&["a", "aa", "aaa"]);
        let m = BpeMerges::new(
            &pieces,
            &[(0, 0), (1, 0)],
            Units::Bytes,
            None,
            None,
            false,
            false,
        )
        .unwrap();
        // a a a -> (aa) a -> aaa
        assert_eq!(m.segment(b"aaa").unwrap(), vec![2]);
        assert_eq!(m.segment(b"aaaa").unwrap(), vec![1, 1]);
        assert_eq!(m.segment(b"aaaaa").unwrap(), vec![1, 2]);
        let m = BpeMerges::new(&pieces, &[(0, 0)], Units::Bytes, None, None, true, false).unwrap();
        assert_eq!(m.segment(b"aaa").unwrap(), vec![2]); // ignore_merges: whole piece
        let m = BpeMerges::new(&pieces, &[(0, 0)], Units::Bytes, None, None, false, false).unwrap();
        assert_eq!(m.segment(b"aaa").unwrap(), vec![1, 0]);
        let long = vec![b'a'; 100_001];
        let out = m.segment(&long).unwrap();
        assert_eq!(out.len(), 50_001);
    }
}
