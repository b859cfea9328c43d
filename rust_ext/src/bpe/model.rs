//! Byte-level BPE over one pre-token.
//!
//! Both flavours reduce to one table `(left id, right id) -> (priority, merged id)`:
//! - tiktoken rank files: a pair may merge when the concatenation of its bytes is a token; its
//!   priority is that token's rank (= id). The table holds every split of every token into two
//!   tokens, so it answers exactly "rank of left ++ right".
//! - HF `tokenizers` merges: priority = index of the merge in `model.merges`, merged id = the id
//!   of the concatenated token. This is exact by construction, no rank-order assumption needed.
//!
//! The loop merges the lowest-priority adjacent pair, leftmost on ties (tiktoken scans left to
//! right with a strict `<`; `tokenizers` pops a heap ordered by (rank, position)). Short pieces
//! use a scan over a stack array; long ones a binary heap over a linked list: O(n log n).
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub const NONE: u32 = u32::MAX;
/// Pieces up to this many bytes use the quadratic scan on the stack.
const SMALL: usize = 96;

#[inline]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

pub struct BpeModel {
    byte_ids: [u32; 256],
    pairs: FxHashMap<u64, (u32, u32)>,
    vocab: FxHashMap<Box<[u8]>, u32>,
    /// A whole piece that is a token is returned as that token (tiktoken always does this;
    /// `tokenizers` when `ignore_merges` is set).
    ignore_merges: bool,
}

fn vocab_map(tokens: &[(Vec<u8>, u32)]) -> Result<FxHashMap<Box<[u8]>, u32>, String> {
    let mut vocab: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
    vocab.reserve(tokens.len());
    for (b, id) in tokens {
        if *id == NONE {
            return Err(format!("token id {id} is out of range"));
        }
        // duplicated bytes: the lowest id wins
        let e = vocab.entry(b.clone().into_boxed_slice()).or_insert(*id);
        if *id < *e {
            *e = *id;
        }
    }
    Ok(vocab)
}

fn byte_ids(vocab: &FxHashMap<Box<[u8]>, u32>) -> [u32; 256] {
    let mut out = [NONE; 256];
    for (b, slot) in out.iter_mut().enumerate() {
        if let Some(&id) = vocab.get(&[b as u8][..]) {
            *slot = id;
        }
    }
    out
}

impl BpeModel {
    /// tiktoken rank BPE: `tokens` are (bytes, rank); the rank is also the id.
    pub fn from_ranks(tokens: &[(Vec<u8>, u32)]) -> Result<Self, String> {
        let vocab = vocab_map(tokens)?;
        let mut pairs: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        pairs.reserve(tokens.len() * 2);
        for (b, &rank) in vocab.iter() {
            for cut in 1..b.len() {
                if let (Some(&l), Some(&r)) = (vocab.get(&b[..cut]), vocab.get(&b[cut..])) {
                    pairs.insert(key(l, r), (rank, rank));
                }
            }
        }
        Ok(BpeModel { byte_ids: byte_ids(&vocab), pairs, vocab, ignore_merges: true })
    }

    /// HF `tokenizers` BPE: `merges[i] = (left id, right id)` has priority i; the merged token
    /// is the id whose bytes are left ++ right (a merge whose result is not in the vocabulary is
    /// an error, as in `tokenizers`). A repeated merge keeps its last position, as `tokenizers`.
    pub fn from_merges(
        tokens: &[(Vec<u8>, u32)],
        merges: &[(u32, u32)],
        ignore_merges: bool,
    ) -> Result<Self, String> {
        let vocab = vocab_map(tokens)?;
        let mut bytes_of: FxHashMap<u32, &[u8]> = FxHashMap::default();
        for (b, id) in tokens {
            bytes_of.entry(*id).or_insert(&b[..]);
        }
        let mut pairs: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        pairs.reserve(merges.len());
        let mut buf = Vec::new();
        for (i, &(l, r)) in merges.iter().enumerate() {
            let (Some(lb), Some(rb)) = (bytes_of.get(&l), bytes_of.get(&r)) else {
                return Err(format!("merge {i} ({l}, {r}) names an id outside the vocabulary"));
            };
            buf.clear();
            buf.extend_from_slice(lb);
            buf.extend_from_slice(rb);
            let Some(&new_id) = vocab.get(&buf[..]) else {
                return Err(format!("merge {i} ({l}, {r}) gives a token that is not in the vocabulary"));
            };
            pairs.insert(key(l, r), (i as u32, new_id));
        }
        Ok(BpeModel { byte_ids: byte_ids(&vocab), pairs, vocab, ignore_merges })
    }

    /// The id of a whole byte string, if it is a token.
    #[inline]
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.vocab.get(bytes).copied()
    }

    pub fn ignore_merges(&self) -> bool {
        self.ignore_merges
    }

    #[inline]
    fn pair(&self, a: u32, b: u32) -> (u32, u32) {
        match self.pairs.get(&key(a, b)) {
            Some(&p) => p,
            None => (NONE, NONE),
        }
    }

    /// Ids of one pre-token, appended to `out`. Bytes without a token are dropped (what
    /// `tokenizers` does for characters outside the vocabulary when there is no unk token).
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() == 1 {
            let id = self.byte_ids[piece[0] as usize];
            if id != NONE {
                out.push(id);
            }
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(piece) {
                out.push(id);
                return;
            }
        }
        if piece.len() <= SMALL {
            self.merge_small(piece, out)
        } else {
            self.merge_heap(piece, out)
        }
    }

    fn merge_small(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut ids = [0u32; SMALL];
        // pr[i] = (priority, merged id) of the pair (ids[i], ids[i + 1])
        let mut pr = [(NONE, NONE); SMALL];
        let mut n = 0;
        for &b in piece {
            let id = self.byte_ids[b as usize];
            if id != NONE {
                ids[n] = id;
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        for i in 0..n - 1 {
            pr[i] = self.pair(ids[i], ids[i + 1]);
        }
        while n > 1 {
            let mut best = NONE;
            let mut at = 0;
            for (i, p) in pr[..n - 1].iter().enumerate() {
                if p.0 < best {
                    best = p.0;
                    at = i;
                }
            }
            if best == NONE {
                break;
            }
            ids[at] = pr[at].1;
            ids.copy_within(at + 2..n, at + 1);
            if at + 2 < n {
                pr.copy_within(at + 2..n - 1, at + 1);
            }
            n -= 1;
            if at + 1 < n {
                pr[at] = self.pair(ids[at], ids[at + 1]);
            }
            if at > 0 {
                pr[at - 1] = self.pair(ids[at - 1], ids[at]);
            }
        }
        out.extend_from_slice(&ids[..n]);
    }

    fn merge_heap(&self, piece: &[u8], out: &mut Vec<u32>) {
        // symbols as a doubly linked list over positions; a dead symbol has id NONE
        let mut id: Vec<u32> = Vec::with_capacity(piece.len());
        for &b in piece {
            let t = self.byte_ids[b as usize];
            if t != NONE {
                id.push(t);
            }
        }
        let n = id.len();
        if n == 0 {
            return;
        }
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NONE;
        prev[0] = NONE;
        // entries: ((priority << 32) | left position, left id, right id, merged id)
        let mut heap: BinaryHeap<Reverse<(u64, u32, u32, u32)>> = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let (p, m) = self.pair(id[i], id[i + 1]);
            if p != NONE {
                heap.push(Reverse((((p as u64) << 32) | i as u64, id[i], id[i + 1], m)));
            }
        }
        while let Some(Reverse((k, l, r, m))) = heap.pop() {
            let pos = (k & 0xffff_ffff) as usize;
            // stale entry? A changed symbol only grows, so equal ids mean the same pair.
            if id[pos] != l {
                continue;
            }
            let nx = next[pos];
            if nx == NONE || id[nx as usize] != r {
                continue;
            }
            id[pos] = m;
            id[nx as usize] = NONE;
            let nn = next[nx as usize];
            next[pos] = nn;
            if nn != NONE {
                prev[nn as usize] = pos as u32;
                let (p, mm) = self.pair(m, id[nn as usize]);
                if p != NONE {
                    heap.push(Reverse((((p as u64) << 32) | pos as u64, m, id[nn as usize], mm)));
                }
            }
            let pv = prev[pos];
            if pv != NONE {
                let (p, mm) = self.pair(id[pv as usize], m);
                if p != NONE {
                    heap.push(Reverse((((p as u64) << 32) | pv as u64, id[pv as usize], m, mm)));
                }
            }
        }
        let mut i = 0u32;
        while i != NONE {
            out.push(id[i as usize]);
            i = next[i as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Vec<(Vec<u8>, u32)> {
        let mut t: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        t.push((b"ab".to_vec(), 256));
        t.push((b"bc".to_vec(), 257));
        t.push((b"abc".to_vec(), 258));
        t.push((b"aa".to_vec(), 259));
        t
    }

    #[test]
    fn ranks_small_and_heap_agree() {
        let m = BpeModel::from_ranks(&toy()).unwrap();
        let mut a = Vec::new();
        m.encode_piece(b"abcx", &mut a);
        assert_eq!(a, vec![258, b'x' as u32]);
        let long: Vec<u8> = b"abcaab".iter().cycle().take(600).copied().collect();
        let (mut s, mut h) = (Vec::new(), Vec::new());
        for chunk in long.chunks(6) {
            m.merge_small(chunk, &mut s);
        }
        m.merge_heap(&long, &mut h);
        assert_eq!(s, h);
        let mut aaa = Vec::new();
        m.merge_heap(b"aaa", &mut aaa);
        assert_eq!(aaa, vec![259, b'a' as u32]);
    }
}
