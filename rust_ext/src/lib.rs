//! Python bindings of the tokbench core. Keep this file thin: each module below is plain Rust,
//! usable from Rust tests without Python; this file only converts arguments, releases the GIL
//! and turns errors into ValueError.
pub mod bpe;
pub mod dynamic;
pub mod error;
pub mod factored;
pub mod ngram;
pub mod pool;
#[cfg(feature = "python")]
pub mod pyargs;
pub mod segment;
pub mod table;
pub mod token_bytes;

#[cfg(feature = "python")]
// pyo3 0.22 macros trip this lint on every PyResult return
#[allow(clippy::useless_conversion)]
mod python {
    use crate::error::CoreError;
    use crate::segment::{BpeMerges, BpeRanks, Segmenter, Unigram, Units, WordPiece};
    use crate::token_bytes::Style;
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::pybacked::PyBackedBytes;
    use pyo3::types::PyBytes;
    use pyo3::types::PyDict;
    use pyo3::types::PyString;

    /// Inputs at least this long are segmented with the GIL released.
    const RELEASE_GIL_BYTES: usize = 4096;

    fn value_error(e: CoreError) -> PyErr {
        PyValueError::new_err(e.0)
    }

    fn to_id(v: i64, what: &str) -> PyResult<u32> {
        u32::try_from(v).map_err(|_| PyValueError::new_err(format!("{what}: invalid id {v}")))
    }

    fn to_ids(v: &[i64], what: &str) -> PyResult<Vec<u32>> {
        v.iter()
            .enumerate()
            .map(|(i, &x)| to_id(x, &format!("{what}[{i}]")))
            .collect()
    }

    /// The optional byte-fallback ids and unk id every Segmenter constructor takes.
    fn fallback_args(
        byte_fallback: Option<Vec<i64>>,
        unk_id: Option<i64>,
    ) -> PyResult<(Option<Vec<u32>>, Option<u32>)> {
        let bf = byte_fallback
            .map(|v| to_ids(&v, "byte_fallback"))
            .transpose()?;
        let unk = unk_id.map(|u| to_id(u, "unk_id")).transpose()?;
        Ok((bf, unk))
    }

    fn owned_pieces(pieces: Vec<Option<PyBackedBytes>>) -> Vec<Option<Vec<u8>>> {
        pieces.into_iter().map(|p| p.map(|b| b.to_vec())).collect()
    }

    fn parse<T: std::str::FromStr<Err = CoreError>>(s: &str) -> PyResult<T> {
        s.parse().map_err(value_error)
    }

    /// Version of the compiled core, for provenance records.
    #[pyfunction]
    fn core_version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// Exact bytes each token string stands for under a naming convention (see _core.pyi).
    #[pyfunction]
    fn token_bytes<'py>(
        py: Python<'py>,
        tokens: Vec<Bound<'py, PyString>>,
        style: &str,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let style: Style = parse(style)?;
        let tokens = crate::pyargs::texts(&tokens)?;
        Ok(tokens
            .iter()
            .map(|t| crate::token_bytes::token_bytes(t, style).map(|b| PyBytes::new_bound(py, &b)))
            .collect())
    }

    /// Splits byte strings into ids of one vocabulary the way its tokenizer model would.
    #[pyclass(frozen, name = "Segmenter", module = "tokbench._core")]
    struct PySegmenter {
        inner: Segmenter,
    }

    #[pymethods]
    impl PySegmenter {
        #[staticmethod]
        #[pyo3(signature = (pieces, merges, units, byte_fallback=None, unk_id=None, ignore_merges=false, fuse_unk=false))]
        fn bpe_merges(
            pieces: Vec<Option<PyBackedBytes>>,
            merges: Vec<Vec<i64>>,
            units: &str,
            byte_fallback: Option<Vec<i64>>,
            unk_id: Option<i64>,
            ignore_merges: bool,
            fuse_unk: bool,
        ) -> PyResult<Self> {
            let units: Units = parse(units)?;
            let merges = merges
                .iter()
                .enumerate()
                .map(|(i, m)| match m[..] {
                    [l, r] => Ok((
                        to_id(l, &format!("merges[{i}]"))?,
                        to_id(r, &format!("merges[{i}]"))?,
                    )),
                    _ => Err(PyValueError::new_err(format!(
                        "merges[{i}] must be a pair of ids, got {} items",
                        m.len()
                    ))),
                })
                .collect::<PyResult<Vec<_>>>()?;
            let (bf, unk) = fallback_args(byte_fallback, unk_id)?;
            let pieces = owned_pieces(pieces);
            BpeMerges::new(
                &pieces,
                &merges,
                units,
                bf.as_deref(),
                unk,
                ignore_merges,
                fuse_unk,
            )
            .map(|m| PySegmenter {
                inner: Segmenter::BpeMerges(m),
            })
            .map_err(value_error)
        }

        #[staticmethod]
        #[pyo3(signature = (pieces, ranks, units, byte_fallback=None, unk_id=None, ignore_merges=false, fuse_unk=false))]
        fn bpe_ranks(
            pieces: Vec<Option<PyBackedBytes>>,
            ranks: Vec<i64>,
            units: &str,
            byte_fallback: Option<Vec<i64>>,
            unk_id: Option<i64>,
            ignore_merges: bool,
            fuse_unk: bool,
        ) -> PyResult<Self> {
            let units: Units = parse(units)?;
            let (bf, unk) = fallback_args(byte_fallback, unk_id)?;
            let pieces = owned_pieces(pieces);
            BpeRanks::new(
                &pieces,
                &ranks,
                units,
                bf.as_deref(),
                unk,
                ignore_merges,
                fuse_unk,
            )
            .map(|m| PySegmenter {
                inner: Segmenter::BpeRanks(m),
            })
            .map_err(value_error)
        }

        #[staticmethod]
        #[pyo3(signature = (pieces, scores, byte_fallback=None, unk_id=None))]
        fn unigram(
            pieces: Vec<Option<PyBackedBytes>>,
            scores: Vec<f64>,
            byte_fallback: Option<Vec<i64>>,
            unk_id: Option<i64>,
        ) -> PyResult<Self> {
            let (bf, unk) = fallback_args(byte_fallback, unk_id)?;
            let pieces = owned_pieces(pieces);
            Unigram::new(&pieces, &scores, bf.as_deref(), unk)
                .map(|m| PySegmenter {
                    inner: Segmenter::Unigram(m),
                })
                .map_err(value_error)
        }

        #[staticmethod]
        #[pyo3(signature = (pieces, word_start, unk_id, max_chars=100))]
        fn wordpiece(
            pieces: Vec<Option<PyBackedBytes>>,
            word_start: Vec<bool>,
            unk_id: i64,
            max_chars: i64,
        ) -> PyResult<Self> {
            let unk = to_id(unk_id, "unk_id")?;
            let max_chars = usize::try_from(max_chars).map_err(|_| {
                PyValueError::new_err(format!("max_chars must be >= 0, got {max_chars}"))
            })?;
            let pieces = owned_pieces(pieces);
            WordPiece::new(&pieces, &word_start, unk, max_chars)
                .map(|m| PySegmenter {
                    inner: Segmenter::WordPiece(m),
                })
                .map_err(value_error)
        }

        #[pyo3(signature = (data, word_start=true))]
        fn segment(&self, py: Python<'_>, data: &[u8], word_start: bool) -> PyResult<Vec<u32>> {
            let run = || self.inner.segment(data, word_start);
            let out = if data.len() >= RELEASE_GIL_BYTES {
                py.allow_threads(run)
            } else {
                run()
            };
            out.map_err(value_error)
        }

        #[pyo3(signature = (data, word_start=None, num_threads=0))]
        fn segment_batch(
            &self,
            py: Python<'_>,
            data: Vec<PyBackedBytes>,
            word_start: Option<Vec<bool>>,
            num_threads: i64,
        ) -> PyResult<Vec<Vec<u32>>> {
            let threads = crate::pyargs::threads(num_threads)?;
            let refs: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
            py.allow_threads(|| {
                self.inner
                    .segment_batch(&refs, word_start.as_deref(), threads)
            })
            .map_err(value_error)
        }

        fn __repr__(&self) -> String {
            let kind = match &self.inner {
                Segmenter::BpeMerges(_) => "bpe_merges",
                Segmenter::BpeRanks(_) => "bpe_ranks",
                Segmenter::Unigram(_) => "unigram",
                Segmenter::WordPiece(_) => "wordpiece",
            };
            format!("<tokbench._core.Segmenter {kind}>")
        }
    }

    // ---- n-gram statistics (ngram.rs) -------------------------------------------------------

    fn u32_le(data: &[u8], what: &str) -> PyResult<Vec<u32>> {
        if data.len() % 4 != 0 {
            return Err(PyValueError::new_err(format!(
                "{what}: {} bytes is not a whole number of uint32",
                data.len()
            )));
        }
        Ok(data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn u64_le(data: &[u8], what: &str) -> PyResult<Vec<u64>> {
        if data.len() % 8 != 0 {
            return Err(PyValueError::new_err(format!(
                "{what}: {} bytes is not a whole number of uint64",
                data.len()
            )));
        }
        Ok(data
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    fn to_order(max_order: i64) -> PyResult<usize> {
        usize::try_from(max_order)
            .map_err(|_| PyValueError::new_err(format!("max_order must be >= 1, got {max_order}")))
    }

    /// Plug-in / Miller–Madow block and conditional entropies of orders 1..=max_order.
    #[pyfunction]
    fn ngram_stats<'py>(
        py: Python<'py>,
        tokens: PyBackedBytes,
        offsets: PyBackedBytes,
        max_order: i64,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let k = to_order(max_order)?;
        let stats = py.allow_threads(|| -> PyResult<_> {
            let t = u32_le(&tokens, "tokens")?;
            let o = u64_le(&offsets, "offsets")?;
            crate::ngram::ngram_stats(&t, &o, k).map_err(value_error)
        })?;
        stats.iter().map(|s| stats_dict(py, s)).collect()
    }

    /// Held-out bits/token of interpolated Witten–Bell k-gram models, orders 1..=max_order.
    #[pyfunction]
    fn ngram_cross_entropy<'py>(
        py: Python<'py>,
        train: PyBackedBytes,
        train_offsets: PyBackedBytes,
        test: PyBackedBytes,
        test_offsets: PyBackedBytes,
        max_order: i64,
        vocab_size: u64,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let k = to_order(max_order)?;
        let res = py.allow_threads(|| -> PyResult<_> {
            let tr = u32_le(&train, "train")?;
            let tro = u64_le(&train_offsets, "train_offsets")?;
            let te = u32_le(&test, "test")?;
            let teo = u64_le(&test_offsets, "test_offsets")?;
            crate::ngram::cross_entropy(&tr, &tro, &te, &teo, k, vocab_size).map_err(value_error)
        })?;
        res.iter().map(|c| xent_dict(py, c)).collect()
    }

    /// The k-gram counts shared by ngram_stats and ngram_table_stats dicts.
    fn set_counts(d: &Bound<'_, PyDict>, v: [u64; 5]) -> PyResult<()> {
        for (k, x) in ["n", "distinct", "singletons", "contexts", "singleton_contexts"].iter().zip(v) {
            d.set_item(*k, x)?;
        }
        Ok(())
    }

    fn stats_dict<'py>(
        py: Python<'py>,
        s: &crate::ngram::OrderStats,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new_bound(py);
        d.set_item("order", s.order)?;
        set_counts(&d, [s.n, s.distinct, s.singletons, s.contexts, s.singleton_contexts])?;
        d.set_item("block_entropy", s.block_entropy)?;
        d.set_item("block_entropy_mm", s.block_entropy_mm)?;
        d.set_item("conditional_entropy", s.conditional_entropy)?;
        d.set_item("conditional_entropy_mm", s.conditional_entropy_mm)?;
        Ok(d)
    }

    fn xent_dict<'py>(
        py: Python<'py>,
        c: &crate::ngram::CrossEntropy,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new_bound(py);
        d.set_item("order", c.order)?;
        d.set_item("bits_per_token", c.bits_per_token)?;
        d.set_item("total_bits", c.total_bits)?;
        d.set_item("n", c.n)?;
        d.set_item("unseen", c.unseen)?;
        Ok(d)
    }

    /// ngram_stats of the whole stream and, when `heldout`, ngram_cross_entropy of the held-out
    /// parts (`cuts[d]`: where document d's held-out part starts) in one pass: (stats, xent or None).
    #[pyfunction]
    #[allow(clippy::type_complexity)]
    fn ngram_metrics<'py>(
        py: Python<'py>,
        tokens: PyBackedBytes,
        offsets: PyBackedBytes,
        cuts: PyBackedBytes,
        max_order: i64,
        vocab_size: u64,
        heldout: bool,
    ) -> PyResult<(Vec<Bound<'py, PyDict>>, Option<Vec<Bound<'py, PyDict>>>)> {
        let k = to_order(max_order)?;
        let (stats, xent) = py.allow_threads(|| -> PyResult<_> {
            let t = u32_le(&tokens, "tokens")?;
            let o = u64_le(&offsets, "offsets")?;
            let c = u64_le(&cuts, "cuts")?;
            crate::ngram::ngram_metrics(&t, &o, &c, k, vocab_size, heldout).map_err(value_error)
        })?;
        let stats = stats
            .iter()
            .map(|s| stats_dict(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        let xent = match xent {
            None => None,
            Some(v) => Some(v.iter().map(|c| xent_dict(py, c)).collect::<PyResult<Vec<_>>>()?),
        };
        Ok((stats, xent))
    }

    fn add_ngram(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(ngram_metrics, m)?)?;
        m.add_function(wrap_pyfunction!(ngram_stats, m)?)?;
        m.add_function(wrap_pyfunction!(ngram_cross_entropy, m)?)?;
        Ok(())
    }
    // ---- end n-gram statistics ----------------------------------------------------------------

    // ---- dynamic batch merging (dynamic.rs) --------------------------------------------------
    type MergeOut = (Vec<Vec<u32>>, Vec<Vec<u32>>, Vec<(u32, u32, u32, u32)>, Vec<usize>);

    /// One batch merge (see _core.pyi; base_bytes: uint32 little-endian): (merged seqs, constituents per dynamic token, merges, lengths).
    #[pyfunction]
    #[pyo3(signature = (seqs, cut, base_bytes, max_merges=None, target_len=None, max_constituents=0,
                        max_bytes=0, min_count=1))]
    #[allow(clippy::too_many_arguments)]
    fn dynamic_merge(
        py: Python<'_>,
        seqs: Vec<Vec<u32>>,
        cut: Vec<Vec<bool>>,
        base_bytes: &[u8],
        max_merges: Option<usize>,
        target_len: Option<usize>,
        max_constituents: usize,
        max_bytes: usize,
        min_count: usize,
    ) -> PyResult<MergeOut> {
        let base_bytes = u32_le(base_bytes, "base_bytes")?;
        let cfg = crate::dynamic::MergeConfig { max_merges, target_len, max_constituents, max_bytes, min_count };
        let r = py
            .allow_threads(|| crate::dynamic::merge_batch(&seqs, &cut, &base_bytes, &cfg))
            .map_err(value_error)?;
        Ok((r.seqs, r.tokens, r.merges, r.lengths))
    }
    // ---- end dynamic batch merging --------------------------------------------------------------

    // ---- count tables (table.rs): what map tasks ship and reducers merge ------------------------
    /// reduce: merge count-table blobs of one partition into one blob (GIL released).
    #[pyfunction]
    fn table_merge<'py>(py: Python<'py>, blobs: Vec<PyBackedBytes>) -> PyResult<Bound<'py, PyBytes>> {
        let out = py.allow_threads(|| {
            let refs: Vec<&[u8]> = blobs.iter().map(|b| &b[..]).collect();
            crate::table::merge(&refs)
        });
        Ok(PyBytes::new_bound(py, &out.map_err(PyValueError::new_err)?))
    }

    /// The header of a count-table blob (checksum checked): partition, partitions, keys, total.
    #[pyfunction]
    fn table_info<'py>(py: Python<'py>, blob: &[u8]) -> PyResult<Bound<'py, PyDict>> {
        let h = crate::table::header(blob).map_err(PyValueError::new_err)?;
        let d = PyDict::new_bound(py);
        d.set_item("partition", h.partition)?;
        d.set_item("partitions", h.partitions)?;
        d.set_item("keys", h.keys)?;
        d.set_item("total", h.total)?;
        d.set_item("bytes", blob.len())?;
        Ok(d)
    }
    /// map of `tokbench metrics` on an executor: k-gram tables of orders 1..=max_order of the token
    /// stream (u32 little-endian tokens, u64 offsets), order-major, `partitions` blobs an order.
    #[pyfunction]
    fn ngram_tables<'py>(py: Python<'py>, tokens: PyBackedBytes, offsets: PyBackedBytes, max_order: i64,
                         partitions: u32) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let k = to_order(max_order)?;
        let blobs = py.allow_threads(|| -> PyResult<_> {
            let t = u32_le(&tokens, "tokens")?;
            let o = u64_le(&offsets, "offsets")?;
            crate::table::ngram_tables(&t, &o, k, partitions).map_err(PyValueError::new_err)
        })?;
        Ok(blobs.iter().map(|b| PyBytes::new_bound(py, b)).collect())
    }

    /// The integer statistics of a merged partition of an order-`order` k-gram table: n, distinct,
    /// singletons, contexts, singleton_contexts, joint and ctx ([(count, how many)], count order).
    #[pyfunction]
    fn ngram_table_stats<'py>(py: Python<'py>, blob: &[u8], order: usize) -> PyResult<Bound<'py, PyDict>> {
        let p = py.allow_threads(|| crate::table::ngram_part(blob, order)).map_err(PyValueError::new_err)?;
        let d = PyDict::new_bound(py);
        set_counts(&d, [p.n, p.distinct, p.singletons, p.contexts, p.singleton_contexts])?;
        d.set_item("joint", p.joint.into_iter().collect::<Vec<_>>())?;
        d.set_item("ctx", p.ctx.into_iter().collect::<Vec<_>>())?;
        Ok(d)
    }
    // ---- end count tables -------------------------------------------------------------------------

    #[pymodule]
    fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(core_version, m)?)?;
        m.add_function(wrap_pyfunction!(token_bytes, m)?)?;
        m.add_class::<PySegmenter>()?;
        add_ngram(m)?;
        m.add_function(wrap_pyfunction!(dynamic_merge, m)?)?;
        m.add_function(wrap_pyfunction!(table_merge, m)?)?;
        m.add_function(wrap_pyfunction!(table_info, m)?)?;
        m.add_function(wrap_pyfunction!(ngram_tables, m)?)?;
        m.add_function(wrap_pyfunction!(ngram_table_stats, m)?)?;
        crate::bpe::py::register(m)?;
        crate::factored::py::register(m)?;
        Ok(())
    }
}
