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
//! (count, pair) entries with lazy invalidation: an increase of a pair's count pushes a new
//! entry; a decrease pushes nothing. A popped entry whose count is above the current one is
//! pushed back with the current count, one below it is dropped (a newer entry exists), and
//! only an entry equal to the current count is merged (a merged pair's count drops to 0).
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
    let t_start = std::time::Instant::now();
    let mut vocab: Vec<Arc<[u8]>> = (0..=255u8).map(|b| Arc::from(vec![b])).collect();
    let mut index: FxHashMap<Vec<u8>, u32> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
    let mut items: Vec<(&[u8], u64)> = counts.into_iter().filter(|(b, c)| b.len() > 1 && *c > 0).collect();
    items.sort_unstable();
    // Words live in one arena (better locality): word i is syms[start[i]..start[i] + len[i]].
    let mut syms: Vec<u32> = Vec::new();
    let mut start: Vec<usize> = Vec::with_capacity(items.len());
    let mut wlen: Vec<u32> = Vec::with_capacity(items.len());
    let mut wcount: Vec<u64> = Vec::with_capacity(items.len());
    for (b, c) in items {
        start.push(syms.len());
        wlen.push(b.len() as u32);
        syms.extend(b.iter().map(|&x| x as u32));
        wcount.push(c);
    }
    let max_len = cfg.max_token_length.unwrap_or(usize::MAX);
    let mut pair_counts: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    let mut where_: FxHashMap<(u32, u32), Vec<u32>> = FxHashMap::default();
    for wi in 0..start.len() {
        let w = &syms[start[wi]..start[wi] + wlen[wi] as usize];
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
    let dbg = std::env::var_os("TOKBENCH_TRAIN_TIMING").is_some();
    if dbg { eprintln!("setup {:?}", t_start.elapsed()); }
    let mut merges = Vec::new();
    let mut delta: FxHashMap<(u32, u32), i64> = FxHashMap::default();
    while vocab.len() < cfg.target {
        if progress.cancel.load(AtOrd::Relaxed) {
            return Err("interrupted".into());
        }
        let Some(top) = heap.pop() else { break };
        match pair_counts.get(&top.pair) {
            None => continue, // merged or gone
            Some(&c) if c > top.count => continue, // an increase pushed a newer entry
            Some(&c) if c < top.count => {
                heap.push(Entry { count: c, ..top }); // decreased since: lazy re-push
                continue;
            }
            Some(_) => {}
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
            let s0 = start[wi as usize];
            let w = &mut syms[s0..s0 + wlen[wi as usize] as usize];
            let c = wcount[wi as usize] as i64;
            // In-place left-to-right merge; the neighbour pairs of every occurrence change:
            // (prev, a) -> (prev, new) and (b, next) -> (new, next). `prev` is read from the
            // already-merged output, so back-to-back occurrences cancel correctly.
            let n = w.len();
            let (mut r, mut wr) = (0usize, 0usize);
            let mut hit = false;
            while r < n {
                if r + 1 < n && w[r] == a && w[r + 1] == b {
                    hit = true;
                    *delta.entry((a, b)).or_insert(0) -= c;
                    if wr > 0 {
                        let prev = w[wr - 1];
                        *delta.entry((prev, a)).or_insert(0) -= c;
                        *delta.entry((prev, new_id)).or_insert(0) += c;
                    }
                    if r + 2 < n {
                        let next = w[r + 2];
                        *delta.entry((b, next)).or_insert(0) -= c;
                        *delta.entry((new_id, next)).or_insert(0) += c;
                    }
                    w[wr] = new_id;
                    r += 2;
                } else {
                    w[wr] = w[r];
                    r += 1;
                }
                wr += 1;
            }
            if !hit {
                continue;
            }
            wlen[wi as usize] = wr as u32;
            for p in w[..wr].windows(2) {
                if p[0] == new_id || p[1] == new_id {
                    let l = where_.entry((p[0], p[1])).or_default();
                    if l.last() != Some(&wi) {
                        l.push(wi);
                    }
                }
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
            } else if d > 0 && vocab[pair.0 as usize].len() + vocab[pair.1 as usize].len() <= max_len {
                heap.push(entry(&vocab, pair, nc));
            }
        }
        progress.done.store(merges.len() as u64, AtOrd::Relaxed);
    }
    if dbg { eprintln!("merges {:?}", t_start.elapsed()); }
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
