//! Byte-level BPE training over pre-token counts.
//!
//! Start: ids 0..=255 are the single bytes (id = byte value); every distinct pre-token is a
//! word of byte ids with its 64-bit count. Each step merges the pair with the highest count;
//! ties go to the lexicographically smallest pair, comparing the left token's bytes first and
//! then the right token's bytes. The new token gets the next id unless its bytes already are a
//! token (then that id is reused and only the merge is recorded).
//!
//! Incremental updates: `pair -> count`, `pair -> word indices` (append-only, may hold stale
//! or repeated indices, sorted and deduplicated when used) and a max-heap of
//! (count, pair) entries with lazy invalidation: every change of a pair's count pushes a new
//! entry, and a popped entry whose count differs from the current one is dropped.
//!
//! Stops at `target` tokens, when the best pair count is below `min_frequency`, or when no
//! pair is left. Pairs whose merged token would exceed `max_token_length` bytes never merge.
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtOrd};
use std::sync::Arc;

pub struct TrainConfig {
    /// Tokens to reach, bytes included (specials are counted by the caller).
    pub target: usize,
    pub min_frequency: u64,
    pub max_token_length: Option<usize>,
}

pub struct Trained {
    /// id -> bytes
    pub vocab: Vec<Vec<u8>>,
    /// (left id, right id, merged id, count when merged), in merge order.
    pub merges: Vec<(u32, u32, u32, u64)>,
}

#[derive(Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub cancel: AtomicBool,
}

struct Entry {
    count: u64,
    left: Arc<[u8]>,
    right: Arc<[u8]>,
    pair: (u32, u32),
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.count
            .cmp(&o.count)
            .then_with(|| o.left.cmp(&self.left))
            .then_with(|| o.right.cmp(&self.right))
    }
}

pub fn train<'a, I>(counts: I, cfg: &TrainConfig, progress: &Progress) -> Result<Trained, String>
where
    I: IntoIterator<Item = (&'a [u8], u64)>,
{
    if cfg.target < 256 {
        return Err(format!("vocab size {} is below the 256 byte tokens", cfg.target));
    }
    let mut vocab: Vec<Arc<[u8]>> = (0..=255u8).map(|b| Arc::from(vec![b])).collect();
    let mut index: FxHashMap<Vec<u8>, u32> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
    let mut items: Vec<(&[u8], u64)> = counts.into_iter().filter(|(b, c)| b.len() > 1 && *c > 0).collect();
    items.sort_unstable();
    let mut words: Vec<Vec<u32>> = Vec::with_capacity(items.len());
    let mut wcount: Vec<u64> = Vec::with_capacity(items.len());
    for (b, c) in items {
        words.push(b.iter().map(|&x| x as u32).collect());
        wcount.push(c);
    }
    let max_len = cfg.max_token_length.unwrap_or(usize::MAX);
    let mut pair_counts: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    let mut where_: FxHashMap<(u32, u32), Vec<u32>> = FxHashMap::default();
    for (wi, w) in words.iter().enumerate() {
        for p in w.windows(2) {
            let pair = (p[0], p[1]);
            *pair_counts.entry(pair).or_insert(0) += wcount[wi];
            let list = where_.entry(pair).or_default();
            if list.last() != Some(&(wi as u32)) {
                list.push(wi as u32);
            }
        }
    }
    let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(pair_counts.len());
    let entry = |vocab: &Vec<Arc<[u8]>>, pair: (u32, u32), count: u64| Entry {
        count,
        left: vocab[pair.0 as usize].clone(),
        right: vocab[pair.1 as usize].clone(),
        pair,
    };
    for (&pair, &c) in &pair_counts {
        if vocab[pair.0 as usize].len() + vocab[pair.1 as usize].len() <= max_len {
            heap.push(entry(&vocab, pair, c));
        }
    }
    let mut merges = Vec::new();
    let mut delta: FxHashMap<(u32, u32), i64> = FxHashMap::default();
    while vocab.len() < cfg.target {
        if progress.cancel.load(AtOrd::Relaxed) {
            return Err("interrupted".into());
        }
        let Some(top) = heap.pop() else { break };
        if pair_counts.get(&top.pair) != Some(&top.count) {
            continue; // stale
        }
        if top.count < cfg.min_frequency {
            break;
        }
        let (a, b) = top.pair;
        let mut bytes = top.left.to_vec();
        bytes.extend_from_slice(&top.right);
        let new_id = match index.get(&bytes) {
            Some(&id) => id,
            None => {
                let id = vocab.len() as u32;
                vocab.push(Arc::from(bytes.clone()));
                index.insert(bytes, id);
                id
            }
        };
        merges.push((a, b, new_id, top.count));
        let mut list = where_.remove(&top.pair).unwrap_or_default();
        list.sort_unstable();
        list.dedup();
        delta.clear();
        for &wi in &list {
            let w = &mut words[wi as usize];
            if !w.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let c = wcount[wi as usize] as i64;
            for p in w.windows(2) {
                *delta.entry((p[0], p[1])).or_insert(0) -= c;
            }
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(new_id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
            for (k, p) in w.windows(2).enumerate() {
                *delta.entry((p[0], p[1])).or_insert(0) += c;
                if p[0] == new_id || p[1] == new_id {
                    let l = where_.entry((p[0], p[1])).or_default();
                    if l.last() != Some(&wi) {
                        l.push(wi);
                    }
                }
                let _ = k;
            }
        }
        for (&pair, &d) in delta.iter() {
            if d == 0 {
                continue;
            }
            let cur = pair_counts.entry(pair).or_insert(0);
            let nc = (*cur as i64 + d) as u64;
            *cur = nc;
            if nc == 0 {
                pair_counts.remove(&pair);
                where_.remove(&pair);
            } else if vocab[pair.0 as usize].len() + vocab[pair.1 as usize].len() <= max_len {
                heap.push(entry(&vocab, pair, nc));
            }
        }
        progress.done.store(merges.len() as u64, AtOrd::Relaxed);
    }
    Ok(Trained { vocab: vocab.iter().map(|v| v.to_vec()).collect(), merges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small() {
        let data: Vec<(&[u8], u64)> = vec![(b"hug", 10), (b"pug", 5), (b"pun", 12), (b"bun", 4), (b"hugs", 5)];
        let cfg = TrainConfig { target: 256 + 3, min_frequency: 1, max_token_length: None };
        let t = train(data.iter().map(|(b, c)| (*b, *c)), &cfg, &Progress::default()).unwrap();
        assert_eq!(t.vocab[256], b"ug");
        assert_eq!(t.merges[0].3, 20);
        assert_eq!(t.vocab.len(), 259);
    }
}
