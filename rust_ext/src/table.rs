//! Hash-partitioned count tables as compact bytes: what map tasks ship and reducers merge.
//!
//! A count table maps byte-string keys (pre-tokens, runs, packed n-grams) to 64-bit counts. A map
//! task cuts its table into `partitions` blobs by a fixed hash of the key (FNV-1a 64, the same in
//! every process and on every machine, unlike Python's salted `hash()`); reducer p merges blob p
//! of every map task, so no process ever holds more than its partitions. Partitions are disjoint:
//! the final table is the concatenation of the reduced partitions.
//!
//! Blob layout (little-endian): `TBCT` | version u8 (1) | partition u32 | partitions u32 |
//! keys u64 | total u64 (sum of counts) | `keys` entries, sorted by key bytes, each
//! varint(key length) key varint(count) | FNV-1a 64 of everything before it, u64.
//! Sorted entries make the merge a k-way merge of sorted runs (no hash map in the reducer).
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub const MAGIC: [u8; 4] = *b"TBCT";
pub const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 4 + 4 + 8 + 8;

/// FNV-1a 64 of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition (0..partitions) a key belongs to.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (fnv1a(key) % partitions.max(1) as u64) as u32
}

/// What a blob's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub partition: u32,
    pub partitions: u32,
    pub keys: u64,
    pub total: u64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or("count table truncated (inside a varint)")?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err("count table corrupt (varint overflows 64 bits)".into());
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err("count table corrupt (varint too long)".into());
        }
    }
}

/// One blob from entries already sorted by key (distinct keys).
fn write_blob(partition: u32, partitions: u32, entries: &[(&[u8], u64)]) -> Vec<u8> {
    let body: usize = entries.iter().map(|(k, _)| k.len() + 4).sum();
    let mut out = Vec::with_capacity(HEADER + body + 8);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&partitions.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    let total: u64 = entries.iter().fold(0u64, |a, (_, c)| a.saturating_add(*c));
    out.extend_from_slice(&total.to_le_bytes());
    for (k, c) in entries {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        put_varint(&mut out, *c);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Cut a table into `partitions` blobs (blob p holds the keys of partition p, sorted).
pub fn partition_table<'a, I>(items: I, partitions: u32) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = (&'a [u8], u64)>,
{
    partition_by(items, partitions, |k| k)
}

/// Blobs of `items` cut by the hash of `part(key)` (the whole key, or a prefix of it), sorted.
fn partition_by<'a, I, F>(items: I, partitions: u32, part: F) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = (&'a [u8], u64)>,
    F: Fn(&'a [u8]) -> &'a [u8],
{
    let p = partitions.max(1);
    let mut buckets: Vec<Vec<(&'a [u8], u64)>> = (0..p).map(|_| Vec::new()).collect();
    for (k, c) in items {
        buckets[partition_of(part(k), p) as usize].push((k, c));
    }
    buckets
        .into_par_iter()
        .enumerate()
        .map(|(i, mut b)| {
            b.sort_unstable_by(|x, y| x.0.cmp(y.0));
            write_blob(i as u32, p, &b)
        })
        .collect()
}

/// The header of a blob, after checking its magic, version and checksum.
pub fn header(blob: &[u8]) -> Result<Header, String> {
    if blob.len() < HEADER + 8 || blob[..4] != MAGIC {
        return Err("not a tokbench count table (bad magic or too short)".into());
    }
    if blob[4] != VERSION {
        return Err(format!("count table version {} (this build reads {VERSION})", blob[4]));
    }
    let (body, sum) = blob.split_at(blob.len() - 8);
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return Err("count table corrupt (checksum mismatch)".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(blob[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(blob[i..i + 8].try_into().unwrap());
    Ok(Header { partition: u32_at(5), partitions: u32_at(9), keys: u64_at(13), total: u64_at(21) })
}

/// The entries of a checked blob, in key order.
pub struct Entries<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u64,
}

impl<'a> Entries<'a> {
    pub fn new(blob: &'a [u8]) -> Result<(Header, Self), String> {
        let h = header(blob)?;
        Ok((h, Entries { buf: &blob[..blob.len() - 8], pos: HEADER, left: h.keys }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], u64), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut one = || -> Result<(&'a [u8], u64), String> {
            let n = get_varint(self.buf, &mut self.pos)? as usize;
            let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("count table truncated")?;
            let k = &self.buf[self.pos..end];
            self.pos = end;
            let c = get_varint(self.buf, &mut self.pos)?;
            Ok((k, c))
        };
        Some(one())
    }
}

/// reduce: the sum of blobs of one partition (k-way merge of their sorted entries) as one blob.
pub fn merge(blobs: &[&[u8]]) -> Result<Vec<u8>, String> {
    if blobs.is_empty() {
        return Err("nothing to merge (no count tables)".into());
    }
    let mut runs = Vec::with_capacity(blobs.len());
    let mut first: Option<Header> = None;
    for b in blobs {
        let (h, e) = Entries::new(b)?;
        if let Some(f) = first {
            if (f.partition, f.partitions) != (h.partition, h.partitions) {
                return Err(format!(
                    "count tables of different partitions merged ({}/{} and {}/{})",
                    f.partition, f.partitions, h.partition, h.partitions
                ));
            }
        }
        first = Some(h);
        runs.push(e);
    }
    let h = first.unwrap();
    let mut heap: BinaryHeap<Reverse<(&[u8], usize, u64)>> = BinaryHeap::new();
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some(x) = r.next() {
            let (k, c) = x?;
            heap.push(Reverse((k, i, c)));
        }
    }
    let mut out: Vec<(&[u8], u64)> = Vec::new();
    let mut last: Vec<Option<&[u8]>> = vec![None; runs.len()];
    while let Some(Reverse((k, i, c))) = heap.pop() {
        if let Some(prev) = last[i] {
            if prev >= k {
                return Err("count table corrupt (keys out of order)".into());
            }
        }
        last[i] = Some(k);
        match out.last_mut() {
            Some((lk, lc)) if *lk == k => *lc = lc.checked_add(c).ok_or("count overflows 64 bits")?,
            _ => out.push((k, c)),
        }
        if let Some(x) = runs[i].next() {
            let (k2, c2) = x?;
            heap.push(Reverse((k2, i, c2)));
        }
    }
    Ok(write_blob(h.partition, h.partitions, &out))
}

/// Add a blob's counts into a hash table.
pub fn add_into(blob: &[u8], table: &mut FxHashMap<Vec<u8>, u64>) -> Result<Header, String> {
    let (h, entries) = Entries::new(blob)?;
    table.reserve(h.keys as usize);
    for e in entries {
        let (k, c) = e?;
        match table.get_mut(k) {
            Some(v) => *v = v.checked_add(c).ok_or("count overflows 64 bits")?,
            None => {
                table.insert(k.to_vec(), c);
            }
        }
    }
    Ok(h)
}


// ---- n-gram tables (tokbench metrics on an executor) -------------------------------------------

/// map: the k-gram count tables of orders 1..=max_order of token streams with document `offsets`
/// (k-grams inside documents only, as crate::ngram), each cut into `partitions` blobs: order-major,
/// blob (k-1) * partitions + p. A key is the k ids as u32 big-endian, so keys sort by their
/// (k-1)-id context first; the partition is the hash of that context, so every context lies whole in
/// one partition and its statistics can be taken there.
pub fn ngram_tables(tokens: &[u32], offsets: &[u64], max_order: usize, partitions: u32) -> Result<Vec<Vec<u8>>, String> {
    if max_order == 0 {
        return Err("max_order must be >= 1".into());
    }
    if offsets.first() != Some(&0) || *offsets.last().unwrap() as usize != tokens.len()
        || offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err("offsets must start at 0, not decrease and end at the number of tokens".into());
    }
    let p = partitions.max(1);
    let per_order: Vec<Vec<Vec<u8>>> = (1..=max_order)
        .into_par_iter()
        .map(|k| {
            let mut t: FxHashMap<Vec<u8>, u64> = FxHashMap::default();
            let mut key = Vec::with_capacity(4 * k);
            for w in offsets.windows(2) {
                let doc = &tokens[w[0] as usize..w[1] as usize];
                if doc.len() < k {
                    continue;
                }
                for g in doc.windows(k) {
                    key.clear();
                    for id in g {
                        key.extend_from_slice(&id.to_be_bytes());
                    }
                    match t.get_mut(key.as_slice()) {
                        Some(c) => *c += 1,
                        None => {
                            t.insert(key.clone(), 1);
                        }
                    }
                }
            }
            let ctx = 4 * (k - 1);
            partition_by(t.iter().map(|(kk, c)| (kk.as_slice(), *c)), p, |kk| &kk[..ctx])
        })
        .collect();
    Ok(per_order.into_iter().flatten().collect())
}

/// Integer statistics of one partition of a k-gram table: every float is computed later from these
/// (sums over count histograms in count order), so the values do not depend on how the corpus was cut.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NgramPart {
    pub n: u64,
    pub distinct: u64,
    pub singletons: u64,
    pub contexts: u64,
    pub singleton_contexts: u64,
    /// count -> k-grams with that count
    pub joint: std::collections::BTreeMap<u64, u64>,
    /// context total -> contexts with that total
    pub ctx: std::collections::BTreeMap<u64, u64>,
}

/// reduce output: the statistics of a merged partition of the order-`order` table.
pub fn ngram_part(blob: &[u8], order: usize) -> Result<NgramPart, String> {
    let (_, entries) = Entries::new(blob)?;
    let width = 4 * order.max(1);
    let mut out = NgramPart::default();
    let mut cur: Option<Vec<u8>> = None;
    let mut cur_total = 0u64;
    let close = |out: &mut NgramPart, total: u64| {
        out.contexts += 1;
        out.singleton_contexts += (total == 1) as u64;
        *out.ctx.entry(total).or_insert(0) += 1;
    };
    for e in entries {
        let (k, c) = e?;
        if k.len() != width {
            return Err(format!("a {}-byte key in an order-{order} n-gram table", k.len()));
        }
        out.n += c;
        out.distinct += 1;
        out.singletons += (c == 1) as u64;
        *out.joint.entry(c).or_insert(0) += 1;
        let ctx = &k[..width - 4];
        if cur.as_deref() != Some(ctx) {
            if cur.is_some() {
                close(&mut out, cur_total);
            }
            cur = Some(ctx.to_vec());
            cur_total = 0;
        }
        cur_total += c;
    }
    if cur.is_some() {
        close(&mut out, cur_total);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(words: &[(&str, u64)]) -> FxHashMap<Vec<u8>, u64> {
        words.iter().map(|(w, c)| (w.as_bytes().to_vec(), *c)).collect()
    }

    fn parts(t: &FxHashMap<Vec<u8>, u64>, p: u32) -> Vec<Vec<u8>> {
        partition_table(t.iter().map(|(k, v)| (k.as_slice(), *v)), p)
    }

    #[test]
    fn partition_merge_round_trip() {
        let a = table(&[("the", 3), (" cat", 1), ("sat", 2), ("", 1)]);
        let b = table(&[("the", 4), ("dog", 1), ("\u{fffd}x", 7)]);
        let (pa, pb) = (parts(&a, 4), parts(&b, 4));
        let mut got = FxHashMap::default();
        for p in 0..4 {
            let m = merge(&[&pa[p], &pb[p]]).unwrap();
            let h = add_into(&m, &mut got).unwrap();
            assert_eq!(h.partition, p as u32);
            for e in Entries::new(&m).unwrap().1 {
                assert_eq!(partition_of(e.unwrap().0, 4), p as u32);
            }
        }
        let mut want = a.clone();
        for (k, v) in b {
            *want.entry(k).or_insert(0) += v;
        }
        assert_eq!(got, want);
        assert_eq!(partition_of(b"the", 7), partition_of(b"the", 7));
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c); // the published FNV-1a 64 test vector
    }

    #[test]
    fn bad_blobs_are_errors() {
        let t = table(&[("a", 1), ("b", 2)]);
        let p = parts(&t, 2);
        let mut bad = p[0].clone();
        let n = bad.len();
        bad[n - 9] ^= 1;
        assert!(header(&bad).unwrap_err().contains("checksum"));
        assert!(header(b"nope").is_err());
        assert!(merge(&[&p[0], &p[1]]).unwrap_err().contains("different partitions"));
        assert!(merge(&[]).is_err());
    }

    #[test]
    fn ngram_parts_equal_ngram_stats() {
        let tokens: Vec<u32> = (0..400u32).map(|i| (i * 7 + i / 3) % 11).collect();
        let offsets = vec![0u64, 150, 150, 151, 400];
        let want = crate::ngram::ngram_stats(&tokens, &offsets, 4).unwrap();
        let blobs = ngram_tables(&tokens, &offsets, 4, 3).unwrap();
        for k in 1..=4usize {
            let mut tot = NgramPart::default();
            for p in 0..3 {
                let part = ngram_part(&merge(&[&blobs[(k - 1) * 3 + p]]).unwrap(), k).unwrap();
                tot.n += part.n;
                tot.distinct += part.distinct;
                tot.singletons += part.singletons;
                tot.contexts += part.contexts;
                tot.singleton_contexts += part.singleton_contexts;
            }
            let w = &want[k - 1];
            assert_eq!((tot.n, tot.distinct, tot.singletons, tot.contexts, tot.singleton_contexts),
                       (w.n, w.distinct, w.singletons, w.contexts, w.singleton_contexts), "order {k}");
        }
    }

    #[test]
    fn big_counts_and_keys() {
        let k = vec![0xffu8; 300];
        let mut t = FxHashMap::default();
        t.insert(k.clone(), u64::MAX - 1);
        let p = parts(&t, 1);
        let mut got = FxHashMap::default();
        add_into(&p[0], &mut got).unwrap();
        assert_eq!(got[&k], u64::MAX - 1);
        assert!(merge(&[&p[0], &p[0]]).unwrap_err().contains("overflow"));
    }
}
