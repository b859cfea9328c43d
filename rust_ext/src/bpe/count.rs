//! Pre-token counting for BPE training, written as map + reduce.
//!
//! map: [`count_shard`] splits a shard of texts (special tokens cut out first, then the same
//! [`Splitter`] as the encoder) into a table pre-token bytes -> 64-bit count.
//! reduce: [`merge_counts`] sums two tables. [`count_texts`] runs the map over `rayon` shards
//! and reduces the shard tables; a distributed engine can run the map elsewhere and reduce
//! the saved tables (the Python side saves them as `base64 count` lines).
use super::pretokenize::Splitter;
use super::token_table::TokenTable;
use aho_corasick::AhoCorasick;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

pub type Counts = FxHashMap<Vec<u8>, u64>;

/// The counts while a shard is being counted: keys of up to 15 bytes packed into one integer
/// (`TokenTable`), so counting a piece is one hash of a number and no byte comparison or key
/// allocation (with `Counts` the key comparisons and the hashing of byte strings were most of
/// the counting time). Unpacked into `Counts` when read (`count_texts`, `CountTable::counts`).
pub type Packed = TokenTable<u64>;

/// reduce for packed tables: the sum of two (the larger one is reused), as [`merge_counts`].
pub fn merge_packed(a: Packed, b: Packed) -> Packed {
    let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    big.add_counts(small);
    big
}

/// A count table that takes packed counts cheaply (`add_packed`: integer keys, no allocation)
/// and becomes `Counts` only when it is read (`counts`), so a corpus counted batch by batch
/// turns each distinct piece into a byte-string key once, not once per batch.
#[derive(Default)]
pub struct CountTable {
    counts: Counts,
    pending: Packed,
}

impl CountTable {
    pub fn from_counts(counts: Counts) -> Self {
        CountTable { counts, pending: Packed::default() }
    }

    pub fn add_packed(&mut self, more: Packed) {
        self.pending = merge_packed(std::mem::take(&mut self.pending), more);
    }

    /// The counts, with everything added so far.
    pub fn counts(&mut self) -> &mut Counts {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.counts.reserve(pending.len());
            for (k, v) in pending.into_entries() {
                *self.counts.entry(k).or_insert(0) += v;
            }
        }
        &mut self.counts
    }
}

/// Cuts special tokens out of the text before splitting (they are never counted).
pub struct Counter {
    pub splitter: Splitter,
    specials: Option<AhoCorasick>,
}

impl Counter {
    pub fn new(splitter: Splitter, specials: &[String]) -> Result<Self, String> {
        let specials = if specials.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(specials)
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Counter { splitter, specials })
    }

    fn count_one(&self, text: &str, cache: &mut super::pretokenize::Cache, out: &mut Packed) -> Result<(), String> {
        let mut add = |piece: &str| {
            let b = piece.as_bytes();
            if !b.is_empty() {
                *out.get_or_insert(b, 0) += 1;
            }
        };
        match &self.specials {
            None => self.splitter.split(text, cache, &mut add),
            Some(ac) => {
                let mut start = 0;
                for m in ac.find_iter(text) {
                    if m.start() > start {
                        self.splitter.split(&text[start..m.start()], cache, &mut add)?;
                    }
                    start = m.end();
                }
                if start < text.len() {
                    self.splitter.split(&text[start..], cache, &mut add)?;
                }
                Ok(())
            }
        }
    }

    fn count_packed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Packed, String> {
        let mut out = Packed::default();
        let mut cache = self.splitter.new_cache();
        for t in texts {
            self.count_one(t.as_ref(), &mut cache, &mut out)?;
        }
        Ok(out)
    }

    /// map: the counts of one shard of texts.
    pub fn count_shard<S: AsRef<str>>(&self, texts: &[S]) -> Result<Counts, String> {
        Ok(self.count_packed(texts)?.into_entries().collect())
    }

    /// map over shards of about `shard_bytes` each in the current rayon pool, then reduce.
    pub fn count_texts<S: AsRef<str> + Sync>(&self, texts: &[S], shard_bytes: usize) -> Result<Counts, String> {
        Ok(self.count_texts_packed(texts, shard_bytes)?.into_entries().collect())
    }

    /// [`Counter::count_texts`], the result still packed (for a [`CountTable`]).
    pub fn count_texts_packed<S: AsRef<str> + Sync>(&self, texts: &[S], shard_bytes: usize) -> Result<Packed, String> {
        let mut shards: Vec<&[S]> = Vec::new();
        let mut start = 0;
        let mut size = 0;
        for (i, t) in texts.iter().enumerate() {
            size += t.as_ref().len();
            if size >= shard_bytes {
                shards.push(&texts[start..=i]);
                start = i + 1;
                size = 0;
            }
        }
        if start < texts.len() {
            shards.push(&texts[start..]);
        }
        shards
            .into_par_iter()
            .map(|s| self.count_packed(s))
            .try_reduce(Packed::default, |a, b| Ok(merge_packed(a, b)))
    }
}

/// reduce: the sum of two count tables (the larger one is reused).
pub fn merge_counts(a: Counts, b: Counts) -> Counts {
    let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    for (k, v) in small {
        *big.entry(k).or_insert(0) += v;
    }
    big
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_reduce_equals_single_pass() {
        let sp = Splitter::new(Some(r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"), false, true, "auto").unwrap();
        let c = Counter::new(sp, &["<s>".to_string()]).unwrap();
        let texts: Vec<String> = (0..200).map(|i| format!("hello world {i}<s> the cat  sat\n")).collect();
        let one = c.count_shard(&texts).unwrap();
        let many = c.count_texts(&texts, 64).unwrap();
        assert_eq!(one, many);
        assert_eq!(one[b" world".as_slice()], 200);
        assert!(!one.contains_key(b"<s>".as_slice()));
    }

    #[test]
    fn packed_counting_equals_a_plain_map_at_every_key_length() {
        let sp = Splitter::new(Some(r"\S+|\s+"), false, true, "auto").unwrap();
        let c = Counter::new(sp, &[]).unwrap();
        let mut texts = Vec::new();
        for n in 1..=40usize {
            for v in 0..3u8 {
                // pieces of n bytes, including zero bytes and multi-byte characters
                let piece: String = (0..n).map(|i| ["a", "\0", "é", "z"][(i + v as usize) % 4]).collect::<String>();
                texts.push(format!("{piece} {piece}\n{}", "x".repeat(n)));
            }
        }
        let mut want = Counts::default();
        for t in &texts {
            for p in regex_automata::meta::Regex::new(r"\S+|\s+").unwrap().find_iter(t.as_str()) {
                *want.entry(t.as_bytes()[p.start()..p.end()].to_vec()).or_insert(0) += 1;
            }
        }
        assert_eq!(c.count_shard(&texts).unwrap(), want);
        assert_eq!(c.count_texts(&texts, 100).unwrap(), want);
        // batch by batch into a table read in between: the same counts
        let mut table = CountTable::default();
        for (i, batch) in texts.chunks(7).enumerate() {
            table.add_packed(c.count_texts_packed(batch, 50).unwrap());
            if i % 3 == 0 {
                table.counts();
            }
        }
        assert_eq!(*table.counts(), want);
    }
}
