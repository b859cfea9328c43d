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
//! pair is left. Pairs whose merged token would exceed `max_token_length` bytes never merge;
//! nor (when set) pairs whose merged token spans more than `max_words` words (see [`n_words`]).
//!
//! [`train_words`] is the general loop: it starts from any vocabulary and any pre-segmented
//! words (the supertoken stage 2 starts from the stage-1 vocabulary and the stage-1 encoding
//! of each run, `super_runs.rs`), and picks merges by [`Select`]: the most frequent pair, or
//! the pair among the `candidates` most frequent that minimises the unigram code length of
//! the token stream (`Select::Compress`, see [`code_length_delta`]).
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

/// How the next merge is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Select {
    /// The most frequent pair (ties: smallest left bytes, then right bytes).
    Frequency,
    /// Among the `candidates` most frequent pairs (in the order above, each at least
    /// `min_frequency`), the one whose merge gives the smallest unigram code length N*H of the
    /// token stream; a later candidate wins only when it is smaller by more than `EPS_BITS`.
    Compress { candidates: usize },
}

/// Code-length differences closer than this (bits) count as ties (float noise).
pub const EPS_BITS: f64 = 1e-6;

/// Options of the general loop.
pub struct Options {
    pub target: usize,
    pub min_frequency: u64,
    pub max_token_length: Option<usize>,
    /// A merged token may span at most this many words ([`n_words`]).
    pub max_words: Option<usize>,
    pub select: Select,
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
    /// The first 8 bytes of `left` / `right`, big-endian, zero-padded: unequal keys order as the
    /// bytes do, so the byte comparison runs only when the keys are equal ([`prefix_key`]).
    lkey: u64,
    rkey: u64,
    left: Arc<[u8]>,
    right: Arc<[u8]>,
    pair: (u32, u32),
}

/// The first 8 bytes of `b` as a big-endian u64, zero-padded. For byte strings x, y:
/// `prefix_key(x) < prefix_key(y)` implies x < y, and `>` implies x > y (equal keys decide nothing).
#[inline]
pub fn prefix_key(b: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = b.len().min(8);
    k[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(k)
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
            .then_with(|| o.lkey.cmp(&self.lkey))
            .then_with(|| o.left.cmp(&self.left))
            .then_with(|| o.rkey.cmp(&self.rkey))
            .then_with(|| o.right.cmp(&self.right))
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Words of a byte string: its maximal runs of non-whitespace bytes (ASCII whitespace)
/// (" the cat" = 2, "the cat " = 2, "a  b" = 2, "ab" = 1, "  " = 0).
pub fn n_words(b: &[u8]) -> usize {
    let mut n = 0;
    let mut prev_ws = true;
    for &x in b {
        let ws = is_ws(x);
        if !ws && prev_ws {
            n += 1;
        }
        prev_ws = ws;
    }
    n
}

/// `n_words(l ++ r)` without concatenating.
pub fn n_words_pair(l: &[u8], r: &[u8]) -> usize {
    let glued = match (l.last(), r.first()) {
        (Some(&a), Some(&b)) => (!is_ws(a) && !is_ws(b)) as usize,
        _ => 0,
    };
    n_words(l) + n_words(r) - glued
}

#[inline]
fn xlogx(x: u64) -> f64 {
    if x == 0 {
        0.0
    } else {
        let f = x as f64;
        f * f.log2()
    }
}

/// Change of the unigram code length L = N log2 N - sum_x n_x log2 n_x (bits; = N * H of the
/// empirical unigram distribution) when `m` occurrences of (a, b) become one token `new`:
/// N -> N - m, n_a -> n_a - m, n_b -> n_b - m (n_a - 2m when a = b), n_new -> n_new + m
/// (`n_new` > 0 when the merged bytes already are a token).
pub fn code_length_delta(total: u64, na: u64, nb: u64, nnew: u64, m: u64, same: bool) -> f64 {
    let mut d = xlogx(total - m) - xlogx(total);
    if same {
        d -= xlogx(na - 2 * m) - xlogx(na);
    } else {
        d -= xlogx(na - m) - xlogx(na);
        d -= xlogx(nb - m) - xlogx(nb);
    }
    d -= xlogx(nnew + m) - xlogx(nnew);
    d
}

/// Classic entry point: words are the distinct pre-tokens (bytes, count), the start vocabulary
/// the 256 bytes, merges by frequency.
pub fn train<'a, I>(counts: I, cfg: &TrainConfig, progress: &Progress) -> Result<Trained, String>
where
    I: IntoIterator<Item = (&'a [u8], u64)>,
{
    train_select(counts, cfg, Select::Frequency, progress)
}

/// [`train`] with a merge selection rule.
pub fn train_select<'a, I>(counts: I, cfg: &TrainConfig, select: Select, progress: &Progress) -> Result<Trained, String>
where
    I: IntoIterator<Item = (&'a [u8], u64)>,
{
    if cfg.target < 256 {
        return Err(format!("vocab size {} is below the 256 byte tokens", cfg.target));
    }
    let vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut items: Vec<(&[u8], u64)> = counts.into_iter().filter(|(_, c)| *c > 0).collect();
    items.sort_unstable();
    let words = items.into_iter().map(|(b, c)| (b.iter().map(|&x| x as u32).collect::<Vec<u32>>(), c));
    let opts = Options {
        target: cfg.target,
        min_frequency: cfg.min_frequency,
        max_token_length: cfg.max_token_length,
        max_words: None,
        select,
    };
    train_words(vocab, words, &opts, progress)
}

/// The general loop: `vocab` (id -> bytes) is the start vocabulary, `words` the pre-segmented
/// words (ids into `vocab`) with their counts. Returns the whole vocabulary and the merges made
/// here. Unigram counts include words of one symbol (they are part of the token stream).
pub fn train_words<I>(vocab0: Vec<Vec<u8>>, words: I, opts: &Options, progress: &Progress) -> Result<Trained, String>
where
    I: IntoIterator<Item = (Vec<u32>, u64)>,
{
    let t_start = std::time::Instant::now();
    let mut vocab: Vec<Arc<[u8]>> = vocab0.into_iter().map(Arc::from).collect();
    let mut index: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
    for (i, v) in vocab.iter().enumerate() {
        index.entry(v.to_vec()).or_insert(i as u32);
    }
    // Words live in one arena (better locality): word i is syms[start[i]..start[i] + len[i]].
    let mut syms: Vec<u32> = Vec::new();
    let mut start: Vec<usize> = Vec::new();
    let mut wlen: Vec<u32> = Vec::new();
    let mut wcount: Vec<u64> = Vec::new();
    let mut uni: Vec<u64> = vec![0; vocab.len()];
    let mut total: u64 = 0;
    for (w, c) in words {
        if c == 0 {
            continue;
        }
        for &x in &w {
            let x = x as usize;
            if x >= vocab.len() {
                return Err(format!("word symbol {x} is outside the start vocabulary"));
            }
            uni[x] += c;
        }
        total += c * w.len() as u64;
        if w.len() < 2 {
            continue;
        }
        start.push(syms.len());
        wlen.push(w.len() as u32);
        syms.extend_from_slice(&w);
        wcount.push(c);
    }
    let max_len = opts.max_token_length.unwrap_or(usize::MAX);
    let max_words = opts.max_words.unwrap_or(usize::MAX);
    let allowed = |vocab: &Vec<Arc<[u8]>>, pair: (u32, u32)| -> bool {
        let (l, r) = (&vocab[pair.0 as usize], &vocab[pair.1 as usize]);
        l.len() + r.len() <= max_len && (max_words == usize::MAX || n_words_pair(l, r) <= max_words)
    };
    // Tracked pairs: those with a count of at least `min_frequency` when they appear. A tracked pair has
    // its exact count in `pair_counts` and every word holding it in `where_` (until its count is 0). A pair
    // under `min_frequency` is not tracked: it can never be picked, and its count can only rise when a
    // merge re-creates an existing token (a merge that creates a new token only makes pairs holding that
    // token, which are new); such a merge rescans the words for the untracked pairs it raised ([`rescan`]).
    let mf = opts.min_frequency.max(1);
    let mut pair_counts: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    for wi in 0..start.len() {
        for p in syms[start[wi]..start[wi] + wlen[wi] as usize].windows(2) {
            *pair_counts.entry((p[0], p[1])).or_insert(0) += wcount[wi];
        }
    }
    pair_counts.retain(|_, c| *c >= mf);
    let mut where_: FxHashMap<(u32, u32), Vec<u32>> = FxHashMap::default();
    for wi in 0..start.len() {
        for p in syms[start[wi]..start[wi] + wlen[wi] as usize].windows(2) {
            let pair = (p[0], p[1]);
            if pair_counts.contains_key(&pair) {
                let list = where_.entry(pair).or_default();
                if list.last() != Some(&(wi as u32)) {
                    list.push(wi as u32);
                }
            }
        }
    }
    let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(pair_counts.len());
    let entry = |vocab: &Vec<Arc<[u8]>>, pair: (u32, u32), count: u64| {
        let (left, right) = (vocab[pair.0 as usize].clone(), vocab[pair.1 as usize].clone());
        Entry { count, lkey: prefix_key(&left), rkey: prefix_key(&right), left, right, pair }
    };
    // Only pairs of at least `min_frequency` get an entry; one whose count later rises is pushed then
    // (every increase pushes).
    for (&pair, &c) in &pair_counts {
        if allowed(&vocab, pair) {
            heap.push(entry(&vocab, pair, c));
        }
    }
    let mut raised: Vec<(u32, u32)> = Vec::new();
    let dbg = std::env::var_os("TOKBENCH_TRAIN_TIMING").is_some();
    if dbg {
        eprintln!("setup {:?}", t_start.elapsed());
    }
    let n_cand = match opts.select {
        Select::Frequency => 1,
        Select::Compress { candidates } => candidates.max(1),
    };
    let mut merges = Vec::new();
    let mut step = StepOut::default();
    let mut shortlist: Vec<Entry> = Vec::with_capacity(n_cand);
    while vocab.len() < opts.target {
        if progress.cancel.load(AtOrd::Relaxed) {
            return Err("interrupted".into());
        }
        // The `n_cand` most frequent valid pairs, in heap order.
        shortlist.clear();
        while shortlist.len() < n_cand {
            let Some(top) = heap.pop() else { break };
            match pair_counts.get(&top.pair) {
                None => continue,                      // merged or gone
                Some(&c) if c > top.count => continue, // an increase pushed a newer entry
                Some(&c) if c < top.count => {
                    heap.push(Entry { count: c, ..top }); // decreased since: lazy re-push
                    continue;
                }
                Some(_) => {}
            }
            if top.count < opts.min_frequency {
                heap.push(top);
                break;
            }
            shortlist.push(top);
        }
        if shortlist.is_empty() {
            break;
        }
        let pick = if shortlist.len() == 1 {
            0
        } else {
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (i, e) in shortlist.iter().enumerate() {
                let (a, b) = e.pair;
                let m = if a == b {
                    non_overlapping(&where_, &syms, &start, &wlen, &wcount, a)
                } else {
                    e.count
                };
                let mut bytes = e.left.to_vec();
                bytes.extend_from_slice(&e.right);
                let nnew = index.get(&bytes).map_or(0, |&id| uni[id as usize]);
                let d = code_length_delta(total, uni[a as usize], uni[b as usize], nnew, m, a == b);
                if d < best_d - EPS_BITS {
                    best = i;
                    best_d = d;
                }
            }
            best
        };
        let top = shortlist.swap_remove(pick);
        for e in shortlist.drain(..) {
            heap.push(e);
        }
        let (a, b) = top.pair;
        let mut bytes = top.left.to_vec();
        bytes.extend_from_slice(&top.right);
        let recreated = index.contains_key(&bytes);
        let new_id = match index.get(&bytes) {
            Some(&id) => id,
            None => {
                let id = vocab.len() as u32;
                vocab.push(Arc::from(bytes.clone()));
                uni.push(0);
                index.insert(bytes, id);
                id
            }
        };
        merges.push((a, b, new_id, top.count));
        let mut list = where_.remove(&top.pair).unwrap_or_default();
        list.sort_unstable();
        list.dedup();
        let merged = merge_step(&list, &mut syms, &start, &mut wlen, &wcount, (a, b), new_id, &mut step);
        uni[a as usize] -= merged;
        uni[b as usize] -= merged;
        uni[new_id as usize] += merged;
        total -= merged;
        raised.clear();
        for (&pair, &d) in step.delta.iter() {
            if d == 0 {
                continue;
            }
            match pair_counts.get_mut(&pair) {
                Some(cur) => {
                    let nc = (*cur as i64 + d) as u64;
                    *cur = nc;
                    if nc == 0 {
                        pair_counts.remove(&pair);
                        where_.remove(&pair);
                    } else if d > 0 && nc >= mf && allowed(&vocab, pair) {
                        heap.push(entry(&vocab, pair, nc));
                    }
                }
                // Untracked and lowered: stays under min_frequency.
                None if d < 0 => {}
                // Untracked and raised by a merge that re-created a token: its old count is unknown.
                None if recreated => raised.push(pair),
                // A new pair (it holds the new token): d is its count.
                None => {
                    if d as u64 >= mf {
                        pair_counts.insert(pair, d as u64);
                        where_.insert(pair, Vec::new());
                        if allowed(&vocab, pair) {
                            heap.push(entry(&vocab, pair, d as u64));
                        }
                    }
                }
            }
        }
        for &(pair, wi) in &step.touched {
            if let Some(l) = where_.get_mut(&pair) {
                if l.last() != Some(&wi) {
                    l.push(wi);
                }
            }
        }
        if !raised.is_empty() {
            for (pair, count, list) in rescan(&raised, &syms, &start, &wlen, &wcount) {
                if count >= mf {
                    pair_counts.insert(pair, count);
                    where_.insert(pair, list);
                    if allowed(&vocab, pair) {
                        heap.push(entry(&vocab, pair, count));
                    }
                }
            }
        }
        progress.done.store(merges.len() as u64, AtOrd::Relaxed);
    }
    if dbg {
        eprintln!("merges {:?}", t_start.elapsed());
    }
    Ok(Trained { vocab: vocab.iter().map(|v| v.to_vec()).collect(), merges })
}

#[cfg(test)]
static RESCANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts and word lists of `pairs` over all words (for untracked pairs a merge raised).
fn rescan(pairs: &[(u32, u32)], syms: &[u32], start: &[usize], wlen: &[u32], wcount: &[u64]) -> Vec<((u32, u32), u64, Vec<u32>)> {
    #[cfg(test)]
    RESCANS.fetch_add(1, AtOrd::Relaxed);
    let mut found: FxHashMap<(u32, u32), (u64, Vec<u32>)> = pairs.iter().map(|&p| (p, (0, Vec::new()))).collect();
    for wi in 0..start.len() {
        for p in syms[start[wi]..start[wi] + wlen[wi] as usize].windows(2) {
            if let Some((c, list)) = found.get_mut(&(p[0], p[1])) {
                *c += wcount[wi];
                if list.last() != Some(&(wi as u32)) {
                    list.push(wi as u32);
                }
            }
        }
    }
    let mut out: Vec<_> = found.into_iter().map(|(p, (c, l))| (p, c, l)).collect();
    out.sort_unstable_by_key(|x| x.0);
    out
}

/// Below this many words a merge step runs on one thread (a fork costs more than it saves).
pub const PAR_MIN_WORDS: usize = 4096;

/// Merge steps that ran in parallel runs (tests check the parallel path was taken).
#[cfg(test)]
static PAR_STEPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What one merge does to a run of words: pair count changes, occurrences merged (times the
/// word counts) and, in word order, the (pair, word) entries the where-index gets for every
/// pair holding the new token.
#[derive(Default)]
struct StepOut {
    delta: FxHashMap<(u32, u32), i64>,
    merged: u64,
    touched: Vec<((u32, u32), u32)>,
}

impl StepOut {
    fn clear(&mut self) {
        self.delta.clear();
        self.merged = 0;
        self.touched.clear();
    }
}

/// Merge (a, b) -> `new_id` in place in the words `list` (sorted, distinct). `syms` / `wlen`
/// are the arena and lengths from word `wlen_off` on, `syms` starting at arena offset `syms_off`.
#[allow(clippy::too_many_arguments)]
fn merge_words(list: &[u32], syms: &mut [u32], syms_off: usize, start: &[usize], wlen: &mut [u32], wlen_off: usize,
               wcount: &[u64], (a, b): (u32, u32), new_id: u32, out: &mut StepOut) {
    let delta = &mut out.delta;
    for &wi in list {
        let s0 = start[wi as usize] - syms_off;
        let li = wi as usize - wlen_off;
        let w = &mut syms[s0..s0 + wlen[li] as usize];
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
                out.merged += c as u64;
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
        wlen[li] = wr as u32;
        for p in w[..wr].windows(2) {
            if p[0] == new_id || p[1] == new_id {
                out.touched.push(((p[0], p[1]), wi));
            }
        }
    }
}

/// One merge over the words `list` into `out` (cleared first); returns the occurrences merged.
/// With more than one thread in the current rayon pool and at least [`PAR_MIN_WORDS`] words per
/// thread, the words are cut into that many runs of consecutive words, merged in parallel (each
/// run owns its own slice of the arena), and the runs' outputs are added up in word order: the
/// counts, the where-index and so the merges are those of the one-thread loop.
#[allow(clippy::too_many_arguments)]
fn merge_step(list: &[u32], syms: &mut [u32], start: &[usize], wlen: &mut [u32], wcount: &[u64], pair: (u32, u32),
              new_id: u32, out: &mut StepOut) -> u64 {
    use rayon::prelude::*;
    out.clear();
    let k = rayon::current_num_threads().min(list.len() / PAR_MIN_WORDS);
    if k <= 1 {
        merge_words(list, syms, 0, start, wlen, 0, wcount, pair, new_id, out);
        return out.merged;
    }
    #[cfg(test)]
    PAR_STEPS.fetch_add(1, AtOrd::Relaxed);
    // Cut at word list[i * len / k]: words before it are in earlier runs, its arena slice starts there.
    let mut runs = Vec::with_capacity(k);
    let (mut syms_rest, mut wlen_rest) = (syms, wlen);
    let (mut syms_off, mut wlen_off, mut lo) = (0usize, 0usize, 0usize);
    for j in 1..=k {
        let hi = j * list.len() / k;
        let (s_cut, w_cut) = if j == k {
            (syms_rest.len(), wlen_rest.len())
        } else {
            let w = list[hi] as usize;
            (start[w] - syms_off, w - wlen_off)
        };
        let (s_here, s_next) = std::mem::take(&mut syms_rest).split_at_mut(s_cut);
        let (w_here, w_next) = std::mem::take(&mut wlen_rest).split_at_mut(w_cut);
        runs.push((&list[lo..hi], s_here, syms_off, w_here, wlen_off));
        syms_off += s_cut;
        wlen_off += w_cut;
        syms_rest = s_next;
        wlen_rest = w_next;
        lo = hi;
    }
    let parts: Vec<StepOut> = runs
        .into_par_iter()
        .map(|(l, s, so, w, wo)| {
            let mut o = StepOut::default();
            merge_words(l, s, so, start, w, wo, wcount, pair, new_id, &mut o);
            o
        })
        .collect();
    for p in parts {
        out.merged += p.merged;
        for (k, v) in p.delta {
            *out.delta.entry(k).or_insert(0) += v;
        }
        out.touched.extend(p.touched);
    }
    out.merged
}

/// Occurrences of (a, a) a left-to-right merge replaces (runs of k copies give k / 2), times
/// the word counts.
fn non_overlapping(
    where_: &FxHashMap<(u32, u32), Vec<u32>>,
    syms: &[u32],
    start: &[usize],
    wlen: &[u32],
    wcount: &[u64],
    a: u32,
) -> u64 {
    let Some(list) = where_.get(&(a, a)) else { return 0 };
    let mut seen: Vec<u32> = list.clone();
    seen.sort_unstable();
    seen.dedup();
    let mut m = 0u64;
    for wi in seen {
        let w = &syms[start[wi as usize]..start[wi as usize] + wlen[wi as usize] as usize];
        let mut run = 0u64;
        let mut k = 0u64;
        for &x in w {
            if x == a {
                run += 1;
            } else {
                k += run / 2;
                run = 0;
            }
        }
        k += run / 2;
        m += k * wcount[wi as usize];
    }
    m
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

    /// Enough distinct words (with shared pairs) that the early merge steps run in parallel runs.
    fn many_words() -> Vec<(Vec<u8>, u64)> {
        let mut x: u64 = 7;
        let mut out = Vec::new();
        for i in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 2 + (x % 9) as usize;
            let w: Vec<u8> = (0..len).map(|j| b"aabcdeeeist  "[((x >> (j * 4)) % 13) as usize]).collect();
            out.push((w, 1 + (i * 2654435761) % 50));
        }
        out.sort();
        out.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 += b.1;
                true
            } else {
                false
            }
        });
        out
    }

    #[test]
    fn merges_do_not_depend_on_threads() {
        let words = many_words();
        assert!(words.len() > 3 * PAR_MIN_WORDS);
        let cfg = TrainConfig { target: 256 + 400, min_frequency: 2, max_token_length: None };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| train(words.iter().map(|(b, c)| (b.as_slice(), *c)), &cfg, &Progress::default()).unwrap())
        };
        let one = run(1);
        assert_eq!(one.merges.len(), 400);
        let before = PAR_STEPS.load(AtOrd::Relaxed);
        for threads in [2, 3] {
            let t = run(threads);
            assert_eq!(t.merges, one.merges, "{threads} threads");
            assert_eq!(t.vocab, one.vocab);
        }
        assert!(PAR_STEPS.load(AtOrd::Relaxed) > before, "no merge step ran in parallel");
    }

    /// Recount every pair after every merge (the rules of the module docs, no incremental state),
    /// from any start vocabulary and pre-segmented words.
    fn brute_force(vocab0: &[Vec<u8>], words: &[(Vec<u32>, u64)], target: usize, mf: u64) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        let mut vocab: Vec<Vec<u8>> = vocab0.to_vec();
        let mut ws: Vec<(Vec<u32>, u64)> = words.to_vec();
        let mut out = Vec::new();
        while vocab.len() < target && out.len() < 4 * target {
            let mut pc: FxHashMap<(u32, u32), u64> = FxHashMap::default();
            for (w, c) in &ws {
                for p in w.windows(2) {
                    *pc.entry((p[0], p[1])).or_insert(0) += c;
                }
            }
            let best = pc.iter().max_by(|x, y| {
                x.1.cmp(y.1)
                    .then_with(|| vocab[y.0 .0 as usize].cmp(&vocab[x.0 .0 as usize]))
                    .then_with(|| vocab[y.0 .1 as usize].cmp(&vocab[x.0 .1 as usize]))
            });
            let Some((&(a, b), &c)) = best else { break };
            if c < mf {
                break;
            }
            let bytes = [vocab[a as usize].clone(), vocab[b as usize].clone()].concat();
            let id = match vocab.iter().position(|v| *v == bytes) {
                Some(i) => i as u32,
                None => {
                    vocab.push(bytes.clone());
                    (vocab.len() - 1) as u32
                }
            };
            out.push((vocab[a as usize].clone(), vocab[b as usize].clone(), c));
            for (w, _) in ws.iter_mut() {
                let mut o = Vec::with_capacity(w.len());
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                        o.push(id);
                        i += 2;
                    } else {
                        o.push(w[i]);
                        i += 1;
                    }
                }
                *w = o;
            }
        }
        out
    }

    fn merges_bytes(t: &Trained) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        t.merges.iter().map(|&(a, b, _, c)| (t.vocab[a as usize].clone(), t.vocab[b as usize].clone(), c)).collect()
    }

    #[test]
    fn untracked_pairs_raised_by_a_recreated_token_are_rescanned() {
        // Start vocabulary: bytes + "ab" (256) + "bc" (257), as stage 2 of supertoken training starts
        // from stage 1's. Words hold those tokens and the plain bytes, so merging (a, b) re-creates 256 and
        // raises pairs such as (256, c) that were under min_frequency (untracked) before.
        let mut vocab0: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        vocab0.push(b"ab".to_vec());
        vocab0.push(b"bc".to_vec());
        let (a, b, c, d) = (b'a' as u32, b'b' as u32, b'c' as u32, b'd' as u32);
        let mut words: Vec<(Vec<u32>, u64)> = vec![(vec![a, b, c], 1), (vec![256, c], 1), (vec![a, b], 5), (vec![a, 257], 1)];
        let mut x: u64 = 3;
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 2 + (x % 6) as usize;
            let w: Vec<u32> = (0..len).map(|j| [a, b, c, d, 256, 257][((x >> (j * 3 + 7)) % 6) as usize]).collect();
            words.push((w, [1, 1, 1, 2, 3][(x >> 50) as usize % 5]));
        }
        for mf in [1, 2, 3] {
            let before = RESCANS.load(AtOrd::Relaxed);
            let opts = Options { target: 258 + 40, min_frequency: mf, max_token_length: None, max_words: None,
                                 select: Select::Frequency };
            let t = train_words(vocab0.clone(), words.clone(), &opts, &Progress::default()).unwrap();
            assert_eq!(merges_bytes(&t), brute_force(&vocab0, &words, 258 + 40, mf), "min_frequency {mf}");
            if mf > 1 {
                assert!(RESCANS.load(AtOrd::Relaxed) > before, "no rescan (min_frequency {mf})");
            }
        }
    }

    #[test]
    fn untracked_pairs_on_words_without_recreation() {
        // mf 2 on many_words: equal to the brute force too (new pairs under min_frequency dropped).
        let words: Vec<(Vec<u8>, u64)> = many_words().into_iter().take(2000).collect();
        let vocab0: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let ids: Vec<(Vec<u32>, u64)> = words.iter().map(|(w, c)| (w.iter().map(|&b| b as u32).collect(), *c)).collect();
        for mf in [1, 2, 4] {
            let cfg = TrainConfig { target: 256 + 40, min_frequency: mf, max_token_length: None };
            let t = train(words.iter().map(|(b, c)| (b.as_slice(), *c)), &cfg, &Progress::default()).unwrap();
            assert_eq!(merges_bytes(&t), brute_force(&vocab0, &ids, 256 + 40, mf), "min_frequency {mf}");
        }
    }

    #[test]
    fn prefix_keys_order_as_bytes() {
        let xs: [&[u8]; 9] = [b"", b"a", b"a\0", b"ab", b"abcdefgh", b"abcdefghi", b"abcdefgi", b"b", b"\xff"];
        for x in xs {
            for y in xs {
                let (kx, ky) = (prefix_key(x), prefix_key(y));
                if kx != ky {
                    assert_eq!(kx.cmp(&ky), x.cmp(y), "{x:?} {y:?}");
                }
            }
        }
    }

    #[test]
    fn words_of_bytes() {
        assert_eq!(n_words(b" the cat"), 2);
        assert_eq!(n_words(b"the cat "), 2);
        assert_eq!(n_words(b"a  b"), 2);
        assert_eq!(n_words(b"ab"), 1);
        assert_eq!(n_words(b"  "), 0);
        for (l, r) in [(&b" the"[..], &b" cat"[..]), (b"the", b" "), (b" ", b" "), (b"a b", b"c d"), (b"cat ", b"sat"), (b"ca", b"t")] {
            let mut c = l.to_vec();
            c.extend_from_slice(r);
            assert_eq!(n_words_pair(l, r), n_words(&c));
        }
    }

    #[test]
    fn compress_with_one_candidate_is_frequency() {
        let data: Vec<(&[u8], u64)> = vec![(b"hug", 10), (b"pug", 5), (b"pun", 12), (b"bun", 4), (b"hugs", 5), (b"aaaa", 7)];
        let cfg = TrainConfig { target: 256 + 8, min_frequency: 1, max_token_length: None };
        let p = Progress::default();
        let a = train(data.iter().map(|(b, c)| (*b, *c)), &cfg, &p).unwrap();
        let b = train_select(data.iter().map(|(b, c)| (*b, *c)), &cfg, Select::Compress { candidates: 1 }, &p).unwrap();
        assert_eq!(a.merges, b.merges);
    }

    #[test]
    fn delta_matches_recount() {
        // stream a a b a b c: n_a=3, n_b=2, n_c=1, N=6; merge (a, b) twice -> a ab ab c
        let l = |c: &[u64]| {
            let n: u64 = c.iter().sum();
            xlogx(n) - c.iter().map(|&x| xlogx(x)).sum::<f64>()
        };
        let d = code_length_delta(6, 3, 2, 0, 2, false);
        assert!((d - (l(&[1, 0, 1, 2]) - l(&[3, 2, 1]))).abs() < 1e-9);
    }
}
