//! Pre-token counting for BPE training, written as map + reduce.
//!
//! map: [`count_shard`] splits a shard of texts (special tokens cut out first, then the same
//! [`Splitter`] as the encoder) into a table pre-token bytes -> 64-bit count.
//! reduce: [`merge_counts`] sums two tables. [`count_texts`] runs the map over `rayon` shards
//! and reduces the shard tables; a distributed engine can run the map elsewhere and reduce
//! the saved tables (the Python side saves them as `base64 count` lines).
use super::pretokenize::Splitter;
use aho_corasick::AhoCorasick;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

pub type Counts = FxHashMap<Vec<u8>, u64>;

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

    fn count_one(&self, text: &str, cache: &mut super::pretokenize::Cache, out: &mut Counts) -> Result<(), String> {
        let mut add = |piece: &str| {
            let b = piece.as_bytes();
            if b.is_empty() {
                return;
            }
            match out.get_mut(b) {
                Some(c) => *c += 1,
                None => {
                    out.insert(b.to_vec(), 1);
                }
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

    /// map: the counts of one shard of texts.
    pub fn count_shard<S: AsRef<str>>(&self, texts: &[S]) -> Result<Counts, String> {
        let mut out = Counts::default();
        let mut cache = self.splitter.new_cache();
        for t in texts {
            self.count_one(t.as_ref(), &mut cache, &mut out)?;
        }
        Ok(out)
    }

    /// map over shards of about `shard_bytes` each in the current rayon pool, then reduce.
    pub fn count_texts<S: AsRef<str> + Sync>(&self, texts: &[S], shard_bytes: usize) -> Result<Counts, String> {
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
            .map(|s| self.count_shard(s))
            .try_reduce(Counts::default, |a, b| Ok(merge_counts(a, b)))
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
}
