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

from tokbench.assets import iter_documents, resolve
from tokbench.errors import TokbenchError
from tokbench.metrics.core import (COMPRESSORS, DEFAULT_ALPHA, DEFAULT_MAX_ORDER, compression_metrics,
                                   corpus_metrics, count_words,
                                   encode_documents, gini, renyi_efficiency, renyi_entropy, shannon_entropy,
                                   text_compression)
from tokbench.metrics.encoders import Encoder, load_encoder
from tokbench.metrics.parity import parity as parity_of, tatoeba_units, udhr_units

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


def run_metrics(tokenizers: Sequence[str], corpora: Sequence[str], *, parity: Sequence[str] | None = None,
                alpha: float = DEFAULT_ALPHA, max_order: int = DEFAULT_MAX_ORDER,
                compressors: Sequence[str] = COMPRESSORS, limit_bytes: int | None = None,
                text_field: str | None = None, progress: bool = True) -> dict:
    """All metrics for every tokenizer x corpus, plus parity on the parallel sets in `parity`
    (None: the corpora that are Tatoeba or UDHR)."""
    if not tokenizers:
        raise TokbenchError("no tokenizer given", fix="pass --tokenizer NAME (repeatable)")
    if not corpora and not parity:
        raise TokbenchError("no corpus given", fix="pass --corpus NAME (repeatable)")
    t_start = time.perf_counter()
    if parity is None:
        parity = [c for c in corpora if _parity_kind(c)]
    parity_paths = {}
    for p in parity:
        kind = _parity_kind(p) or p
        if kind not in PARITY_SETS:
            raise TokbenchError(f"unknown parallel set {p!r}", fix="use tatoeba or udhr (a name or a path)")
        parity_paths[kind] = p
    encoders = [load_encoder(t) for t in tokenizers]  # fail early on a bad tokenizer
    docs: dict[str, list[str]] = {}
    words = {}
    for c in corpora:
        docs[c] = list(iter_documents(c, limit_bytes, text_field=text_field))
        if not docs[c]:
            raise TokbenchError("the corpus is empty (no non-empty documents)", path=resolve(c, kind="corpus"),
                                fix="pass a corpus with text")
        words[c] = count_words(docs[c])
    units = {kind: PARITY_SETS[kind](p) for kind, p in parity_paths.items()}
    total = sum(len(d) for c in docs for d in docs[c]) + sum(
        len(a) + len(b) for u in units.values() for pairs in u.values() for a, b in pairs)
    bar = tqdm(total=total * len(encoders), unit="char", unit_scale=True, desc="metrics", disable=not progress)
    results, par = [], {k: [] for k in units}
    seconds = {}
    pending = []
    # compression runs in a background thread (zlib, lzma and zstd release the GIL) while the next
    # corpus is encoded
    with ThreadPoolExecutor(max_workers=1) as pool:
        for e in encoders:
            t0 = time.perf_counter()
            for c in corpora:
                bar.set_postfix_str(f"{e.name} {c}")
                enc = encode_documents(e, docs[c], bar)
                row = corpus_metrics(e, docs[c], enc, words=words[c], alpha=alpha, max_order=max_order,
                                     compressors=(), corpus=c)
                results.append(row)
                pending.append(pool.submit(compression_metrics, row, enc, e.vocab_size, compressors))
            for kind, u in units.items():
                bar.set_postfix_str(f"{e.name} parity {kind}")
                par[kind].append(parity_of(e, u, dataset=kind, progress=bar))
            seconds[e.name] = round(time.perf_counter() - t0, 2)
        t_wait = time.perf_counter()
        for f in pending:
            f.result()
        seconds["compression_wait"] = round(time.perf_counter() - t_wait, 2)
    bar.close()
    t_text = time.perf_counter()
    text_ref = {c: text_compression(docs[c], compressors) for c in corpora}
    seconds["text_compression"] = round(time.perf_counter() - t_text, 2)
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    return {
        "tokenizers": [e.describe() for e in encoders],
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
