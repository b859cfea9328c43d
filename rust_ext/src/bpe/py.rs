//! Python binding of the BPE encoder (thin: argument conversion and GIL release).
use super::encoder::{with_pool, Encoder};
use crate::pyargs;
use super::model::BpeModel;
use super::pretokenize::Splitter;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::sync::Arc;

/// Texts shorter than this (bytes) are encoded with the GIL held: that takes well under a
/// millisecond (the interpreter's switch interval is 5 ms), and for short texts, the common case
/// of per-text calls, releasing and re-taking the GIL costs a noticeable share of the call.
const KEEP_GIL_BELOW: usize = 1024;

fn err(e: String) -> PyErr {
    PyValueError::new_err(e)
}

/// Byte-level BPE encoder (tiktoken rank BPE or HF `tokenizers` merges BPE).
#[pyclass(frozen, module = "tokbench._core")]
pub struct BpeEncoder {
    inner: Arc<Encoder>,
    /// One Python int per id below n_vocab, made on first use: an id list is then filled with
    /// new references to these (no int allocated per id; the "id list construction" stage).
    ints: pyo3::sync::GILOnceCell<Vec<PyObject>>,
}

#[pymethods]
impl BpeEncoder {
    #[new]
    #[pyo3(signature = (tokens, merges=None, *, ignore_merges=true, pattern=None,
                        individual_digits=false, keep_unmatched=false, specials=Vec::new(),
                        engine="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tokens: Vec<(Vec<u8>, u32)>,
        merges: Option<Vec<(u32, u32)>>,
        ignore_merges: bool,
        pattern: Option<&str>,
        individual_digits: bool,
        keep_unmatched: bool,
        specials: Vec<(String, u32)>,
        engine: &str,
    ) -> PyResult<Self> {
        let pattern = pattern.map(str::to_owned);
        let engine = engine.to_owned();
        let enc = py.allow_threads(move || -> Result<Encoder, String> {
            let model = match &merges {
                None => BpeModel::from_ranks(&tokens)?,
                Some(m) => BpeModel::from_merges(&tokens, m, ignore_merges)?,
            };
            let splitter =
                Splitter::new(pattern.as_deref(), individual_digits, keep_unmatched, &engine)?;
            Encoder::new(model, splitter, &tokens, specials)
        });
        Ok(BpeEncoder { inner: Arc::new(enc.map_err(err)?), ints: pyo3::sync::GILOnceCell::new() })
    }

    #[getter]
    fn n_vocab(&self) -> usize {
        self.inner.n_vocab()
    }

    /// Which pre-tokenizer engine runs: "hand", "fast+fixup", "fast", "fancy" or "none".
    #[getter]
    fn engine(&self) -> &'static str {
        self.inner.engine
    }

    /// The special tokens as (string, id), in the order given.
    fn specials(&self) -> Vec<(String, u32)> {
        self.inner.specials().to_vec()
    }

    /// num_threads > 1 (0: all cores): one long text is cut at known pre-token boundaries and
    /// the spans are encoded in parallel (same ids; see `Encoder::encode_ordinary_split`).
    /// as_array: a read-only numpy uint32 array over one buffer instead of a list of ints.
    #[pyo3(signature = (text, num_threads=1, as_array=false))]
    fn encode_ordinary(&self, py: Python<'_>, text: &Bound<'_, PyString>, num_threads: i64,
                       as_array: bool) -> PyResult<PyObject> {
        let ids = self.ordinary(py, text, num_threads)?;
        if !as_array {
            return Ok(self.id_list(py, &ids).into_any().unbind());
        }
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_ne_bytes()).collect();
        let buf = PyBytes::new_bound(py, &bytes);
        let np = py.import_bound("numpy")?;
        Ok(np.getattr("frombuffer")?.call1((buf, np.getattr("uint32")?))?.unbind())
    }

    /// The pre-tokens of text (split regex, digits), no special-token handling.
    fn split(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<Vec<String>> {
        let text = pyargs::text(text)?;
        let text: &str = &text;
        let enc = &self.inner;
        py.allow_threads(|| enc.pre_tokenize(text)).map_err(err)
    }

    /// allowed: indices into specials() that are split off as special ids.
    #[pyo3(signature = (text, allowed=Vec::new()))]
    fn encode<'py>(&self, py: Python<'py>, text: &Bound<'_, PyString>, allowed: Vec<usize>) -> PyResult<Bound<'py, PyList>> {
        self.check(&allowed)?;
        let text = pyargs::text(text)?;
        let text: &str = &text;
        let enc = &self.inner;
        let ids = if text.len() < KEEP_GIL_BELOW {
            enc.encode_with_specials(text, &allowed).map_err(err)?
        } else {
            py.allow_threads(|| enc.encode_with_specials(text, &allowed)).map_err(err)?
        };
        Ok(self.id_list(py, &ids))
    }

    /// Index into specials() of the first special occurring in text among those whose
    /// mask entry is true; None if there is none.
    fn find_special(&self, py: Python<'_>, text: &Bound<'_, PyString>, mask: Vec<bool>) -> PyResult<Option<usize>> {
        let text = pyargs::text(text)?;
        let text: &str = &text;
        if mask.len() != self.inner.specials().len() {
            return Err(err(format!("mask has {} entries for {} specials", mask.len(),
                                   self.inner.specials().len())));
        }
        let enc = &self.inner;
        Ok(py.allow_threads(|| enc.find_special(text, &mask)))
    }

    /// texts: a list of str (borrowed, not copied). Returns a list of lists of ids.
    #[pyo3(signature = (texts, allowed=Vec::new(), num_threads=0))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<Bound<'py, PyString>>,
        allowed: Vec<usize>,
        num_threads: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        self.check(&allowed)?;
        let num_threads = pyargs::threads(num_threads)?;
        let owned = pyargs::texts(&texts)?;
        let refs: Vec<&str> = owned.iter().map(|t| &**t).collect();
        let enc = &self.inner;
        let ids = py
            .allow_threads(|| with_pool(num_threads, || enc.encode_batch(&refs, &allowed))?)
            .map_err(err)?;
        Ok(self.id_lists(py, &ids))
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
        match self.inner.decode_bytes(&ids) {
            Ok(b) => Ok(PyBytes::new_bound(py, &b)),
            Err(id) => Err(err(format!("token id {id} is not in the vocabulary"))),
        }
    }

    /// Bytes of every id 0..n_vocab (None where an id has no token).
    fn all_token_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Option<Bound<'py, PyBytes>>> = (0..self.inner.n_vocab() as u32)
            .map(|i| self.inner.token_bytes(i).map(|b| PyBytes::new_bound(py, b)))
            .collect();
        Ok(PyList::new_bound(py, items))
    }
}

impl BpeEncoder {
    /// A Python list of `ids`, filled with references to the cached int objects (`ints`).
    fn id_list<'py>(&self, py: Python<'py>, ids: &[u32]) -> Bound<'py, PyList> {
        let ints = self.ints.get_or_init(py, || (0..self.inner.n_vocab() as u32).map(|i| i.into_py(py)).collect());
        // SAFETY: the GIL is held (`py`); PyList_New gives a new list of `len` NULL slots, each
        // filled exactly once by PyList_SetItem, which steals the reference it is given (a new
        // one: INCREF of a cached int, or a fresh int for an id outside the table).
        unsafe {
            let list = pyo3::ffi::PyList_New(ids.len() as pyo3::ffi::Py_ssize_t);
            if list.is_null() {
                panic!("out of memory for a list of {} ids", ids.len());
            }
            for (i, &id) in ids.iter().enumerate() {
                let obj = match ints.get(id as usize) {
                    Some(o) => {
                        pyo3::ffi::Py_INCREF(o.as_ptr());
                        o.as_ptr()
                    }
                    None => pyo3::ffi::PyLong_FromUnsignedLong(id as std::os::raw::c_ulong),
                };
                pyo3::ffi::PyList_SetItem(list, i as pyo3::ffi::Py_ssize_t, obj);
            }
            Bound::from_owned_ptr(py, list).downcast_into_unchecked()
        }
    }

    /// Python lists of the id lists. The collector is paused while they are built: they hold
    /// only ints, so no collection could free anything, and one deferred pass replaces one per
    /// 700 lists.
    fn id_lists<'py>(&self, py: Python<'py>, ids: &[Vec<u32>]) -> Bound<'py, PyList> {
        struct Resume(bool);
        impl Drop for Resume {
            fn drop(&mut self) {
                if self.0 {
                    // SAFETY: called with the GIL held (the `py` token of `id_lists` outlives this).
                    unsafe { pyo3::ffi::PyGC_Enable() };
                }
            }
        }
        // SAFETY: the GIL is held (`py`); PyGC_Disable returns whether collection was enabled.
        let _resume = Resume(unsafe { pyo3::ffi::PyGC_Disable() } != 0);
        PyList::new_bound(py, ids.iter().map(|v| self.id_list(py, v)))
    }

    fn ordinary(&self, py: Python<'_>, text: &Bound<'_, PyString>, num_threads: i64) -> PyResult<Vec<u32>> {
        let num_threads = pyargs::threads(num_threads)?;
        let text = pyargs::text(text)?;
        let text: &str = &text;
        let enc = &self.inner;
        if text.len() < KEEP_GIL_BELOW {
            return enc.encode_ordinary(text).map_err(err);
        }
        if num_threads == 1 {
            return py.allow_threads(|| enc.encode_ordinary(text)).map_err(err);
        }
        py.allow_threads(|| enc.encode_ordinary_split(text, num_threads)).map_err(err)
    }

    fn check(&self, allowed: &[usize]) -> PyResult<()> {
        let n = self.inner.specials().len();
        match allowed.iter().find(|&&i| i >= n) {
            Some(i) => Err(err(format!("special index {i} out of range ({n} specials)"))),
            None => Ok(()),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BpeEncoder>()?;
    m.add_class::<BpeCounter>()?;
    m.add_class::<TrainProgress>()?;
    m.add_function(wrap_pyfunction!(bpe_train, m)?)?;
    m.add_function(wrap_pyfunction!(bpe_train_super, m)?)?;
    m.add_function(wrap_pyfunction!(bpe_chunk_runs, m)?)
}

// ---------------------------------------------------------------------------------------------
// Trainer bindings: pre-token counting (map + reduce) and merge training (GIL released).
// ---------------------------------------------------------------------------------------------
use super::count::{merge_counts, CountTable, Counter};
use super::super_runs::{chunk_runs, train_stage2, SuperConfig};
use super::train::{train_select, Progress, Select, TrainConfig};

/// A pre-token count table (bytes -> u64) with the splitter that fills it.
#[pyclass(module = "tokbench._core")]
pub struct BpeCounter {
    counter: Arc<Counter>,
    counts: CountTable,
    pattern: Option<String>,
}

#[pymethods]
impl BpeCounter {
    #[new]
    #[pyo3(signature = (pattern=None, *, individual_digits=false, specials=Vec::new()))]
    fn new(pattern: Option<&str>, individual_digits: bool, specials: Vec<String>) -> PyResult<Self> {
        let splitter = Splitter::new(pattern, individual_digits, true, "auto").map_err(err)?;
        let counter = Counter::new(splitter, &specials).map_err(err)?;
        Ok(BpeCounter { counter: Arc::new(counter), counts: CountTable::default(), pattern: pattern.map(str::to_owned) })
    }

    /// The split regex this table is counted with (None: no split).
    #[getter]
    fn pattern(&self) -> Option<String> {
        self.pattern.clone()
    }

    /// Count the pre-tokens of texts into this table (map over shards on num_threads, reduce).
    #[pyo3(signature = (texts, num_threads=0, shard_bytes=1 << 20))]
    fn count(&mut self, py: Python<'_>, texts: Vec<Bound<'_, PyString>>, num_threads: i64,
             shard_bytes: usize) -> PyResult<()> {
        let num_threads = pyargs::threads(num_threads)?;
        let texts = pyargs::texts(&texts)?;
        let counter = self.counter.clone();
        let table = py
            .allow_threads(|| with_pool(num_threads, || counter.count_texts_packed(&texts, shard_bytes.max(1))))
            .map_err(err)?
            .map_err(err)?;
        let counts = &mut self.counts;
        py.allow_threads(|| counts.add_packed(table));
        Ok(())
    }

    /// reduce: add another table's counts into this one (other is left unchanged).
    fn merge(&mut self, py: Python<'_>, mut other: PyRefMut<'_, BpeCounter>) {
        let own = std::mem::take(self.counts.counts());
        let theirs = other.counts.counts().clone();
        self.counts = CountTable::from_counts(py.allow_threads(|| merge_counts(own, theirs)));
    }

    /// Add (pre-token bytes, count) pairs (loading saved counts).
    fn add_items(&mut self, items: Vec<(Vec<u8>, u64)>) {
        for (k, v) in items {
            *self.counts.counts().entry(k).or_insert(0) += v;
        }
    }

    /// (pre-token bytes, count), sorted by bytes.
    fn items<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut v: Vec<(&Vec<u8>, &u64)> = self.counts.counts().iter().collect();
        v.sort_unstable();
        let out = PyList::empty_bound(py);
        for (k, c) in v {
            out.append((PyBytes::new_bound(py, k), *c))?;
        }
        Ok(out)
    }

    fn __len__(&mut self) -> usize {
        self.counts.counts().len()
    }

    /// Sum of all counts (pre-token occurrences).
    fn total(&mut self) -> u64 {
        self.counts.counts().values().sum()
    }

    /// map output: this table cut into `partitions` hash-partitioned count-table blobs
    /// (rust_ext/src/table.rs; GIL released).
    fn to_tables<'py>(&mut self, py: Python<'py>, partitions: u32) -> PyResult<Bound<'py, PyList>> {
        if partitions == 0 {
            return Err(err("partitions must be >= 1".into()));
        }
        let counts = &*self.counts.counts();
        let blobs = py.allow_threads(|| {
            crate::table::partition_table(counts.iter().map(|(k, v)| (k.as_slice(), *v)), partitions)
        });
        let out = PyList::empty_bound(py);
        for b in blobs {
            out.append(PyBytes::new_bound(py, &b))?;
        }
        Ok(out)
    }

    /// reduce output: add a count-table blob's counts into this table (GIL released).
    fn add_table(&mut self, py: Python<'_>, blob: &[u8]) -> PyResult<()> {
        let counts = self.counts.counts();
        py.allow_threads(|| crate::table::add_into(blob, counts)).map_err(err)?;
        Ok(())
    }
}

/// Merges done so far (polled) and a cancel flag for a running `bpe_train`.
#[pyclass(frozen, module = "tokbench._core")]
pub struct TrainProgress {
    inner: Arc<Progress>,
}

#[pymethods]
impl TrainProgress {
    #[new]
    fn new() -> Self {
        TrainProgress { inner: Arc::new(Progress::default()) }
    }
    #[getter]
    fn done(&self) -> u64 {
        self.inner.done.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn cancel(&self) {
        self.inner.cancel.store(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Train merges on the counts: returns (vocab bytes by id, [(left, right, merged, count)]).
/// candidates > 1: compression-aware selection among that many most frequent pairs.
/// num_threads: threads of the merge steps that touch many words (0 = all; the merges do not depend on it).
/// Raises ValueError("interrupted") when progress.cancel() was called.
#[pyfunction]
#[pyo3(signature = (counter, target, min_frequency=2, max_token_length=None, progress=None, candidates=1, num_threads=0))]
#[allow(clippy::type_complexity)]
fn bpe_train<'py>(
    py: Python<'py>,
    mut counter: PyRefMut<'py, BpeCounter>,
    target: usize,
    min_frequency: u64,
    max_token_length: Option<usize>,
    progress: Option<PyRef<'py, TrainProgress>>,
    candidates: usize,
    num_threads: usize,
) -> PyResult<(Bound<'py, PyList>, Vec<(u32, u32, u32, u64)>)> {
    let prog = progress.map(|p| p.inner.clone()).unwrap_or_default();
    let cfg = TrainConfig { target, min_frequency, max_token_length };
    let select = if candidates > 1 { Select::Compress { candidates } } else { Select::Frequency };
    let counts = &*counter.counts.counts();
    let t = py
        .allow_threads(|| {
            crate::pool::with_pool(num_threads, || {
                train_select(counts.iter().map(|(k, v)| (k.as_slice(), *v)), &cfg, select, &prog)
            })
        })
        .and_then(|r| r)
        .map_err(err)?;
    let vocab = PyList::empty_bound(py);
    for v in &t.vocab {
        vocab.append(PyBytes::new_bound(py, v))?;
    }
    Ok((vocab, t.merges))
}

/// Supertoken stage 2: continue the stage-1 vocab (bytes by id) and merges [(left, right)] on
/// the run counts of `runs`. Returns (whole vocab bytes by id, stage-2 merges).
#[pyfunction]
#[pyo3(signature = (runs, vocab, merges, target, max_words, min_frequency=2, max_token_length=None, progress=None))]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn bpe_train_super<'py>(
    py: Python<'py>,
    mut runs: PyRefMut<'py, BpeCounter>,
    vocab: Vec<Vec<u8>>,
    merges: Vec<(u32, u32)>,
    target: usize,
    max_words: usize,
    min_frequency: u64,
    max_token_length: Option<usize>,
    progress: Option<PyRef<'py, TrainProgress>>,
) -> PyResult<(Bound<'py, PyList>, Vec<(u32, u32, u32, u64)>)> {
    let prog = progress.map(|p| p.inner.clone()).unwrap_or_default();
    let cfg = SuperConfig { target, min_frequency, max_token_length, max_words };
    let counts = &*runs.counts.counts();
    let t = py.allow_threads(|| train_stage2(counts, vocab, &merges, &cfg, &prog)).map_err(err)?;
    let out = PyList::empty_bound(py);
    for v in &t.vocab {
        out.append(PyBytes::new_bound(py, v))?;
    }
    Ok((out, t.merges))
}

/// TokenAdapt-style chunks of the runs in `runs` (word-level split `pattern`, 1..=max_words
/// pre-tokens a chunk, seeded): a new count table (the chunks are its pre-tokens, no split).
#[pyfunction]
#[pyo3(signature = (runs, pattern, max_words, seed=0))]
fn bpe_chunk_runs(py: Python<'_>, mut runs: PyRefMut<'_, BpeCounter>, pattern: Option<&str>, max_words: usize,
                  seed: u64) -> PyResult<BpeCounter> {
    let words = Splitter::new(pattern, false, true, "auto").map_err(err)?;
    let counts = &*runs.counts.counts();
    let table = py.allow_threads(|| chunk_runs(counts, &words, max_words, seed)).map_err(err)?;
    let none = Splitter::new(None, false, true, "auto").map_err(err)?;
    Ok(BpeCounter { counter: Arc::new(Counter::new(none, &[]).map_err(err)?), counts: CountTable::from_counts(table), pattern: None })
}
