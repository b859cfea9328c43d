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
use super::token_table::TokenTable;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub const NONE: u32 = u32::MAX;
/// Pieces up to this many bytes use the quadratic scan on the stack.
const SMALL: usize = 96;
/// Pieces longer than this use priority buckets instead of one binary heap.
const LARGE: usize = 8192;

/// A symbol of a linked list over positions. `prio`/`new` describe the pair (this symbol,
/// next symbol). A queued (prio, position) is stale when the symbol is dead or its pair
/// changed: a changed pair is longer, so its priority differs (ranks are per token, merge
/// indices per pair), and a pair never gets a priority it had before.
#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
    prio: u32,
    new: u32,
}

#[inline]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

pub struct BpeModel {
    byte_ids: [u32; 256],
    pairs: FxHashMap<u64, (u32, u32)>,
    vocab: TokenTable,
    /// A whole piece that is a token is returned as that token (tiktoken always does this;
    /// `tokenizers` when `ignore_merges` is set).
    ignore_merges: bool,
}

fn vocab_map(tokens: &[(Vec<u8>, u32)]) -> Result<TokenTable, String> {
    let mut vocab = TokenTable::with_capacity(tokens.len());
    for (b, id) in tokens {
        if *id == NONE {
            return Err(format!("token id {id} is out of range"));
        }
        // duplicated bytes: the lowest id wins
        let e = vocab.get_or_insert(b, *id);
        if *id < *e {
            *e = *id;
        }
    }
    Ok(vocab)
}

fn byte_ids(vocab: &TokenTable) -> [u32; 256] {
    let mut out = [NONE; 256];
    for (b, slot) in out.iter_mut().enumerate() {
        if let Some(id) = vocab.get(&[b as u8][..]) {
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
        for (b, _) in tokens {
            let Some(rank) = vocab.get(b) else { continue };
            for cut in 1..b.len() {
                if let (Some(l), Some(r)) = (vocab.get(&b[..cut]), vocab.get(&b[cut..])) {
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
            let Some(new_id) = vocab.get(&buf[..]) else {
                return Err(format!("merge {i} ({l}, {r}) gives a token that is not in the vocabulary"));
            };
            pairs.insert(key(l, r), (i as u32, new_id));
        }
        Ok(BpeModel { byte_ids: byte_ids(&vocab), pairs, vocab, ignore_merges })
    }

    /// The id of a whole byte string, if it is a token.
    #[inline]
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.vocab.get(bytes)
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
            if let Some(id) = self.vocab.get(piece) {
                out.push(id);
                return;
            }
        }
        self.merge_piece(piece, out)
    }

    /// The id of a single byte (NONE when the vocabulary lacks it).
    #[inline(always)]
    pub fn byte_id(&self, b: u8) -> u32 {
        self.byte_ids[b as usize]
    }

    /// Ids of a pre-token of two or more bytes by running the merges (no whole-token check).
    pub fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() <= SMALL {
            self.merge_small(piece, out)
        } else if piece.len() <= LARGE {
            self.merge_heap(piece, out)
        } else {
            self.merge_buckets(piece, out)
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

    /// Linked-list symbols of the bytes of `piece` with their pair priorities.
    fn symbols(&self, piece: &[u8]) -> Vec<Sym> {
        let mut syms: Vec<Sym> = Vec::with_capacity(piece.len());
        for &b in piece {
            let t = self.byte_ids[b as usize];
            if t != NONE {
                let i = syms.len() as u32;
                syms.push(Sym { id: t, prev: i.wrapping_sub(1), next: i + 1, prio: NONE, new: NONE });
            }
        }
        let n = syms.len();
        if n > 0 {
            syms[0].prev = NONE;
            syms[n - 1].next = NONE;
        }
        for i in 0..n.saturating_sub(1) {
            let (p, m) = self.pair(syms[i].id, syms[i + 1].id);
            syms[i].prio = p;
            syms[i].new = m;
        }
        syms
    }

    /// Merges the valid pair at `pos`; calls `push(prio, position)` for the new pairs.
    #[inline]
    fn merge_at(&self, syms: &mut [Sym], pos: usize, mut push: impl FnMut(u32, u32)) {
        let s = syms[pos];
        let nx = s.next as usize;
        let nn = syms[nx].next;
        syms[nx].id = NONE;
        syms[pos].id = s.new;
        syms[pos].next = nn;
        if nn != NONE {
            syms[nn as usize].prev = pos as u32;
            let (p, m) = self.pair(s.new, syms[nn as usize].id);
            syms[pos].prio = p;
            syms[pos].new = m;
            if p != NONE {
                push(p, pos as u32);
            }
        } else {
            syms[pos].prio = NONE;
        }
        let pv = s.prev;
        if pv != NONE {
            let (p, m) = self.pair(syms[pv as usize].id, s.new);
            syms[pv as usize].prio = p;
            syms[pv as usize].new = m;
            if p != NONE {
                push(p, pv);
            }
        }
    }

    fn emit(syms: &[Sym], out: &mut Vec<u32>) {
        let mut i = if syms.is_empty() { NONE } else { 0 };
        while i != NONE {
            out.push(syms[i as usize].id);
            i = syms[i as usize].next;
        }
    }

    /// Exact BPE of a long piece in near-linear time: positions are queued in one bucket per
    /// priority; the lowest bucket is sorted and merged left to right. No merge at priority p
    /// creates a pair of priority p, so within the bucket the leftmost valid entry is always
    /// the global minimum -- unless a merge creates a pair of lower priority, in which case
    /// the rest of the bucket is put back and the lower bucket goes first.
    fn merge_buckets(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut syms = self.symbols(piece);
        let mut buckets: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut order: BinaryHeap<Reverse<u32>> = BinaryHeap::new();
        for (i, s) in syms.iter().enumerate() {
            if s.prio != NONE {
                let b = buckets.entry(s.prio).or_default();
                if b.is_empty() {
                    order.push(Reverse(s.prio));
                }
                b.push(i as u32);
            }
        }
        let mut spare: Vec<u32> = Vec::new();
        while let Some(Reverse(p)) = order.pop() {
            let Some(b) = buckets.get_mut(&p) else { continue };
            if b.is_empty() {
                continue;
            }
            let mut cur = std::mem::replace(b, std::mem::take(&mut spare));
            cur.sort_unstable();
            let mut k = 0;
            let mut lower = false;
            while k < cur.len() && !lower {
                let pos = cur[k] as usize;
                k += 1;
                let s = syms[pos];
                if s.id == NONE || s.prio != p {
                    continue;
                }
                self.merge_at(&mut syms, pos, |q, at| {
                    let b = buckets.entry(q).or_default();
                    if b.is_empty() {
                        order.push(Reverse(q));
                    }
                    b.push(at);
                    if q < p {
                        lower = true;
                    }
                });
            }
            if k < cur.len() {
                // interrupted by a lower priority: the rest of this bucket comes back later
                let b = buckets.entry(p).or_default();
                if b.is_empty() {
                    order.push(Reverse(p));
                }
                b.extend_from_slice(&cur[k..]);
            }
            cur.clear();
            spare = cur;
        }
        Self::emit(&syms, out);
    }

    /// Exact BPE with one binary heap of (priority, position): O(n log n).
    fn merge_heap(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut syms = self.symbols(piece);
        let entries: Vec<Reverse<u64>> = syms
            .iter()
            .enumerate()
            .filter(|(_, s)| s.prio != NONE)
            .map(|(i, s)| Reverse(((s.prio as u64) << 32) | i as u64))
            .collect();
        let mut heap = BinaryHeap::from(entries);
        while let Some(Reverse(k)) = heap.pop() {
            let pos = (k & 0xffff_ffff) as usize;
            let s = syms[pos];
            if s.id == NONE || s.prio != (k >> 32) as u32 {
                continue;
            }
            self.merge_at(&mut syms, pos, |p, at| heap.push(Reverse(((p as u64) << 32) | at as u64)));
        }
        Self::emit(&syms, out);
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
        let mut q = Vec::new();
        m.merge_buckets(&long, &mut q);
        assert_eq!(s, q);
        for len in 2..90 {
            let text: Vec<u8> = b"abcaabbcacbaaab".iter().cycle().skip(len % 7).take(len).copied().collect();
            let (mut s, mut h) = (Vec::new(), Vec::new());
            m.merge_small(&text, &mut s);
            m.merge_heap(&text, &mut h);
            assert_eq!(s, h, "{len}");
            let mut q = Vec::new();
            m.merge_buckets(&text, &mut q);
            assert_eq!(s, q, "{len}");
        }
        let mut aaa = Vec::new();
        m.merge_heap(b"aaa", &mut aaa);
        assert_eq!(aaa, vec![259, b'a' as u32]);
    }

    #[test]
    fn three_algorithms_agree_on_non_monotone_ranks() {
        // "abc" ranks below its prefix "ab": merging ab creates a lower-priority pair
        let mut t: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        for (i, tok) in [&b"bc"[..], b"abc", b"ab", b"ca", b"cab", b"abca", b"aa", b"aaa"].iter().enumerate() {
            t.push((tok.to_vec(), 256 + i as u32));
        }
        let m = BpeModel::from_ranks(&t).unwrap();
        let mut x: u64 = 12345;
        for len in [2usize, 5, 17, 60, 95, 200, 1000, 9000, 20000] {
            for _ in 0..5 {
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        b"abc"[(x >> 33) as usize % 3]
                    })
                    .collect();
                let (mut h, mut q) = (Vec::new(), Vec::new());
                m.merge_heap(&text, &mut h);
                m.merge_buckets(&text, &mut q);
                assert_eq!(h, q, "{len}");
                if len <= SMALL {
                    let mut s = Vec::new();
                    m.merge_small(&text, &mut s);
                    assert_eq!(s, h, "{len}");
                }
            }
        }
    }
}
