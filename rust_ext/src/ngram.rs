//! N-gram statistics of token streams with document boundaries.
//!
//! Input everywhere: `tokens` (all documents concatenated) and `offsets`, the document
//! boundaries: `offsets[0] == 0`, non-decreasing, last == `tokens.len()`; document d is
//! `tokens[offsets[d]..offsets[d+1]]`. An n-gram never crosses a boundary (context resets at
//! every document start; there is no padding symbol).
//!
//! - [`ngram_stats`]: for orders 1..=K, the plug-in and Miller–Madow block entropy of the k-gram
//!   distribution and the conditional entropy H(X_k | X_1..X_{k-1}) = H(k-gram) - H(its
//!   (k-1)-prefix), both over the sample of k-grams inside documents, plus counts (k-grams,
//!   distinct k-grams, distinct contexts, singletons).
//! - [`cross_entropy`]: bits per token of held-out text under interpolated Witten–Bell k-gram
//!   models trained on the train stream, for orders 1..=K in one pass.
//!
//! Ids are remapped to dense ranks of the observed types and packed into one u128 key per
//! k-gram (`bits` per token, last token in the low bits), so k-grams sort by context.
use crate::error::{CoreError, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// Statistics of the k-grams of one order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderStats {
    pub order: usize,
    /// k-grams inside documents (the sample size N_k).
    pub n: u64,
    pub distinct: u64,
    /// k-grams seen exactly once.
    pub singletons: u64,
    /// distinct (k-1)-prefixes (1 for order 1: the empty context).
    pub contexts: u64,
    /// prefixes seen exactly once as the prefix of a k-gram.
    pub singleton_contexts: u64,
    /// plug-in entropy of the k-gram distribution, bits.
    pub block_entropy: f64,
    /// Miller–Madow corrected: + (m - 1) / (2 N ln 2), m = distinct k-grams.
    pub block_entropy_mm: f64,
    /// plug-in H(X_k | X_1..X_{k-1}), bits.
    pub conditional_entropy: f64,
    /// Miller–Madow corrected joint minus Miller–Madow corrected prefix entropy.
    pub conditional_entropy_mm: f64,
}

/// Held-out cross-entropy of the order-k Witten–Bell model.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropy {
    pub order: usize,
    pub bits_per_token: f64,
    pub total_bits: f64,
    /// test tokens scored.
    pub n: u64,
    /// test tokens whose id never occurs in the train stream.
    pub unseen: u64,
}

fn check_offsets(tokens: &[u32], offsets: &[u64], what: &str) -> Result<()> {
    if offsets.is_empty() || offsets[0] != 0 {
        return Err(CoreError::new(format!("{what}: offsets must start with 0")));
    }
    if *offsets.last().unwrap() != tokens.len() as u64 {
        return Err(CoreError::new(format!(
            "{what}: last offset {} != number of tokens {}",
            offsets.last().unwrap(),
            tokens.len()
        )));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(CoreError::new(format!(
            "{what}: offsets decrease at index {}",
            i + 1
        )));
    }
    Ok(())
}

/// Dense ranks of the distinct ids of `streams`, and the bits one rank needs.
struct Dense {
    map: FxHashMap<u32, u32>,
    bits: u32,
}

impl Dense {
    fn new(streams: &[&[u32]], max_order: usize) -> Result<Dense> {
        let mut map: FxHashMap<u32, u32> = FxHashMap::default();
        for s in streams {
            for &t in s.iter() {
                let next = map.len() as u32;
                map.entry(t).or_insert(next);
            }
        }
        let types = map.len().max(2) as u64;
        let bits = 64 - (types - 1).leading_zeros();
        if bits as usize * max_order > 128 {
            return Err(CoreError::new(format!(
                "{} distinct ids need {bits} bits each; order {max_order} does not fit 128 bits",
                map.len()
            )));
        }
        Ok(Dense { map, bits })
    }

    fn apply(&self, s: &[u32]) -> Vec<u32> {
        s.iter().map(|t| self.map[t]).collect()
    }
}

/// A packed k-gram: u64 when `bits * k <= 64` (sorts about twice as fast), else u128.
trait PackedKey: Copy + Ord + Send + Sync {
    const ZERO: Self;
    fn push(self, t: u32, bits: u32) -> Self;
    fn wide(self) -> u128;
}

impl PackedKey for u64 {
    const ZERO: Self = 0;
    fn push(self, t: u32, bits: u32) -> Self {
        (self << bits) | t as u64
    }
    fn wide(self) -> u128 {
        self as u128
    }
}

impl PackedKey for u128 {
    const ZERO: Self = 0;
    fn push(self, t: u32, bits: u32) -> Self {
        (self << bits) | t as u128
    }
    fn wide(self) -> u128 {
        self
    }
}

/// All k-grams inside documents as packed keys, sorted.
fn sorted_kgrams<K: PackedKey>(dense: &[u32], offsets: &[u64], k: usize, bits: u32) -> Vec<K> {
    let mut keys = Vec::new();
    for w in offsets.windows(2) {
        let (s, e) = (w[0] as usize, w[1] as usize);
        if e - s < k {
            continue;
        }
        for i in s..=e - k {
            let mut key = K::ZERO;
            for &t in &dense[i..i + k] {
                key = key.push(t, bits);
            }
            keys.push(key);
        }
    }
    keys.par_sort_unstable();
    keys
}

/// Visit the runs of equal keys of the sorted k-grams of order k: f(key as u128, count).
fn for_each_kgram(dense: &[u32], offsets: &[u64], k: usize, bits: u32, f: impl FnMut(u128, u64)) {
    if bits as usize * k <= 64 {
        runs(&sorted_kgrams::<u64>(dense, offsets, k, bits), f)
    } else {
        runs(&sorted_kgrams::<u128>(dense, offsets, k, bits), f)
    }
}

/// Visit the runs of a sorted key array: f(key, count).
fn runs<K: PackedKey>(sorted: &[K], mut f: impl FnMut(u128, u64)) {
    let mut i = 0;
    while i < sorted.len() {
        let k = sorted[i];
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == k {
            j += 1;
        }
        f(k.wide(), (j - i) as u64);
        i = j;
    }
}

fn xlogx(c: u64) -> f64 {
    let c = c as f64;
    c * c.log2()
}

/// Statistics of one order from the runs of equal k-grams, visited in sorted order (so the runs
/// sharing a (k-1)-gram context are adjacent): counts, plug-in and Miller–Madow entropies.
struct OrderAcc {
    k: usize,
    bits: u32,
    n: u64,
    distinct: u64,
    singletons: u64,
    sum_joint: f64,
    contexts: u64,
    singleton_contexts: u64,
    sum_ctx: f64,
    cur_ctx: Option<u128>,
    cur_count: u64,
}

impl OrderAcc {
    fn new(k: usize, bits: u32) -> Self {
        OrderAcc {
            k,
            bits,
            n: 0,
            distinct: 0,
            singletons: 0,
            sum_joint: 0.0,
            contexts: 0,
            singleton_contexts: 0,
            sum_ctx: 0.0,
            cur_ctx: None,
            cur_count: 0,
        }
    }

    /// One distinct k-gram `key` seen `c` times.
    fn add(&mut self, key: u128, c: u64) {
        self.n += c;
        self.distinct += 1;
        if c == 1 {
            self.singletons += 1;
        }
        self.sum_joint += xlogx(c);
        let ctx = if self.k == 1 { 0 } else { key >> self.bits };
        if self.cur_ctx != Some(ctx) {
            self.close_context();
            self.cur_ctx = Some(ctx);
            self.cur_count = 0;
        }
        self.cur_count += c;
    }

    fn close_context(&mut self) {
        if self.cur_ctx.is_some() {
            self.contexts += 1;
            self.singleton_contexts += (self.cur_count == 1) as u64;
            self.sum_ctx += xlogx(self.cur_count);
        }
    }

    fn finish(mut self) -> OrderStats {
        self.close_context();
        let (n, distinct, contexts) = (self.n, self.distinct, self.contexts);
        let ln2 = std::f64::consts::LN_2;
        let (block, ctx_h, block_mm, ctx_mm) = if n == 0 {
            (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
        } else {
            let nf = n as f64;
            let logn = nf.log2();
            let block = logn - self.sum_joint / nf;
            let ctx_h = logn - self.sum_ctx / nf;
            (
                block,
                ctx_h,
                block + (distinct as f64 - 1.0) / (2.0 * nf * ln2),
                ctx_h + (contexts as f64 - 1.0) / (2.0 * nf * ln2),
            )
        };
        OrderStats {
            order: self.k,
            n,
            distinct,
            singletons: self.singletons,
            contexts,
            singleton_contexts: self.singleton_contexts,
            block_entropy: block,
            block_entropy_mm: block_mm,
            conditional_entropy: block - ctx_h,
            conditional_entropy_mm: block_mm - ctx_mm,
        }
    }
}

/// Plug-in and Miller–Madow statistics of orders 1..=max_order (see module docs).
pub fn ngram_stats(tokens: &[u32], offsets: &[u64], max_order: usize) -> Result<Vec<OrderStats>> {
    check_offsets(tokens, offsets, "ngram_stats")?;
    if max_order == 0 {
        return Err(CoreError::new("max_order must be >= 1"));
    }
    let dense_map = Dense::new(&[tokens], max_order)?;
    let dense = dense_map.apply(tokens);
    let bits = dense_map.bits;
    let mut out = Vec::with_capacity(max_order);
    for k in 1..=max_order {
        let mut acc = OrderAcc::new(k, bits);
        for_each_kgram(&dense, offsets, k, bits, |key, c| acc.add(key, c));
        out.push(acc.finish());
    }
    Ok(out)
}

/// Sorted distinct keys with a value each; looked up by binary search (cheaper to build than a
/// hash map for the millions of k-grams of a corpus, and lookups are only done on held-out text).
struct SortedTable<V> {
    keys: Vec<u128>,
    values: Vec<V>,
}

impl<V: Copy> SortedTable<V> {
    fn get(&self, key: u128) -> Option<V> {
        self.keys.binary_search(&key).ok().map(|i| self.values[i])
    }
}

/// Interpolated Witten–Bell k-gram model over dense ids.
struct WittenBell {
    bits: u32,
    /// counts[j-1]: j-gram -> count, j = 1..=K.
    counts: Vec<SortedTable<u32>>,
    /// contexts[j-1]: (j-1)-gram -> (times it is followed by a token, distinct followers), j >= 2.
    contexts: Vec<SortedTable<(u32, u32)>>,
    n1: f64,
    t1: f64,
    vocab_size: f64,
}

impl WittenBell {
    fn train(dense: &[u32], offsets: &[u64], max_order: usize, bits: u32, vocab_size: f64) -> Self {
        let mut counts = Vec::with_capacity(max_order);
        let mut contexts = Vec::with_capacity(max_order);
        let (mut n1, mut t1) = (0f64, 0f64);
        for k in 1..=max_order {
            let mut cm = SortedTable {
                keys: Vec::new(),
                values: Vec::new(),
            };
            let mut xm: SortedTable<(u32, u32)> = SortedTable {
                keys: Vec::new(),
                values: Vec::new(),
            };
            for_each_kgram(dense, offsets, k, bits, |key, c| {
                cm.keys.push(key);
                cm.values.push(c as u32);
                if k == 1 {
                    n1 += c as f64;
                    t1 += 1.0;
                } else {
                    // keys are sorted, so equal contexts are adjacent
                    let ctx = key >> bits;
                    if xm.keys.last() == Some(&ctx) {
                        let v = xm.values.last_mut().unwrap();
                        v.0 += c as u32;
                        v.1 += 1;
                    } else {
                        xm.keys.push(ctx);
                        xm.values.push((c as u32, 1));
                    }
                }
            });
            counts.push(cm);
            contexts.push(xm);
        }
        WittenBell {
            bits,
            counts,
            contexts,
            n1,
            t1,
            vocab_size,
        }
    }

    /// Adds log2 p of each order's model for every token of one document to `sums`.
    fn score_doc(&self, doc: &[u32], sums: &mut [f64]) {
        let k_max = sums.len();
        let uniform = 1.0 / self.vocab_size;
        for i in 0..doc.len() {
            let w = doc[i] as u128;
            let c1 = self.counts[0].get(w).unwrap_or(0) as f64;
            let mut p = (c1 + self.t1 * uniform) / (self.n1 + self.t1);
            sums[0] += p.log2();
            let mut ctx: u128 = 0;
            for j in 2..=k_max {
                if j - 1 <= i {
                    // context = doc[i-j+1..i]; extend the previous context by one older token
                    let older = doc[i - (j - 1)] as u128;
                    ctx |= older << (self.bits * (j as u32 - 2));
                    if let Some((ch, th)) = self.contexts[j - 1].get(ctx) {
                        let key = (ctx << self.bits) | w;
                        let chw = self.counts[j - 1].get(key).unwrap_or(0) as f64;
                        let (ch, th) = (ch as f64, th as f64);
                        p = (chw + th * p) / (ch + th);
                    }
                }
                sums[j - 1] += p.log2();
            }
        }
    }
}

/// Held-out bits per token of interpolated Witten–Bell models of orders 1..=max_order trained on
/// `train` and scored on `test` (both with document offsets). The order-1 model interpolates the
/// unigram counts with the uniform distribution over `vocab_size` ids; order j interpolates the
/// j-gram counts with order j-1: p(w|h) = (c(h,w) + T(h) p'(w|h')) / (c(h) + T(h)), T(h) = distinct
/// followers of h; an unseen context backs off unchanged. Early tokens of a document use the
/// context they have.
pub fn cross_entropy(
    train: &[u32],
    train_offsets: &[u64],
    test: &[u32],
    test_offsets: &[u64],
    max_order: usize,
    vocab_size: u64,
) -> Result<Vec<CrossEntropy>> {
    check_offsets(train, train_offsets, "cross_entropy train")?;
    check_offsets(test, test_offsets, "cross_entropy test")?;
    if max_order == 0 {
        return Err(CoreError::new("max_order must be >= 1"));
    }
    if train.is_empty() {
        return Err(CoreError::new("cross_entropy: the train stream is empty"));
    }
    let dense_map = Dense::new(&[train, test], max_order)?;
    if (dense_map.map.len() as u64) > vocab_size {
        return Err(CoreError::new(format!(
            "{} distinct ids but vocab_size {vocab_size}",
            dense_map.map.len()
        )));
    }
    let dtrain = dense_map.apply(train);
    let dtest = dense_map.apply(test);
    let model = WittenBell::train(
        &dtrain,
        train_offsets,
        max_order,
        dense_map.bits,
        vocab_size as f64,
    );
    let docs: Vec<(usize, usize)> = test_offsets
        .windows(2)
        .map(|w| (w[0] as usize, w[1] as usize))
        .collect();
    let sums = docs
        .par_iter()
        .fold(
            || vec![0f64; max_order],
            |mut acc, &(s, e)| {
                model.score_doc(&dtest[s..e], &mut acc);
                acc
            },
        )
        .reduce(
            || vec![0f64; max_order],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let n = test.len() as u64;
    let unseen = dtest
        .iter()
        .filter(|&&t| model.counts[0].get(t as u128).is_none())
        .count() as u64;
    Ok(sums
        .iter()
        .enumerate()
        .map(|(i, &s)| CrossEntropy {
            order: i + 1,
            bits_per_token: if n == 0 { f64::NAN } else { -s / n as f64 },
            total_bits: -s,
            n,
            unseen,
        })
        .collect())
}

/// Dense ranks by first appearance (as [`Dense`]) through a flat table when ids are small, which
/// is much cheaper than a hash map on tens of millions of tokens.
fn dense_flat(tokens: &[u32], max_order: usize) -> Result<(Vec<u32>, u32, usize)> {
    let max_id = tokens.iter().copied().max().unwrap_or(0) as usize;
    if max_id >= 1 << 26 {
        let d = Dense::new(&[tokens], max_order)?;
        let n = d.map.len();
        return Ok((d.apply(tokens), d.bits, n));
    }
    let mut rank = vec![u32::MAX; max_id + 1];
    let mut next = 0u32;
    let dense: Vec<u32> = tokens
        .iter()
        .map(|&t| {
            let r = &mut rank[t as usize];
            if *r == u32::MAX {
                *r = next;
                next += 1;
            }
            *r
        })
        .collect();
    let types = (next as u64).max(2);
    let bits = 64 - (types - 1).leading_zeros();
    if bits as usize * max_order > 128 {
        return Err(CoreError::new(format!(
            "{next} distinct ids need {bits} bits each; order {max_order} does not fit 128 bits"
        )));
    }
    Ok((dense, bits, next as usize))
}

/// Everything of one corpus in one pass per order: [`ngram_stats`] of the whole stream and, when
/// `heldout`, [`cross_entropy`] of the held-out parts under Witten–Bell models trained on the rest.
///
/// `cuts[d]` splits document d: `tokens[offsets[d]..cuts[d]]` is train, `tokens[cuts[d]..offsets[d+1]]`
/// held out (a whole document is held out with `cuts[d] == offsets[d]`, kept with
/// `cuts[d] == offsets[d+1]`); the held-out parts are scored as documents of their own.
///
/// Same values as the two functions called on the whole stream and on the split streams: the
/// k-grams of the whole stream are the train k-grams, the held-out k-grams and those that span a
/// cut, so the three sorted arrays are merged instead of sorting the stream again (plug-in values
/// are bit-identical: same dense ranks, same key order); the Witten–Bell counts of every held-out
/// position are found by merging its sorted k-grams with the sorted train k-grams instead of binary
/// searches (same arithmetic per token; the sum is compensated, so it is the exact sum to within
/// rounding, where the parallel sum of [`cross_entropy`] varies in its last bits from run to run).
pub fn ngram_metrics(
    tokens: &[u32],
    offsets: &[u64],
    cuts: &[u64],
    max_order: usize,
    vocab_size: u64,
    heldout: bool,
) -> Result<(Vec<OrderStats>, Option<Vec<CrossEntropy>>)> {
    check_offsets(tokens, offsets, "ngram_metrics")?;
    if max_order == 0 {
        return Err(CoreError::new("max_order must be >= 1"));
    }
    if cuts.len() + 1 != offsets.len() {
        return Err(CoreError::new(format!(
            "ngram_metrics: {} cuts for {} documents",
            cuts.len(),
            offsets.len() - 1
        )));
    }
    for (d, w) in offsets.windows(2).enumerate() {
        if cuts[d] < w[0] || cuts[d] > w[1] {
            return Err(CoreError::new(format!(
                "ngram_metrics: cut {} of document {d} is outside {}..{}",
                cuts[d], w[0], w[1]
            )));
        }
    }
    let (dense, bits, types) = dense_flat(tokens, max_order)?;
    if heldout && types as u64 > vocab_size {
        return Err(CoreError::new(format!(
            "{types} distinct ids but vocab_size {vocab_size}"
        )));
    }
    // spans: train (s, cut), test (cut, e); test positions are numbered along the test stream
    let docs: Vec<(usize, usize, usize)> = offsets
        .windows(2)
        .zip(cuts)
        .map(|(w, &c)| (w[0] as usize, c as usize, w[1] as usize))
        .collect();
    let mut test_start = Vec::with_capacity(docs.len());
    let mut n_test = 0usize;
    let mut n_train = 0usize;
    for &(s, c, e) in &docs {
        test_start.push(n_test);
        n_test += e - c;
        n_train += c - s;
    }
    let score = heldout && n_train > 0;
    let mut model = Scoring::new(n_test, max_order);
    let mut out = Vec::with_capacity(max_order);
    for k in 1..=max_order {
        let st = if bits as usize * k <= 64 {
            order_pass::<u64>(&dense, &docs, &test_start, k, bits, score, &mut model)
        } else {
            order_pass::<u128>(&dense, &docs, &test_start, k, bits, score, &mut model)
        };
        out.push(st);
    }
    if !score {
        return Ok((out, None));
    }
    // score every held-out document, in order
    let uniform = 1.0 / vocab_size as f64;
    let (n1, t1) = (model.n1, model.t1);
    // compensated (Neumaier) sums: the total is the exact sum of the per-token terms to within
    // rounding, whatever the number of held-out tokens
    let mut sums = vec![0f64; max_order];
    let mut comp = vec![0f64; max_order];
    let add = |sums: &mut [f64], comp: &mut [f64], j: usize, x: f64| {
        let t = sums[j] + x;
        if sums[j].abs() >= x.abs() {
            comp[j] += (sums[j] - t) + x;
        } else {
            comp[j] += (x - t) + sums[j];
        }
        sums[j] = t;
    };
    let mut unseen = 0u64;
    for (d, &(_, c, e)) in docs.iter().enumerate() {
        let base = test_start[d];
        for i in 0..e - c {
            let pos = base + i;
            let w = dense[c + i] as usize;
            let c1 = model.unigram[w];
            unseen += (c1 == 0) as u64;
            let mut p = (c1 as f64 + t1 * uniform) / (n1 + t1);
            add(&mut sums, &mut comp, 0, p.log2());
            for j in 2..=max_order {
                if j - 1 <= i {
                    let th = model.th[j - 1][pos];
                    if th > 0 {
                        let chw = model.chw[j - 1][pos] as f64;
                        let (ch, th) = (model.ch[j - 1][pos] as f64, th as f64);
                        p = (chw + th * p) / (ch + th);
                    }
                }
                add(&mut sums, &mut comp, j - 1, p.log2());
            }
        }
    }
    for (s, c) in sums.iter_mut().zip(&comp) {
        *s += c;
    }
    let n = n_test as u64;
    let xent = sums
        .iter()
        .enumerate()
        .map(|(i, &s)| CrossEntropy {
            order: i + 1,
            bits_per_token: if n == 0 { f64::NAN } else { -s / n as f64 },
            total_bits: -s,
            n,
            unseen,
        })
        .collect();
    Ok((out, Some(xent)))
}

/// What the Witten–Bell scoring needs per held-out position and order, filled by [`order_pass`].
struct Scoring {
    /// train count of each dense id (order 1); train tokens; distinct train types
    unigram: Vec<u32>,
    n_test: usize,
    n1: f64,
    t1: f64,
    /// per order j (index j-1), per held-out position: c(h, w), c(h), T(h) (T = 0: h unseen)
    chw: Vec<Vec<u32>>,
    ch: Vec<Vec<u32>>,
    th: Vec<Vec<u32>>,
}

impl Scoring {
    fn new(n_test: usize, max_order: usize) -> Self {
        Scoring {
            unigram: Vec::new(),
            n_test,
            n1: 0.0,
            t1: 0.0,
            chw: vec![Vec::new(); max_order],
            ch: vec![Vec::new(); max_order],
            th: vec![Vec::new(); max_order],
        }
    }
}

fn pack<K: PackedKey>(dense: &[u32], i: usize, k: usize, bits: u32) -> K {
    let mut key = K::ZERO;
    for &t in &dense[i..i + k] {
        key = key.push(t, bits);
    }
    key
}

/// One order: the statistics of all k-grams (train + held-out + spanning a cut, merged) and, when
/// `score`, the train counts each held-out position needs.
fn order_pass<K: PackedKey>(
    dense: &[u32],
    docs: &[(usize, usize, usize)],
    test_start: &[usize],
    k: usize,
    bits: u32,
    score: bool,
    model: &mut Scoring,
) -> OrderStats {
    let mut train: Vec<K> = Vec::new();
    let mut test: Vec<(K, u32)> = Vec::new();
    let mut cross: Vec<K> = Vec::new();
    for (d, &(s, c, e)) in docs.iter().enumerate() {
        if c - s >= k {
            for i in s..=c - k {
                train.push(pack(dense, i, k, bits));
            }
        }
        if e - c >= k {
            for i in c..=e - k {
                // numbered by the held-out position of the k-gram's last token (held-out positions
                // count from test_start[d], which is usually below c: no subtraction may go first)
                test.push((pack(dense, i, k, bits), (test_start[d] + (i - c) + k - 1) as u32));
            }
        }
        // k-grams that start in the train part and end in the held-out part
        if c > s && e > c && k >= 2 {
            let first = c.saturating_sub(k - 1).max(s);
            for i in first..c {
                if i + k <= e {
                    cross.push(pack(dense, i, k, bits));
                }
            }
        }
    }
    train.par_sort_unstable();
    test.par_sort_unstable();
    cross.sort_unstable();

    // statistics over the merge of the three sorted arrays (runs of equal keys)
    let mut acc = OrderAcc::new(k, bits);
    {
        let (mut a, mut b, mut x) = (0usize, 0usize, 0usize);
        loop {
            let mut key: Option<K> = None;
            if a < train.len() {
                key = Some(train[a]);
            }
            if b < test.len() && key.map_or(true, |kk| test[b].0 < kk) {
                key = Some(test[b].0);
            }
            if x < cross.len() && key.map_or(true, |kk| cross[x] < kk) {
                key = Some(cross[x]);
            }
            let Some(key) = key else { break };
            let mut cnt = 0u64;
            while a < train.len() && train[a] == key {
                a += 1;
                cnt += 1;
            }
            while b < test.len() && test[b].0 == key {
                b += 1;
                cnt += 1;
            }
            while x < cross.len() && cross[x] == key {
                x += 1;
                cnt += 1;
            }
            acc.add(key.wide(), cnt);
        }
    }
    let stats = acc.finish();
    if !score {
        return stats;
    }

    // Witten–Bell counts of the train k-grams, joined with the sorted held-out k-grams
    if k == 1 {
        let types = dense.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut uni = vec![0u32; types];
        let mut i = 0;
        while i < train.len() {
            let key = train[i];
            let mut j = i + 1;
            while j < train.len() && train[j] == key {
                j += 1;
            }
            uni[key.wide() as usize] = (j - i) as u32;
            model.n1 += (j - i) as f64;
            model.t1 += 1.0;
            i = j;
        }
        model.unigram = uni;
        return stats;
    }
    let n_test = model.n_test;
    let mut chw = vec![0u32; n_test];
    let mut ch = vec![0u32; n_test];
    let mut th = vec![0u32; n_test];
    // two cursors over the sorted train k-grams, both moving forward only: one by k-gram, one by
    // context (sorted k-grams are sorted by context too)
    let mut a = 0usize; // k-gram cursor
    let mut last: Option<(K, u32)> = None;
    let mut g = 0usize; // start of the current context group in `train`
    let mut g_ctx: Option<u128> = None;
    let (mut g_c, mut g_t) = (0u32, 0u32);
    for &(key, pos) in &test {
        // c(h, w)
        let c = match last {
            Some((kk, c)) if kk == key => c,
            _ => {
                while a < train.len() && train[a] < key {
                    a += 1;
                }
                let mut j = a;
                while j < train.len() && train[j] == key {
                    j += 1;
                }
                let c = (j - a) as u32;
                a = j;
                last = Some((key, c));
                c
            }
        };
        // c(h), T(h)
        let ctx = key.wide() >> bits;
        if g_ctx != Some(ctx) {
            // the first train k-gram whose context is >= ctx
            while g < train.len() && (train[g].wide() >> bits) < ctx {
                g += 1;
            }
            let (mut cc, mut tt) = (0u32, 0u32);
            let mut e = g;
            while e < train.len() && (train[e].wide() >> bits) == ctx {
                let kk = train[e];
                let mut f = e + 1;
                while f < train.len() && train[f] == kk {
                    f += 1;
                }
                cc += (f - e) as u32;
                tt += 1;
                e = f;
            }
            g_ctx = Some(ctx);
            g_c = cc;
            g_t = tt;
        }
        let p = pos as usize;
        chw[p] = c;
        ch[p] = g_c;
        th[p] = g_t;
    }
    model.chw[k - 1] = chw;
    model.ch[k - 1] = ch;
    model.th[k - 1] = th;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entropy(counts: &[f64]) -> f64 {
        let n: f64 = counts.iter().sum();
        counts
            .iter()
            .filter(|&&c| c > 0.0)
            .map(|&c| -(c / n) * (c / n).log2())
            .sum()
    }

    #[test]
    fn unigram_entropy_and_counts() {
        let t = [1u32, 1, 2, 3];
        let s = ngram_stats(&t, &[0, 4], 1).unwrap();
        assert_eq!(s[0].n, 4);
        assert_eq!(s[0].distinct, 3);
        assert_eq!(s[0].singletons, 2);
        assert!((s[0].block_entropy - 1.5).abs() < 1e-12);
        assert!((s[0].conditional_entropy - 1.5).abs() < 1e-12);
        let mm = 1.5 + 2.0 / (8.0 * std::f64::consts::LN_2);
        assert!((s[0].block_entropy_mm - mm).abs() < 1e-12);
    }

    #[test]
    fn bigrams_reset_at_document_boundaries() {
        // docs: [5 6 5 6] [6 5] ; bigrams: 56 65 56 | 65
        let t = [5u32, 6, 5, 6, 6, 5];
        let s = ngram_stats(&t, &[0, 4, 6], 3).unwrap();
        assert_eq!(s[1].n, 4);
        assert_eq!(s[1].distinct, 2);
        assert_eq!(s[1].contexts, 2);
        assert!((s[1].block_entropy - 1.0).abs() < 1e-12);
        // each context determines the next token
        assert!(s[1].conditional_entropy.abs() < 1e-12);
        // trigrams: 565 656 | none
        assert_eq!(s[2].n, 2);
        assert_eq!(s[2].singleton_contexts, 2);
    }

    #[test]
    fn conditional_matches_definition() {
        let t: Vec<u32> = (0..500u32).map(|i| (i * 7 + i / 3) % 11).collect();
        let s = ngram_stats(&t, &[0, 200, 500], 2).unwrap();
        let mut pairs: FxHashMap<(u32, u32), f64> = FxHashMap::default();
        let mut ctx: FxHashMap<u32, f64> = FxHashMap::default();
        for (s0, e0) in [(0usize, 200usize), (200, 500)] {
            for i in s0..e0 - 1 {
                *pairs.entry((t[i], t[i + 1])).or_default() += 1.0;
                *ctx.entry(t[i]).or_default() += 1.0;
            }
        }
        let hj = entropy(&pairs.values().copied().collect::<Vec<_>>());
        let hc = entropy(&ctx.values().copied().collect::<Vec<_>>());
        assert!((s[1].block_entropy - hj).abs() < 1e-9);
        assert!((s[1].conditional_entropy - (hj - hc)).abs() < 1e-9);
    }

    #[test]
    fn u64_and_u128_keys_agree_with_brute_force() {
        // 5000 types need 13 bits: orders 1..4 pack into u64, order 5 into u128
        let t: Vec<u32> = (0..40_000u32).map(|i| (i * 7919 + i / 5) % 5000).collect();
        let offsets = [0u64, 15_000, 15_003, 40_000];
        let s = ngram_stats(&t, &offsets, 5).unwrap();
        for k in 1..=5usize {
            let mut grams: FxHashMap<Vec<u32>, f64> = FxHashMap::default();
            let mut ctx: FxHashMap<Vec<u32>, f64> = FxHashMap::default();
            for w in offsets.windows(2) {
                let (a, b) = (w[0] as usize, w[1] as usize);
                if b - a < k {
                    continue;
                }
                for i in a..=b - k {
                    *grams.entry(t[i..i + k].to_vec()).or_default() += 1.0;
                    *ctx.entry(t[i..i + k - 1].to_vec()).or_default() += 1.0;
                }
            }
            let hj = entropy(&grams.values().copied().collect::<Vec<_>>());
            let hc = entropy(&ctx.values().copied().collect::<Vec<_>>());
            assert_eq!(s[k - 1].distinct, grams.len() as u64);
            assert_eq!(s[k - 1].contexts, ctx.len() as u64);
            assert!((s[k - 1].block_entropy - hj).abs() < 1e-9);
            assert!((s[k - 1].conditional_entropy - (hj - hc)).abs() < 1e-9);
        }
    }

    #[test]
    fn empty_and_bad_offsets() {
        let s = ngram_stats(&[], &[0], 2).unwrap();
        assert_eq!(s[0].n, 0);
        assert!(s[0].block_entropy.is_nan());
        assert!(ngram_stats(&[1, 2], &[0, 1], 1).is_err());
        assert!(ngram_stats(&[1, 2], &[1, 2], 1).is_err());
        assert!(ngram_stats(&[1, 2], &[0, 2], 0).is_err());
    }

    #[test]
    fn large_ids_are_remapped() {
        let t = [u32::MAX, 7, u32::MAX, 7];
        let s = ngram_stats(&t, &[0, 4], 5).unwrap();
        assert_eq!(s[1].distinct, 2);
        assert_eq!(s[4].n, 0);
    }

    #[test]
    fn witten_bell_unigram_closed_form() {
        // train: a a b ; V = 4 ; test: a c
        let r = cross_entropy(&[0, 0, 1], &[0, 3], &[0, 2], &[0, 2], 2, 4).unwrap();
        let pa: f64 = (2.0 + 2.0 * 0.25) / (3.0 + 2.0);
        let pc: f64 = (0.0 + 2.0 * 0.25) / (3.0 + 2.0);
        let want = -(pa.log2() + pc.log2()) / 2.0;
        assert!((r[0].bits_per_token - want).abs() < 1e-12);
        assert_eq!(r[0].unseen, 1);
        // bigram: context 'a' seen twice as a prefix (a->a, a->b), T=2; c(a,c)=0
        let pc2 = (0.0 + 2.0 * pc) / (2.0 + 2.0);
        let want2 = -(pa.log2() + pc2.log2()) / 2.0;
        assert!((r[1].bits_per_token - want2).abs() < 1e-12);
    }

    #[test]
    fn witten_bell_probabilities_sum_to_one() {
        let train: Vec<u32> = (0..300u32).map(|i| (i * i + 3 * i) % 7).collect();
        let v = 9u64;
        // score every possible next token after a fixed context; sum of p must be 1
        for order in 1..=3usize {
            let mut total = 0.0;
            for w in 0..v as u32 {
                let test = [3u32, 5, w];
                let full = cross_entropy(&train, &[0, 300], &test, &[0, 3], order, v).unwrap();
                let ctx = cross_entropy(&train, &[0, 300], &test[..2], &[0, 2], order, v).unwrap();
                let bits = full[order - 1].total_bits - ctx[order - 1].total_bits;
                total += (-bits).exp2();
            }
            assert!((total - 1.0).abs() < 1e-9, "order {order}: {total}");
        }
    }

    /// ngram_metrics against the two separate functions, for both kinds of split and both key widths.
    #[test]
    fn ngram_metrics_equals_stats_plus_cross_entropy() {
        for &(types, n_docs, whole_docs) in &[
            (50u32, 30usize, true),
            (50, 30, false),
            (5000, 12, false),
            (5000, 40, true),
        ] {
            let mut x = 12345u64;
            let mut next = || {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u32
            };
            let mut tokens = Vec::new();
            let mut offsets = vec![0u64];
            for d in 0..n_docs {
                let len = if d == 3 {
                    0
                } else if d == 4 {
                    2
                } else {
                    50 + (next() % 400) as usize
                };
                for _ in 0..len {
                    // skewed ids, with large gaps between them
                    let r = next() % types;
                    tokens.push((r * r / types) * 7 + 3);
                }
                offsets.push(tokens.len() as u64);
            }
            let mut cuts = Vec::new();
            let (mut tr, mut tro, mut te, mut teo) =
                (Vec::new(), vec![0u64], Vec::new(), vec![0u64]);
            for d in 0..n_docs {
                let (s, e) = (offsets[d] as usize, offsets[d + 1] as usize);
                let c = if whole_docs {
                    if d % 10 == 9 {
                        s
                    } else {
                        e
                    }
                } else {
                    s + ((e - s) as f64 * 0.9).round() as usize
                };
                cuts.push(c as u64);
                tr.extend_from_slice(&tokens[s..c]);
                tro.push(tr.len() as u64);
                te.extend_from_slice(&tokens[c..e]);
                teo.push(te.len() as u64);
            }
            let v = types as u64 * 7 + 10;
            let (stats, xent) = ngram_metrics(&tokens, &offsets, &cuts, 5, v, true).unwrap();
            assert_eq!(stats, ngram_stats(&tokens, &offsets, 5).unwrap());
            let want = cross_entropy(&tr, &tro, &te, &teo, 5, v).unwrap();
            let got = xent.unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert_eq!((a.order, a.n, a.unseen), (b.order, b.n, b.unseen));
                assert!(
                    (a.bits_per_token - b.bits_per_token).abs() < 1e-12 * b.bits_per_token.abs()
                );
            }
            let (stats2, none) = ngram_metrics(&tokens, &offsets, &cuts, 5, v, false).unwrap();
            assert_eq!(stats2, stats);
            assert!(none.is_none());
        }
        assert!(ngram_metrics(&[1, 2], &[0, 2], &[3], 2, 10, true).is_err());
        assert!(ngram_metrics(&[1, 2], &[0, 2], &[], 2, 10, true).is_err());
    }
}
