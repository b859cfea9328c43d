"""The count-based metrics of one tokenizer on one corpus, as map + reduce on an executor (tokbench.exec).

`tokbench metrics --engine inline|process|ray`: each map task reads one shard of the corpus (whole
documents, as tokbench.assets.iter_documents: a text file is one document, a JSONL record is one),
encodes it with the tokenizer (loaded once per worker process) and returns its k-gram count tables,
orders 1..max_order, hash-partitioned by the (k-1)-gram context (rust_ext/src/table.rs). Reducer j
merges partition j of one order and returns only the integer statistics of it (k-grams, distinct,
singletons, contexts, singleton contexts, and the count histograms), or, for order 1, the merged
unigram table (at most K ids). The driver sums those integers; every float is computed from them
in a fixed order, so each value is the same whatever the engine, workers, shards or partitions.

Values: `tokens`, `bytes`, `chars`, `documents`, bytes/chars per token, `types`, `utilisation`,
Shannon and Rényi entropies and efficiencies, unigram bits/byte (the same arithmetic as
tokbench.metrics.core, hence bit-identical to `tokbench metrics` without --engine), and per order
n, distinct, contexts, singleton fractions, plug-in and Miller–Madow block and conditional
entropies (equal to tokbench.metrics.core's to rounding: the sums run in count order, not in key
order). Held-out cross-entropy, compression, fertility / continued words, unk and byte-fallback
rates and parity need the whole token stream (or the words) in one process; they are listed in
`missing` with that reason.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tokbench import _core, limits
from tokbench.errors import TokbenchError
from tokbench.metrics.core import DEFAULT_ALPHA, DEFAULT_MAX_ORDER, encode_documents, renyi_entropy, shannon_entropy

DEFAULT_PARTITIONS = 8
_ENCODERS: dict = {}  # per worker process: tokenizer -> Encoder
_STREAM_METRICS = ("fertility", "continued_words", "unk_rate", "byte_fallback_rate", "heldout_cross_entropy",
                   "compression")
_NEEDS_STREAM = "needs the whole token stream in one process: run tokbench metrics without --engine"


def _encoder(name: str):
    if name not in _ENCODERS:
        from tokbench.metrics.encoders import load_encoder

        _ENCODERS[name] = load_encoder(name)
    return _ENCODERS[name]


@dataclass(frozen=True)
class NgramTask:
    """map: encode a shard, k-gram tables of orders 1..max_order; reduce: their statistics (see above).
    kill_once: fault injection for tests, as tokbench.exec.CountTask."""

    tokenizer: str
    max_order: int = DEFAULT_MAX_ORDER
    partitions: int = DEFAULT_PARTITIONS
    kill_once: str | None = None

    @property
    def outputs(self) -> int:
        return self.max_order * self.partitions

    def __call__(self, shard) -> tuple[dict, list[bytes]]:
        from tokbench.exec.shards import ShardStats, iter_shard

        t0 = time.perf_counter()
        stats = ShardStats()
        docs = list(iter_shard(shard, stats))
        enc = encode_documents(_encoder(self.tokenizer), docs)
        blobs = _core.ngram_tables(enc.tokens.astype("<u4").tobytes(), enc.offsets.astype("<u8").tobytes(),
                                   self.max_order, self.partitions)
        if self.kill_once and not os.path.exists(self.kill_once):
            with open(self.kill_once, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        meta = {"shard": shard.index, "texts": len(docs), "documents": enc.n_docs, "bytes": enc.n_bytes,
                "chars": enc.n_chars, "tokens": enc.n_tokens, "non_utf8_lines": 0, "non_utf8_bytes": 0,
                "non_utf8_files": {}, "shipped_bytes": sum(len(b) for b in blobs), "pid": os.getpid(),
                "seconds": round(time.perf_counter() - t0, 3)}
        return meta, blobs

    def reduce(self, j: int, blobs: Sequence[bytes]) -> bytes:
        merged = _core.table_merge(list(blobs))
        order = j // self.partitions + 1
        if order == 1:
            return merged
        return json.dumps(_core.ngram_table_stats(merged, order)).encode()


def _xlogx_sum(hist: dict[int, int]) -> float:
    """sum over distinct counts c (ascending) of (keys with count c) * c log2 c."""
    return sum(m * (c * math.log2(c)) for c, m in sorted(hist.items()))


def _order_row(order: int, parts: list[dict]) -> dict:
    tot = {k: sum(p[k] for p in parts) for k in ("n", "distinct", "singletons", "contexts", "singleton_contexts")}
    joint: dict[int, int] = {}
    ctx: dict[int, int] = {}
    for p in parts:
        for c, m in p["joint"]:
            joint[c] = joint.get(c, 0) + m
        for c, m in p["ctx"]:
            ctx[c] = ctx.get(c, 0) + m
    n, distinct, contexts = tot["n"], tot["distinct"], tot["contexts"]
    row = {"order": order, "n": n, "distinct": distinct, "contexts": contexts,
           "singleton_context_fraction": tot["singleton_contexts"] / contexts if contexts else None,
           "singleton_fraction": tot["singletons"] / distinct if distinct else None}
    if n == 0:
        row.update(block_entropy=None, block_entropy_mm=None, conditional_entropy=None,
                   conditional_entropy_mm=None, missing=f"no {order}-grams inside documents")
        return row
    logn = math.log2(n)
    block = logn - _xlogx_sum(joint) / n
    ctx_h = logn - _xlogx_sum(ctx) / n
    mm = 2.0 * n * math.log(2)
    block_mm, ctx_mm = block + (distinct - 1) / mm, ctx_h + (contexts - 1) / mm
    row.update(block_entropy=block, block_entropy_mm=block_mm, conditional_entropy=block - ctx_h,
               conditional_entropy_mm=block_mm - ctx_mm)
    return row


def count_metrics(tokenizer: str, corpus: str, *, engine: str = "process", workers: int | None = None,
                  ray_address: str | None = None, max_order: int = DEFAULT_MAX_ORDER, alpha: float = DEFAULT_ALPHA,
                  text_field: str | None = None, shard_bytes: int | None = None, partitions: int | None = None,
                  progress: bool = True, _kill_once: str | None = None) -> dict:
    """The count-based metrics row of `tokenizer` on `corpus` (module docstring), counted on `engine`;
    `engine` in the row records the executor, the shards counted, shipped sizes and seconds."""
    from tokbench import exec as ex

    limits.at_least("max_order", max_order, 1, 8, what="n-gram orders")
    limits.real("alpha", alpha, 0, lo_open=True, what="the Rényi order")
    parts = limits.at_least("partitions", DEFAULT_PARTITIONS if partitions is None else partitions, 1, 4096)
    k = _encoder(tokenizer).vocab_size  # fails early on a bad tokenizer
    name = _encoder(tokenizer).name
    t0 = time.perf_counter()
    shards = ex.plan_shards([corpus], shard_bytes, text_field, documents=True)
    if not shards:
        raise TokbenchError("the corpus has no text (no non-empty documents)", path=corpus,
                            fix="pass a corpus with text")
    task = NgramTask(str(tokenizer), max_order, parts, _kill_once)
    uni = _core.BpeCounter(None)  # a plain bytes -> count table: the ids as u32 big-endian
    per_order: dict[int, list[dict]] = {o: [] for o in range(2, max_order + 1)}

    class _Into:  # run_count adds table i into into[i]: one sink per order
        def __init__(self, order):
            self.order = order

        def add_table(self, blob):
            if self.order == 1:
                uni.add_table(blob)
                per_order.setdefault(1, []).append(_core.ngram_table_stats(blob, 1))
            else:
                per_order[self.order].append(json.loads(blob))

    with ex.make_executor(engine, workers, ray_address=ray_address) as executor:
        t1 = time.perf_counter()
        record = ex.run_count(task, shards, executor, [_Into(o) for o in range(1, max_order + 1)],
                              progress=progress)
    record["seconds"] = {"plan": round(t1 - t0, 3), **record["seconds"]}
    metas = record["shards"]
    n_tokens = sum(m["tokens"] for m in metas)
    n_bytes = sum(m["bytes"] for m in metas)
    n_chars = sum(m["chars"] for m in metas)
    if n_tokens == 0:
        raise TokbenchError("the tokenizer produced no tokens for this corpus", path=corpus,
                            fix="check the corpus text and the tokenizer's normaliser")
    items = uni.items()
    ids = np.fromiter((int.from_bytes(key, "big") for key, _ in items), dtype=np.int64, count=len(items))
    counts = np.fromiter((c for _, c in items), dtype=np.int64, count=len(items))
    counts_f = counts.astype(np.float64)
    h1 = shannon_entropy(counts_f)
    renyi = renyi_entropy(counts_f, alpha)
    out = {"tokenizer": name, "corpus": corpus, "K": k, "documents": sum(m["documents"] for m in metas),
           "bytes": n_bytes, "chars": n_chars, "tokens": n_tokens, "bytes_per_token": n_bytes / n_tokens,
           "chars_per_token": n_chars / n_tokens, "types": int(ids.size), "utilisation": ids.size / k,
           "shannon_entropy": h1, "shannon_efficiency": h1 / math.log2(k), "renyi_alpha": alpha,
           "renyi_entropy": renyi, "renyi_efficiency": renyi / math.log2(k),
           "renyi_efficiency_observed": renyi / math.log2(ids.size) if ids.size > 1 else None,
           "unigram_bits_per_byte": n_tokens * h1 / n_bytes,
           "ngrams": [_order_row(o, per_order[o]) for o in range(1, max_order + 1)],
           "missing": {m: _NEEDS_STREAM for m in _STREAM_METRICS}, "engine": record}
    out.update(dict.fromkeys(_STREAM_METRICS[:-2]))
    if ids.size <= 1:
        out["missing"]["renyi_efficiency_observed"] = "one observed type: log2(1) = 0"
    return out


def run_count_metrics(tokenizers: Sequence[str], corpora: Sequence[str], *, engine: str = "process",
                      workers: int | None = None, ray_address: str | None = None, alpha: float = DEFAULT_ALPHA,
                      max_order: int = DEFAULT_MAX_ORDER, text_field: str | None = None,
                      shard_bytes: int | None = None, partitions: int | None = None, progress: bool = True) -> dict:
    """count_metrics of every tokenizer x corpus, in the layout of tokbench.metrics.run_metrics
    (`results`, `settings`, `seconds`; `parity` empty: it needs whole parallel sets in one process)."""
    if not tokenizers:
        raise TokbenchError("no tokenizer given", fix="pass --tokenizer NAME (repeatable)")
    if not corpora:
        raise TokbenchError("no corpus given", fix="pass --corpus NAME (repeatable)")
    t0 = time.perf_counter()
    rows = [count_metrics(str(t), str(c), engine=engine, workers=workers, ray_address=ray_address,
                          max_order=max_order, alpha=alpha, text_field=text_field, shard_bytes=shard_bytes,
                          partitions=partitions, progress=progress) for t in tokenizers for c in corpora]
    return {"results": rows, "parity": {},
            "settings": {"alpha": alpha, "max_order": max_order, "engine": engine, "workers": workers,
                         "ray_address": ray_address, "parity": [], "parity_missing": _NEEDS_STREAM},
            "seconds": {"total": round(time.perf_counter() - t0, 2)}}


__all__ = ["NgramTask", "count_metrics", "run_count_metrics"]
