//! Text -> ids: special tokens, pre-tokenization, a per-thread cache of frequent pre-tokens,
//! and BPE of each pre-token. Decoding ids -> bytes.
use super::model::{BpeModel, NONE};
use super::pretokenize::{Cache as ReCache, Splitter};
use super::token_table::TokenTable;
use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Pre-tokens longer than this are not cached.
const CACHE_MAX_PIECE: usize = 48;
/// Entries per thread and encoder before the cache is cleared.
const CACHE_MAX_ENTRIES: usize = 1 << 18;

/// Fewest bytes per thread for which `encode_ordinary_split` cuts a text.
const SPLIT_MIN: usize = 4096;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

struct Scratch {
    /// pre-token bytes -> (start, len) of its ids in `ids`
    pieces: TokenTable<(u32, u32)>,
    ids: Vec<u32>,
    re: ReCache,
}

thread_local! {
    static SCRATCH: RefCell<FxHashMap<u64, Scratch>> = RefCell::new(FxHashMap::default());
}

pub struct Encoder {
    uid: u64,
    model: BpeModel,
    splitter: Splitter,
    /// special token strings and their ids
    specials: Vec<(String, u32)>,
    /// every special, overlapping search: to find disallowed ones
    any_special: Option<AhoCorasick>,
    /// leftmost-longest automata for a set of allowed specials (key: sorted special indices)
    allowed_ac: Mutex<FxHashMap<Vec<usize>, Arc<AhoCorasick>>>,
    /// id -> bytes (ordinary tokens and specials)
    decoder: Vec<Option<Box<[u8]>>>,
    /// tokenizer.json normalizer NFC is applied by the caller; kept here for provenance
    pub engine: &'static str,
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let uid = self.uid;
        let _ = SCRATCH.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                s.remove(&uid);
            }
        });
    }
}

impl Encoder {
    pub fn new(
        model: BpeModel,
        splitter: Splitter,
        tokens: &[(Vec<u8>, u32)],
        specials: Vec<(String, u32)>,
    ) -> Result<Self, String> {
        let n = tokens
            .iter()
            .map(|t| t.1)
            .chain(specials.iter().map(|s| s.1))
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut decoder: Vec<Option<Box<[u8]>>> = vec![None; n];
        for (b, id) in tokens {
            decoder[*id as usize].get_or_insert_with(|| b.clone().into_boxed_slice());
        }
        for (s, id) in &specials {
            decoder[*id as usize] = Some(s.as_bytes().to_vec().into_boxed_slice());
        }
        let any_special = if specials.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(specials.iter().map(|s| s.0.as_bytes()))
                    .map_err(|e| e.to_string())?,
            )
        };
        let engine = splitter.engine_name();
        Ok(Encoder {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            model,
            splitter,
            specials,
            any_special,
            allowed_ac: Mutex::new(FxHashMap::default()),
            decoder,
            engine,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.decoder.len()
    }

    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// Runs `f` with this thread's scratch for this encoder.
    fn with_scratch<R>(&self, f: impl FnOnce(&mut Scratch) -> R) -> R {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let sc = s.entry(self.uid).or_insert_with(|| Scratch {
                pieces: TokenTable::default(),
                ids: Vec::new(),
                re: self.splitter.new_cache(),
            });
            f(sc)
        })
    }

    fn encode_text(&self, text: &str, sc: &mut Scratch, out: &mut Vec<u32>) -> Result<(), String> {
        let model = &self.model;
        let Scratch { pieces, ids, re } = sc;
        self.splitter.split(text, re, &mut |p: &str| {
            let b = p.as_bytes();
            if b.len() == 1 {
                let id = model.byte_id(b[0]);
                if id != NONE {
                    out.push(id);
                }
                return;
            }
            if model.ignore_merges() {
                if let Some(id) = model.token_id(b) {
                    out.push(id);
                    return;
                }
            }
            if b.len() > CACHE_MAX_PIECE {
                model.merge_piece(b, out);
                return;
            }
            if let Some(&(at, n)) = pieces.get_ref(b) {
                out.extend_from_slice(&ids[at as usize..(at + n) as usize]);
                return;
            }
            let at = out.len();
            model.merge_piece(b, out);
            if pieces.len() >= CACHE_MAX_ENTRIES {
                pieces.clear();
                ids.clear();
            }
            pieces.get_or_insert(b, (ids.len() as u32, (out.len() - at) as u32));
            ids.extend_from_slice(&out[at..]);
        })
    }

    /// The pre-tokens of `text` (no special-token handling).
    pub fn pre_tokenize(&self, text: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        self.with_scratch(|sc| self.splitter.split(text, &mut sc.re, &mut |p: &str| out.push(p.to_owned())))?;
        Ok(out)
    }

    /// Ids of `text` with no special-token handling.
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.with_scratch(|sc| self.encode_text(text, sc, &mut out))?;
        Ok(out)
    }

    /// `encode_ordinary` of one text on `num_threads` threads: the text is cut where the
    /// pre-tokenizer is known to have a boundary (`Splitter::cuts`) and the spans are encoded in
    /// parallel; same ids. Texts shorter than `SPLIT_MIN` bytes per thread, and patterns without
    /// known cut points, run on the calling thread.
    pub fn encode_ordinary_split(&self, text: &str, num_threads: usize) -> Result<Vec<u32>, String> {
        let parts = crate::pool::effective_threads(num_threads).min(text.len() / SPLIT_MIN);
        let cuts = self.splitter.cuts(text, parts);
        if cuts.is_empty() {
            return self.encode_ordinary(text);
        }
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(text.len());
        let spans: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        let ids: Vec<Vec<u32>> =
            with_pool(num_threads, || spans.par_iter().map(|t| self.encode_ordinary(t)).collect::<Result<Vec<_>, String>>())??;
        let mut out = Vec::with_capacity(ids.iter().map(Vec::len).sum());
        for v in ids {
            out.extend_from_slice(&v);
        }
        Ok(out)
    }

    fn allowed_automaton(&self, allowed: &[usize]) -> Result<Arc<AhoCorasick>, String> {
        let mut key = allowed.to_vec();
        key.sort_unstable();
        key.dedup();
        let mut map = self.allowed_ac.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ac) = map.get(&key) {
            return Ok(ac.clone());
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(key.iter().map(|&i| self.specials[i].0.as_bytes()))
            .map_err(|e| e.to_string())?;
        let ac = Arc::new(ac);
        if map.len() > 64 {
            map.clear();
        }
        map.insert(key, ac.clone());
        Ok(ac)
    }

    /// Index (into `specials`) of the first special in `text` whose flag in `mask` is set.
    pub fn find_special(&self, text: &str, mask: &[bool]) -> Option<usize> {
        let ac = self.any_special.as_ref()?;
        ac.find_overlapping_iter(text).map(|m| m.pattern().as_usize()).find(|&i| mask[i])
    }

    /// Ids of `text` where the specials with indices `allowed` become their ids (leftmost-longest
    /// exact match) and everything else is ordinary text.
    pub fn encode_with_specials(&self, text: &str, allowed: &[usize]) -> Result<Vec<u32>, String> {
        if allowed.is_empty() {
            return self.encode_ordinary(text);
        }
        let ac = self.allowed_automaton(allowed)?;
        let mut ids: Vec<usize> = allowed.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.with_scratch(|sc| -> Result<(), String> {
            let mut pos = 0;
            for m in ac.find_iter(text) {
                if m.start() > pos {
                    self.encode_text(&text[pos..m.start()], sc, &mut out)?;
                }
                out.push(self.specials[ids[m.pattern().as_usize()]].1);
                pos = m.end();
            }
            if pos < text.len() {
                self.encode_text(&text[pos..], sc, &mut out)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `encode_with_specials` over many texts in parallel on the current rayon pool.
    pub fn encode_batch(&self, texts: &[&str], allowed: &[usize]) -> Result<Vec<Vec<u32>>, String> {
        texts
            .par_iter()
            .with_min_len(8)
            .map(|t| self.encode_with_specials(t, allowed))
            .collect()
    }

    /// Bytes of `ids`; an id without bytes -> Err(that id).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, u32> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.decoder.get(id as usize) {
                Some(Some(b)) => out.extend_from_slice(b),
                _ => return Err(id),
            }
        }
        Ok(out)
    }

    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.decoder.get(id as usize).and_then(|b| b.as_deref())
    }
}

pub use crate::pool::with_pool;
