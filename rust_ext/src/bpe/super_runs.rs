//! Supertoken BPE, stage 2 (SuperBPE curriculum, trained the scalable way).
//!
//! Stage 1 is ordinary BPE on word-level pre-tokens up to the transition size. Stage 2 counts
//! *runs* of adjacent pre-tokens (the pieces of a coarser split: whole stretches of a line
//! between newlines and punctuation runs) exactly like pre-tokens -- a table run bytes ->
//! count, filled by the ordinary [`super::count::Counter`] map + reduce -- so memory grows with
//! the distinct runs, not with the corpus. Each distinct run starts as its stage-1 encoding
//! (all stage-1 merges applied by priority over the whole run, which is what the final encoder
//! does), and [`super::train::train_words`] continues merging from the stage-1 vocabulary, a
//! merged token spanning at most `max_words` words.
use super::count::Counts;
use super::pretokenize::Splitter;
use super::model::BpeModel;
use super::train::{train_words, Options, Progress, Select, Trained};
use rayon::prelude::*;

pub struct SuperConfig {
    /// Tokens to reach, bytes included (specials are counted by the caller).
    pub target: usize,
    pub min_frequency: u64,
    pub max_token_length: Option<usize>,
    pub max_words: usize,
}

/// The stage-1 encoding of every run with a count (runs of one symbol are kept: they are part
/// of the token stream), sorted by run bytes for a deterministic order.
pub fn stage1_words(
    runs: &Counts,
    vocab: &[Vec<u8>],
    merges: &[(u32, u32)],
) -> Result<Vec<(Vec<u32>, u64)>, String> {
    let tokens: Vec<(Vec<u8>, u32)> = vocab.iter().enumerate().map(|(i, b)| (b.clone(), i as u32)).collect();
    let model = BpeModel::from_merges(&tokens, merges, false)?;
    let mut items: Vec<(&Vec<u8>, &u64)> = runs.iter().filter(|(_, &c)| c > 0).collect();
    items.par_sort_unstable();
    Ok(items
        .par_iter()
        .with_min_len(256)
        .map(|(b, &c)| {
            let mut ids = Vec::with_capacity(b.len() / 3 + 1);
            model.encode_piece(b, &mut ids);
            (ids, c)
        })
        .collect())
}

/// Stage 2: continue from the stage-1 `vocab` and `merges` on the run counts. Returns the whole
/// vocabulary and the stage-2 merges.
pub fn train_stage2(
    runs: &Counts,
    vocab: Vec<Vec<u8>>,
    merges: &[(u32, u32)],
    cfg: &SuperConfig,
    progress: &Progress,
) -> Result<Trained, String> {
    if cfg.max_words < 1 {
        return Err("max_words must be at least 1".into());
    }
    if cfg.target < vocab.len() {
        return Err(format!("target {} is below the stage-1 vocabulary ({} tokens)", cfg.target, vocab.len()));
    }
    let words = stage1_words(runs, &vocab, merges)?;
    let opts = Options {
        target: cfg.target,
        min_frequency: cfg.min_frequency,
        max_token_length: cfg.max_token_length,
        max_words: Some(cfg.max_words),
        select: Select::Frequency,
    };
    train_words(vocab, words, &opts, progress)
}

/// Independent chunkings of one distinct run at most (a run seen c times is chunked
/// min(c, CHUNK_SAMPLES) times, the count shared out among them).
pub const CHUNK_SAMPLES: u64 = 8;

#[inline]
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// TokenAdapt-style supertoken chunks: every distinct run is split into its word-level
/// pre-tokens (`words`) and cut into chunks of k consecutive pre-tokens, k drawn uniformly from
/// 1..=max_words; the chunks are counted like pre-tokens. A run seen c times is chunked
/// r = min(c, CHUNK_SAMPLES) times, chunking i getting c / r (+1 for the first c % r), with a
/// generator seeded by (FNV-1a of the run bytes) ^ seed: deterministic, independent of order.
pub fn chunk_runs(runs: &Counts, words: &Splitter, max_words: usize, seed: u64) -> Result<Counts, String> {
    if max_words < 1 {
        return Err("max_words must be at least 1".into());
    }
    let items: Vec<(&Vec<u8>, &u64)> = runs.iter().filter(|(_, &c)| c > 0).collect();
    items
        .par_chunks(4096)
        .map(|part| -> Result<Counts, String> {
            let mut out = Counts::default();
            let mut cache = words.new_cache();
            let mut bounds: Vec<usize> = Vec::new();
            for (run, &c) in part {
                let Ok(text) = std::str::from_utf8(run) else {
                    *out.entry(run.to_vec()).or_insert(0) += c;
                    continue;
                };
                bounds.clear();
                let base = text.as_ptr() as usize;
                words.split(text, &mut cache, &mut |p: &str| bounds.push(p.as_ptr() as usize - base))?;
                bounds.push(text.len());
                let n = bounds.len() - 1;
                let r = c.min(CHUNK_SAMPLES);
                let mut state = fnv1a(run) ^ seed;
                for i in 0..r {
                    let w = c / r + u64::from(i < c % r);
                    let mut at = 0;
                    while at < n {
                        let k = 1 + (splitmix64(&mut state) % max_words as u64) as usize;
                        let end = (at + k).min(n);
                        let piece = &run[bounds[at]..bounds[end]];
                        match out.get_mut(piece) {
                            Some(v) => *v += w,
                            None => {
                                out.insert(piece.to_vec(), w);
                            }
                        }
                        at = end;
                    }
                }
            }
            Ok(out)
        })
        .try_reduce(Counts::default, |a, b| Ok(super::count::merge_counts(a, b)))
}

#[cfg(test)]
mod tests {
    use super::super::count::Counter;
    use super::super::pretokenize::Splitter;
    use super::super::train::{n_words, train, TrainConfig};
    use super::*;

    const GPT2: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const RUNS: &str = r"(?: ?[\p{L}\p{N}]+(?:[^\s\p{L}\p{N}][\p{L}\p{N}]+)*)+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    #[test]
    fn stage2_spans_words_within_bounds() {
        let texts: Vec<String> = (0..300)
            .map(|i| format!("of the cat in the hat, {} said the man.\nin the end of the day\n", i % 7))
            .collect();
        let c1 = Counter::new(Splitter::new(Some(GPT2), false, true, "auto").unwrap(), &[]).unwrap();
        let c2 = Counter::new(Splitter::new(Some(RUNS), false, true, "auto").unwrap(), &[]).unwrap();
        let words = c1.count_texts(&texts, 1 << 20).unwrap();
        let runs = c2.count_texts(&texts, 1 << 20).unwrap();
        assert_eq!(runs[b"in the end of the day".as_slice()], 300);
        assert_eq!(runs[b" 3 said the man".as_slice()], 43);
        let p = Progress::default();
        let s1 = train(words.iter().map(|(k, v)| (k.as_slice(), *v)), &TrainConfig { target: 290, min_frequency: 2, max_token_length: None }, &p).unwrap();
        let m1: Vec<(u32, u32)> = s1.merges.iter().map(|m| (m.0, m.1)).collect();
        let cfg = SuperConfig { target: 330, min_frequency: 2, max_token_length: None, max_words: 3 };
        let s2 = train_stage2(&runs, s1.vocab.clone(), &m1, &cfg, &p).unwrap();
        assert!(s2.vocab.len() > 290 && s2.vocab.len() <= 330);
        let multi: Vec<String> = s2.vocab[290..].iter().filter(|t| n_words(t) >= 2).map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        let all: Vec<String> = s2.vocab[256..].iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        assert!(multi.iter().any(|t| t == " said the man"), "{all:?}");
        assert!(s2.vocab[290..].iter().any(|t| n_words(t) >= 2));
        assert!(s2.vocab[256..].iter().all(|t| n_words(t) <= 3 && !t.contains(&b'\n') && !t.contains(&b',')));
        // TokenAdapt-style chunks: at most 3 pre-tokens each, byte mass kept, deterministic
        let sp = Splitter::new(Some(GPT2), false, true, "auto").unwrap();
        let chunks = chunk_runs(&runs, &sp, 3, 7).unwrap();
        let mass = |t: &Counts| t.iter().map(|(k, v)| k.len() as u64 * v).sum::<u64>();
        assert_eq!(mass(&chunks), mass(&runs));
        assert_eq!(chunks, chunk_runs(&runs, &sp, 3, 7).unwrap());
        for k in chunks.keys() {
            let mut n = 0;
            sp.split(std::str::from_utf8(k).unwrap(), &mut sp.new_cache(), &mut |_| n += 1).unwrap();
            assert!((1..=3).contains(&n), "{:?}", String::from_utf8_lossy(k));
        }
        assert!(chunks.keys().any(|k| n_words(k) == 3) && chunks.keys().any(|k| n_words(k) == 1));
        let bad = SuperConfig { max_words: 0, ..cfg };
        assert!(train_stage2(&runs, s1.vocab, &m1, &bad, &p).is_err());
    }
}
