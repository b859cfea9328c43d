//! Dynamic batch merging: BPE applied to one batch of token-id sequences at run time
//! (Feher, Vulić & Minixhofer 2024), with incremental pair counts.
//!
//! The algorithm (tests/dynamic_reference.py is the same thing written naively in Python):
//! - A pair is two adjacent symbols of one sequence with no cut before the right one
//!   (`cut[s][i]`: a merge may not join position i-1 and i), whose merged token stays within the caps
//!   (constituents, bytes; 0 = no cap). Its count is the number of positions where it occurs
//!   (overlapping occurrences count: "a a a" holds (a, a) twice).
//! - Each step merges the pair with the highest count (ties: the smallest (left, right) ids), left to
//!   right and non-overlapping in every sequence. The merged token's identity is its constituent base
//!   ids: two merge orders that give the same constituents give the same dynamic token. Dynamic ids
//!   are `n_base + k` in order of creation.
//! - Stop after `max_merges` steps, once the total length is <= `target_len`, or when no pair has a
//!   count >= `min_count`.
//!
//! Data structures: the batch as one array of symbols with next / prev links (links never cross
//! sequences), a count and an occurrence list (left positions, possibly stale) per pair, and a max-heap
//! of (count, pair) entries invalidated lazily: an entry whose count is no longer the pair's count is
//! re-pushed at the current count when it surfaces (counts only fall between pushes; every rise pushes).
//! Nothing is recounted per merge.
use crate::error::{CoreError, Result};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: u32 = u32::MAX;

/// Limits of one batch merge. `None` / 0 mean "no limit".
#[derive(Debug, Clone, Default)]
pub struct MergeConfig {
    pub max_merges: Option<usize>,
    pub target_len: Option<usize>,
    pub max_constituents: usize,
    pub max_bytes: usize,
    pub min_count: usize,
}

/// The merged batch, its dynamic tokens and the merges -> length curve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeResult {
    /// the batch after merging (base ids < n_base, dynamic ids n_base + k)
    pub seqs: Vec<Vec<u32>>,
    /// constituent base ids of dynamic token n_base + k
    pub tokens: Vec<Vec<u32>>,
    /// one per step: (left, right, merged id, count of the pair when chosen)
    pub merges: Vec<(u32, u32, u32, u32)>,
    /// total length of the batch before any merge and after each step (merges.len() + 1 values)
    pub lengths: Vec<usize>,
}

struct Pair {
    count: u32,
    occ: Vec<u32>,
}

struct State<'a> {
    sym: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    live: Vec<bool>,
    n_base: u32,
    base_bytes: &'a [u32],
    /// constituents and bytes of every dynamic token
    cons: Vec<Vec<u32>>,
    bytes: Vec<usize>,
    by_cons: FxHashMap<Vec<u32>, u32>,
    pairs: FxHashMap<(u32, u32), Pair>,
    cfg: &'a MergeConfig,
}

impl State<'_> {
    fn n_cons(&self, t: u32) -> usize {
        if t < self.n_base {
            1
        } else {
            self.cons[(t - self.n_base) as usize].len()
        }
    }

    fn n_bytes(&self, t: u32) -> usize {
        if t < self.n_base {
            self.base_bytes[t as usize] as usize
        } else {
            self.bytes[(t - self.n_base) as usize]
        }
    }

    fn allowed(&self, a: u32, b: u32) -> bool {
        (self.cfg.max_constituents == 0
            || self.n_cons(a) + self.n_cons(b) <= self.cfg.max_constituents)
            && (self.cfg.max_bytes == 0 || self.n_bytes(a) + self.n_bytes(b) <= self.cfg.max_bytes)
    }

    fn add(&mut self, a: u32, b: u32, pos: u32) -> bool {
        if !self.allowed(a, b) {
            return false;
        }
        let p = self.pairs.entry((a, b)).or_insert_with(|| Pair { count: 0, occ: Vec::new() });
        p.count += 1;
        p.occ.push(pos);
        true
    }

    fn remove(&mut self, a: u32, b: u32) {
        if let Some(p) = self.pairs.get_mut(&(a, b)) {
            p.count -= 1;
        }
    }

    /// A neighbour pair changes from `old` to `new` (left symbol at `pos`); `risen` collects pairs to re-push.
    fn replace(&mut self, old: (u32, u32), new: (u32, u32), pos: u32, risen: &mut Vec<(u32, u32)>) {
        self.remove(old.0, old.1);
        if self.add(new.0, new.1, pos) {
            risen.push(new);
        }
    }

    fn constituents(&self, t: u32) -> Vec<u32> {
        if t < self.n_base {
            vec![t]
        } else {
            self.cons[(t - self.n_base) as usize].clone()
        }
    }

    /// The dynamic token made of a then b (an existing one when the constituents match).
    fn merged_id(&mut self, a: u32, b: u32) -> u32 {
        let mut c = self.constituents(a);
        c.extend(self.constituents(b));
        if let Some(&t) = self.by_cons.get(&c) {
            return t;
        }
        let t = self.n_base + self.cons.len() as u32;
        self.bytes.push(self.n_bytes(a) + self.n_bytes(b));
        self.by_cons.insert(c.clone(), t);
        self.cons.push(c);
        t
    }
}

/// Merge one batch. `cut[s][i]`: no merge may join positions i-1 and i of sequence s (cut[s][0] is
/// ignored). `base_bytes[id]`: byte length of base token id (for the byte cap); every id must be
/// below `base_bytes.len()`.
pub fn merge_batch(
    seqs: &[Vec<u32>],
    cut: &[Vec<bool>],
    base_bytes: &[u32],
    cfg: &MergeConfig,
) -> Result<MergeResult> {
    if seqs.len() != cut.len() {
        return Err(CoreError::new(format!(
            "{} sequences but {} cut masks",
            seqs.len(),
            cut.len()
        )));
    }
    let n_base = u32::try_from(base_bytes.len())
        .ok()
        .filter(|&n| n < NONE / 2)
        .ok_or_else(|| CoreError::new("vocabulary too large"))?;
    let total: usize = seqs.iter().map(Vec::len).sum();
    if total >= NONE as usize {
        return Err(CoreError::new("batch too large"));
    }
    let mut sym = Vec::with_capacity(total);
    let mut next = Vec::with_capacity(total);
    let mut prev = Vec::with_capacity(total);
    let mut starts = Vec::with_capacity(seqs.len());
    for (s, (seq, c)) in seqs.iter().zip(cut).enumerate() {
        if seq.len() != c.len() {
            return Err(CoreError::new(format!(
                "sequence {s} has {} tokens but its cut mask {} entries",
                seq.len(),
                c.len()
            )));
        }
        starts.push(sym.len() as u32);
        for (i, &t) in seq.iter().enumerate() {
            if t >= n_base {
                return Err(CoreError::new(format!(
                    "sequence {s} position {i}: id {t} is outside the vocabulary of {n_base} tokens"
                )));
            }
            let pos = sym.len() as u32;
            sym.push(t);
            let linked = i + 1 < seq.len() && !c[i + 1];
            next.push(if linked { pos + 1 } else { NONE });
            prev.push(if i > 0 && !c[i] { pos - 1 } else { NONE });
        }
    }
    let mut st = State {
        live: vec![true; total],
        sym,
        next,
        prev,
        n_base,
        base_bytes,
        cons: Vec::new(),
        bytes: Vec::new(),
        by_cons: FxHashMap::default(),
        pairs: FxHashMap::default(),
        cfg,
    };
    for p in 0..total {
        let q = st.next[p];
        if q != NONE {
            let (a, b) = (st.sym[p], st.sym[q as usize]);
            st.add(a, b, p as u32);
        }
    }
    let mut heap: BinaryHeap<(u32, Reverse<(u32, u32)>)> =
        st.pairs.iter().map(|(&k, v)| (v.count, Reverse(k))).collect();
    let min_count = cfg.min_count.max(1) as u32;
    let mut length = total;
    let mut lengths = vec![length];
    let mut merges = Vec::new();
    let mut risen: Vec<(u32, u32)> = Vec::new();
    loop {
        if cfg.max_merges.is_some_and(|m| merges.len() >= m)
            || cfg.target_len.is_some_and(|t| length <= t)
        {
            break;
        }
        // the best pair whose heap entry is current
        let mut chosen = None;
        while let Some((count, Reverse(key))) = heap.pop() {
            let now = st.pairs.get(&key).map_or(0, |p| p.count);
            if now == count {
                chosen = Some((key, count));
                break;
            }
            if now > 0 {
                heap.push((now, Reverse(key)));
            }
        }
        let Some(((a, b), count)) = chosen else { break };
        if count < min_count {
            break;
        }
        let x = st.merged_id(a, b);
        let mut occ = std::mem::take(&mut st.pairs.get_mut(&(a, b)).unwrap().occ);
        occ.sort_unstable();
        occ.dedup();
        for &p in &occ {
            let pu = p as usize;
            let q = st.next[pu];
            if !st.live[pu] || st.sym[pu] != a || q == NONE || st.sym[q as usize] != b {
                continue;
            }
            let qu = q as usize;
            st.remove(a, b);
            let l = st.prev[pu];
            if l != NONE {
                let ls = st.sym[l as usize];
                st.replace((ls, a), (ls, x), l, &mut risen);
            }
            let r = st.next[qu];
            if r != NONE {
                let rs = st.sym[r as usize];
                st.replace((b, rs), (x, rs), p, &mut risen);
                st.prev[r as usize] = p;
            }
            st.sym[pu] = x;
            st.next[pu] = r;
            st.live[qu] = false;
            length -= 1;
        }
        if st.pairs.get(&(a, b)).is_some_and(|p| p.count == 0) {
            st.pairs.remove(&(a, b));
        }
        risen.sort_unstable();
        risen.dedup();
        for key in risen.drain(..) {
            if let Some(p) = st.pairs.get(&key) {
                heap.push((p.count, Reverse(key)));
            }
        }
        merges.push((a, b, x, count));
        lengths.push(length);
    }
    let mut out = Vec::with_capacity(seqs.len());
    for (s, seq) in seqs.iter().enumerate() {
        let start = starts[s] as usize;
        let end = start + seq.len();
        out.push(
            (start..end)
                .filter(|&i| st.live[i])
                .map(|i| st.sym[i])
                .collect(),
        );
    }
    Ok(MergeResult {
        seqs: out,
        tokens: st.cons,
        merges,
        lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: Vec<Vec<u32>>, cfg: MergeConfig) -> MergeResult {
        let cut: Vec<Vec<bool>> = seqs.iter().map(|s| vec![false; s.len()]).collect();
        merge_batch(&seqs, &cut, &[1; 10], &cfg).unwrap()
    }

    #[test]
    fn overlapping_runs_merge_left_to_right() {
        let r = run(vec![vec![1, 1, 1], vec![1, 1, 1, 1]], MergeConfig { max_merges: Some(1), ..Default::default() });
        assert_eq!(r.seqs, vec![vec![10, 1], vec![10, 10]]);
        assert_eq!(r.merges, vec![(1, 1, 10, 5)]);
        assert_eq!(r.lengths, vec![7, 4]);
    }

    #[test]
    fn exhaustion_gives_one_token_per_segment_and_ties_go_to_smallest_pair() {
        let seqs = vec![vec![3, 2, 5, 4]];
        let cut = vec![vec![false, false, true, false]];
        let r = merge_batch(&seqs, &cut, &[1; 10], &MergeConfig::default()).unwrap();
        assert_eq!(r.merges[0].0, 3); // (3, 2) before (5, 4): both count 1
        assert_eq!(r.seqs, vec![vec![10, 11]]);
        assert_eq!(r.tokens, vec![vec![3, 2], vec![5, 4]]);
        assert_eq!(r.lengths, vec![4, 3, 2]);
    }

    #[test]
    fn tokens_are_unique_by_constituents() {
        let seqs = vec![vec![1, 2, 3], vec![1, 2, 3], vec![9, 2, 3], vec![9, 2, 3], vec![9, 2, 3]];
        let r = run(seqs, MergeConfig::default());
        assert!(r.seqs.iter().all(|s| s.len() == 1));
        assert_eq!(r.seqs[0], r.seqs[1]);
        let mut t = r.tokens.clone();
        t.sort();
        t.dedup();
        assert_eq!(t.len(), r.tokens.len());
    }

    #[test]
    fn caps_and_bad_input() {
        let r = run(vec![vec![1, 2, 3, 4]], MergeConfig { max_constituents: 2, ..Default::default() });
        assert_eq!(r.seqs[0].len(), 2);
        let cut = vec![vec![false; 2]];
        let e = merge_batch(&[vec![1, 12]], &cut, &[1; 10], &MergeConfig::default()).unwrap_err();
        assert!(e.0.contains("outside the vocabulary"));
        let e = merge_batch(&[vec![1, 2]], &[vec![false]], &[1; 10], &MergeConfig::default()).unwrap_err();
        assert!(e.0.contains("cut mask"));
    }

    #[test]
    fn target_length_stops_early() {
        let r = run(vec![vec![1, 2, 3, 4, 5, 6]], MergeConfig { target_len: Some(4), ..Default::default() });
        assert_eq!(*r.lengths.last().unwrap(), 4);
    }
}
