"""Information-theoretic metrics of tokenizers on corpora (`tokbench metrics`).

`run_metrics(tokenizers, corpora, parity=...)` encodes every corpus with every tokenizer's own
library (tokbench.metrics.encoders) and returns one JSON-ready dict:

- `results`: one row per tokenizer x corpus (tokbench.metrics.core.corpus_metrics);
- `parity`: per parallel dataset (Tatoeba, UDHR), per tokenizer, premiums vs English
  (tokbench.metrics.parity);
- `text_compression`: the raw UTF-8 text of each corpus compressed (tokenizer-independent reference);
- `tokenizers`, `corpora`, `settings`, `provenance`, `seconds`.

Definitions: reports/metrics.md.
"""
from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Sequence

from tqdm import tqdm

from tokbench import limits
from tokbench.assets import iter_documents, resolve
from tokbench.errors import TokbenchError
from tokbench.metrics.core import (COMPRESSORS, DEFAULT_ALPHA, DEFAULT_MAX_ORDER, compression_metrics,
                                   corpus_metrics, count_words,
                                   encode_documents, stream_text, gini, renyi_efficiency, renyi_entropy, shannon_entropy,
                                   text_compression)
from tokbench.metrics.encoders import Encoder, load_encoder
from tokbench.metrics.parity import distinct_texts, parity as parity_of, tatoeba_units, udhr_units

__all__ = ["run_metrics", "load_encoder", "Encoder", "corpus_metrics", "renyi_entropy", "renyi_efficiency",
           "shannon_entropy", "gini", "PARITY_SETS", "flat_rows"]

PARITY_SETS = {"tatoeba": tatoeba_units, "udhr": udhr_units}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("tokbench", "tokenizers", "tiktoken", "sentencepiece", "numpy", "zstandard"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    from tokbench import _core

    out["tokbench_core"] = _core.core_version()
    return out


def _parity_kind(name: str) -> str | None:
    """'tatoeba' / 'udhr' when a corpus name or path is one of the parallel sets."""
    low = os.path.basename(str(name)).lower()
    if "tatoeba" in low:
        return "tatoeba"
    if "udhr" in low:
        return "udhr"
    return None


def _worker_count(workers: int | None, n_tokenizers: int) -> int:
    if workers is None:
        workers = os.cpu_count() or 1
    return max(1, min(int(workers), n_tokenizers))


# Per-process state of a run: set by _init (in a worker) or by run_metrics (in process).
_STATE: dict = {}


class _QueueProgress:
    """tqdm-like update(n) that forwards to the parent's progress bar through a queue."""

    def __init__(self, queue):
        self.queue = queue

    def update(self, n):
        if self.queue is not None:
            self.queue.put(int(n))

    def set_postfix_str(self, s):
        pass


def _init(state: dict, queue) -> None:
    """Worker initializer: the corpora, words and parallel units, loaded once by the parent."""
    _STATE.clear()
    _STATE.update(state)
    _STATE["progress"] = _QueueProgress(queue)
    _STATE["encoders"] = {}
    _STATE["stream_text"] = {}


def _one_tokenizer(name: str) -> tuple[list[dict], dict[str, dict], float, dict]:
    """Every corpus row and every parity result of one tokenizer (run in a worker or in process)."""
    st = _STATE
    t0 = time.perf_counter()
    e = st["encoders"].get(name) or load_encoder(name)
    docs, words, units, progress = st["docs"], st["words"], st["units"], st["progress"]
    rows, par, pending = [], {}, []
    # compression runs in a background thread (zlib, lzma and zstd release the GIL) while the next
    # corpus is encoded
    with ThreadPoolExecutor(max_workers=1) as pool:
        for c in docs:
            progress.set_postfix_str(f"{e.name} {c}")
            enc = encode_documents(e, docs[c], progress)
            text = None
            if words[c].n_char_docs < len(docs[c]):
                text = st["stream_text"].get(c)
                if text is None:
                    text = st["stream_text"][c] = stream_text(docs[c], words[c].char_docs)
            row = corpus_metrics(e, docs[c], enc, words=words[c], alpha=st["alpha"], max_order=st["max_order"],
                                 compressors=(), corpus=c, text=text)
            rows.append(row)
            pending.append(pool.submit(compression_metrics, row, enc, e.vocab_size, st["compressors"]))
            del enc
        for kind, u in units.items():
            progress.set_postfix_str(f"{e.name} parity {kind}")
            par[kind] = parity_of(e, u, dataset=kind, progress=progress)
        for f in pending:
            f.result()
    return rows, par, round(time.perf_counter() - t0, 2), e.describe()


def run_metrics(tokenizers: Sequence[str], corpora: Sequence[str], *, parity: Sequence[str] | None = None,
                alpha: float = DEFAULT_ALPHA, max_order: int = DEFAULT_MAX_ORDER,
                compressors: Sequence[str] = COMPRESSORS, limit_bytes: int | None = None,
                text_field: str | None = None, progress: bool = True, workers: int | None = None) -> dict:
    """All metrics for every tokenizer x corpus, plus parity on the parallel sets in `parity`
    (None: the corpora that are Tatoeba or UDHR).

    workers: processes that take one tokenizer at a time (None: one per CPU core, at most one per
    tokenizer; 1: everything in this process). Every tokenizer is computed by the same code on the
    same data either way, so the values do not depend on it."""
    if not tokenizers:
        raise TokbenchError("no tokenizer given", fix="pass --tokenizer NAME (repeatable)")
    if not corpora and not parity:
        raise TokbenchError("no corpus given", fix="pass --corpus NAME (repeatable)")
    limits.at_least("max_order", max_order, 1, 8, what="n-gram orders")
    limits.optional("limit_bytes", limit_bytes, 1)
    limits.optional("workers", workers, 1, what="processes")
    limits.real("alpha", alpha, 0, lo_open=True, what="the Rényi order")
    t_start = time.perf_counter()
    if parity is None:
        parity = [c for c in corpora if _parity_kind(c)]
    parity_paths = {}
    for p in parity:
        kind = _parity_kind(p) or p
        if kind not in PARITY_SETS:
            raise TokbenchError(f"unknown parallel set {p!r}", fix="use tatoeba or udhr (a name or a path)")
        parity_paths[kind] = p
    n_workers = _worker_count(workers, len(tokenizers))
    names = [str(t) for t in tokenizers]
    # in process: fail early on a bad tokenizer; with workers, each loads its own (and reports
    # a bad one as soon as it tries), so nothing is loaded twice
    encoders = {n: load_encoder(t) for n, t in zip(names, tokenizers)} if n_workers == 1 else {}
    docs: dict[str, list[str]] = {}
    words = {}
    for c in corpora:
        docs[c] = list(iter_documents(c, limit_bytes, text_field=text_field))
        if not docs[c]:
            raise TokbenchError("the corpus is empty (no non-empty documents)", path=resolve(c, kind="corpus"),
                                fix="pass a corpus with text")
        words[c] = count_words(docs[c])
    units = {kind: PARITY_SETS[kind](p) for kind, p in parity_paths.items()}
    # exactly what the encoders report: every document, every distinct parity text once
    total = sum(len(d) for c in docs for d in docs[c]) + sum(len(t) for u in units.values() for t in distinct_texts(u))
    state = {"docs": docs, "words": words, "units": units, "alpha": alpha, "max_order": max_order,
             "compressors": tuple(compressors)}
    bar = tqdm(total=total * len(names), unit="char", unit_scale=True, desc="metrics", disable=not progress)
    seconds: dict = {}
    out: dict[str, tuple] = {}
    # the tokenizer-independent text compression runs in a thread of this process meanwhile
    # (the compressors release the GIL)
    side = ThreadPoolExecutor(max_workers=1)
    t_text = time.perf_counter()

    def _text_ref():
        ref = {c: text_compression(docs[c], compressors) for c in corpora}
        seconds["text_compression"] = round(time.perf_counter() - t_text, 2)
        return ref

    text_job = side.submit(_text_ref)
    if n_workers == 1:
        _STATE.clear()
        _STATE.update(state, progress=bar, encoders=encoders, stream_text={})
        try:
            for n in names:
                out[n] = _one_tokenizer(n)
        finally:
            _STATE.clear()
    else:
        out = _run_pool(names, state, n_workers, bar)
    bar.close()
    results, par = [], {k: [] for k in units}
    described = []
    for n in names:
        rows, p, secs, desc = out[n]
        described.append(desc)
        results.extend(rows)
        for kind in units:
            par[kind].append(p[kind])
        seconds[n] = secs
    seconds["workers"] = n_workers
    text_ref = text_job.result()
    side.shutdown()
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    return {
        "tokenizers": described,
        "corpora": [{"name": c, "path": str(resolve(c, kind="corpus")), "documents": len(docs[c]),
                     "bytes": sum(r["bytes"] for r in results[:len(corpora)] if r["corpus"] == c),
                     "word_segmentation": words[c].segmentation} for c in corpora],
        "settings": {"alpha": alpha, "max_order": max_order, "compressors": list(compressors),
                     "limit_bytes": limit_bytes, "parity": list(units)},
        "results": results,
        "parity": par,
        "text_compression": text_ref,
        "provenance": {"versions": _versions(), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                            "load_average_at_end": list(os.getloadavg())}},
        "seconds": seconds,
    }


def _cost_rank(name: str) -> int:
    """Rough order of cost, most expensive first (the pool starts them first), from the format
    alone: tokenizer.json files that are not byte-level BPE (WordPiece, Unigram) run in `tokenizers`,
    SentencePiece models in `sentencepiece`; tiktoken files and byte-level BPE in the Rust encoder."""
    try:
        from tokbench.assets import resolve

        path = resolve(name, kind="tokenizer")
        text = open(path if os.path.isfile(path) else os.path.join(path, "tokenizer.json"), "rb").read(1 << 16)
    except Exception:  # noqa: BLE001 - only an ordering hint; the worker reports real errors
        return 1
    if text.lstrip().startswith(b"{"):
        return 2 if b'"ByteLevel"' in text else 0
    return 2 if b" " in text[:200] and b"\x00" not in text[:200] else 1  # tiktoken text / binary model


def _run_pool(names, state, n_workers, bar) -> dict:
    """Tokenizers on a pool of fresh processes (spawn: no inherited thread pools), the most
    expensive first; the progress of every worker flows to `bar` through a queue."""
    import multiprocessing as mp
    import threading

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()

    def pump():
        while True:
            n = queue.get()
            if n is None:
                return
            bar.update(n)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    order = sorted(range(len(names)), key=lambda i: _cost_rank(names[i]))
    out = {}
    try:
        pool = ctx.Pool(n_workers, initializer=_init, initargs=(state, queue))
        try:
            jobs = {names[i]: pool.apply_async(_one_tokenizer, (names[i],)) for i in order}
            while jobs:  # collect as they finish, so that an error stops the run at once
                done = [n for n, job in jobs.items() if job.ready()]
                for n in done:
                    out[n] = jobs.pop(n).get()  # raises the worker's error
                    bar.set_postfix_str(f"{n} done")
                if not done:
                    time.sleep(0.05)
            pool.close()  # workers exit cleanly, so their last progress updates reach the queue
            pool.join()
        finally:
            pool.terminate()
    finally:
        queue.put(None)
        pumper.join(timeout=5)
    return out


SUMMARY_COLUMNS = ["tokenizer", "corpus", "K", "documents", "bytes", "tokens", "words", "word_segmentation",
                   "bytes_per_token", "chars_per_token", "fertility", "continued_words", "unk_rate",
                   "byte_fallback_rate", "types", "utilisation", "shannon_entropy", "renyi_alpha", "renyi_entropy",
                   "renyi_efficiency", "renyi_efficiency_observed", "unigram_bits_per_byte", "gzip_bits_per_byte",
                   "zstd_bits_per_byte", "lzma_bits_per_byte", "heldout_tokens"]


def flat_rows(data: dict) -> list[dict]:
    """One flat row per tokenizer x corpus (CSV): the summary columns, then per order k
    H{k}_plugin, H{k}_mm (conditional), H{k}_heldout, N{k}, contexts{k}, singleton_ctx{k}, and
    `missing` as 'metric: reason; ...'."""
    rows = []
    for r in data["results"]:
        row = {k: r.get(k) for k in SUMMARY_COLUMNS if k in r or k.endswith("bits_per_byte")}
        for g in r["ngrams"]:
            k = g["order"]
            row[f"H{k}_plugin"] = g["conditional_entropy"]
            row[f"H{k}_mm"] = g["conditional_entropy_mm"]
            row[f"H{k}_heldout"] = g.get("heldout_bits_per_token")
            row[f"N{k}"] = g["n"]
            row[f"contexts{k}"] = g["contexts"]
            row[f"singleton_ctx{k}"] = g["singleton_context_fraction"]
        row["missing"] = "; ".join(f"{k}: {v}" for k, v in r["missing"].items())
        rows.append(row)
    return rows
