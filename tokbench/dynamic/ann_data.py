"""Inputs of the ANN evaluation: a huge output table made of a model's real head rows plus rows for merged tokens
of real text, and real final hidden states of the model as queries. Both are cached under a folder (cache_dir=;
default $TOKBENCH_ANN_CACHE or /tmp/tokbench-ann; False: none), written to a temporary sibling and renamed.

Rows, in order: the model's n_base head rows (ids 0..n_base-1); then the dynamic tokens that batch merging to
exhaustion (word mode, batches of 32 lines) makes on the corpora, most frequent first; then, to reach the size
asked for, the most frequent token n-grams (n = 2..4, inside lines) of the same corpora not already present.
A merged token's row is the mean (the paper's FVT baseline) or position_mean of its constituents' head rows
(tokbench.embeddings). Stored as float16; the coefficients that made the merged rows (CSR over the base ids) are
kept beside them, for the exact factored index (tokbench.dynamic.factored).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokbench import limits
from tokbench.dynamic.ann import KINDS
from tokbench.errors import TokbenchError

ROW_CORPORA = ("wikitext2-test", "wikitext2-valid", "tinyshakespeare", "tinystories", "gutenberg", "gsm8k-train",
               "code-python", "code-rust", "code-cpp", "bible-mark", "udhr", "tatoeba")
ROW_METHODS = ("mean", "position_mean")
INDEX_KINDS = KINDS + ("factored",)  # the FAISS kinds and the factored index
CACHE = None  # the cache folder: $TOKBENCH_ANN_CACHE, else <tmp>/tokbench-ann (read at each call)
_NGRAM = (2, 3, 4)


@dataclass
class HeadRows:
    """The output table: rows (n, d) float16, n_base real rows, then n_dynamic merged-batch tokens, then n-grams.
    coeffs: (indptr, indices, data) CSR of the merged rows over the base ids (row r is output n_base + r; the
    rows were made in float32 from these and then stored as float16); constituents: the base ids per merged row
    (None when read from the cache: the CSR holds them)."""

    rows: np.ndarray
    bias: np.ndarray | None
    n_base: int
    n_dynamic: int
    n_ngram: int
    constituents: list | None = None
    coeffs: tuple | None = None


def model_dir(model) -> Path:
    from tokbench.assets import resolve

    p = Path(model)
    return p if p.is_dir() else Path(resolve(str(model), kind="model"))


def load_head(model) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """The output head (n, d) float32 of a model folder or asset (the input embedding when tied) and its bias
    (None: the Llama-family heads have none)."""
    from tokbench.vocab.model_io import open_model_folder

    folder = model_dir(model)
    try:
        mf = open_model_folder(folder)
    except TokbenchError as exc:
        raise TokbenchError(f"the model has no embedding matrix tokbench can find ({exc})", path=folder,
                            fix="use a causal LM folder with safetensors weights") from None
    return mf.read_head(), None, folder


def _atomic_save(path: Path, arr: np.ndarray, meta: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def cache_folder(cache_dir=CACHE) -> Path | None:
    """cache_dir, or when it is None $TOKBENCH_ANN_CACHE or <tmp>/tokbench-ann; False: no cache."""
    if cache_dir is False:
        return None
    if cache_dir is None:
        return Path(os.environ.get("TOKBENCH_ANN_CACHE") or Path(tempfile.gettempdir()) / "tokbench-ann")
    return Path(cache_dir)


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def merged_constituents(tok, corpora, *, batch: int = 32, progress: bool = False):
    """(dynamic tokens as constituent tuples, most frequent first; n-gram counts {n: (keys, counts)}) of corpora."""
    from tqdm import tqdm

    from tokbench.dynamic.merge import boundary_mask, merge_ids
    from tokbench.dynamic.stats import corpus_lines

    dyn: Counter = Counter()
    grams: dict[int, list] = {n: [] for n in _NGRAM}
    for corpus in tqdm(corpora, desc="merge corpora", disable=not progress, leave=False):
        lines = corpus_lines(corpus)
        for b0 in range(0, len(lines), batch):
            texts = lines[b0:b0 + batch]
            ids = tok.bpe.encode_ordinary_batch(texts)
            cut = boundary_mask(tok, ids, "word")
            _, cons, _, _ = merge_ids(ids, cut, tok.base_bytes())
            dyn.update(tuple(c) for c in cons)
            for seq in ids:
                a = np.asarray(seq, dtype=np.uint64)
                for n in _NGRAM:
                    if len(a) >= n:
                        key = np.zeros(len(a) - n + 1, np.uint64)
                        for j in range(n):
                            key = (key << np.uint64(16)) | a[j:len(a) - n + 1 + j]
                        grams[n].append(key)
    counted = {}
    for n in _NGRAM:
        keys, counts = np.unique(np.concatenate(grams[n]) if grams[n] else np.zeros(0, np.uint64), return_counts=True)
        counted[n] = (keys, counts)
    order = sorted(dyn.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))
    return [c for c, _ in order], counted


def _ngram_tuple(key: int, n: int) -> tuple:
    return tuple((key >> (16 * (n - 1 - j))) & 0xFFFF for j in range(n))


def head_rows(model="smollm2-135m", n_rows: int = 1_000_000, *, corpora=ROW_CORPORA, method: str = "mean",
              cache_dir=CACHE, progress: bool = False) -> HeadRows:
    """The output table of `n_rows` rows for `model` (see the module docstring), from the cache when present."""
    from tokbench.dynamic.merge import DynamicTokenizer
    from tokbench.embeddings import position_mean_rows, subword_rows

    if method not in ROW_METHODS:
        raise TokbenchError(f"unknown row method {method!r}", fix=f"use one of {', '.join(ROW_METHODS)}")
    head, bias, folder = load_head(model)
    n_base, d = head.shape
    n_rows = limits.at_least("rows", n_rows, n_base, 20_000_000, what=f"at least the model's {n_base:,} rows")
    parts = {"model": str(folder.resolve()), "rows": n_rows, "corpora": list(corpora), "method": method, "v": 2}
    folder_c = cache_folder(cache_dir)
    path = None if folder_c is None else folder_c / f"rows-{_key(parts)}.npy"
    cpath = None if path is None else path.with_name(path.stem + "-coeffs.npy")
    if path is not None and path.exists() and cpath.exists():
        meta = json.loads(path.with_suffix(".json").read_text())
        packed = np.load(cpath)
        n_ptr = n_rows - n_base + 1
        coeffs = (packed[:n_ptr].astype(np.int64), packed[n_ptr:n_ptr + meta["nnz"]].astype(np.int32),
                  packed[n_ptr + meta["nnz"]:].astype(np.int32).view(np.float32))
        return HeadRows(np.load(path), bias, n_base, meta["n_dynamic"], meta["n_ngram"], coeffs=coeffs)
    if n_rows == n_base:
        return HeadRows(head.astype(np.float16), bias, n_base, 0, 0, [],
                        (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)))
    tok_path = folder / "tokenizer.json"
    if not tok_path.exists():
        raise TokbenchError("the model folder has no tokenizer.json", path=folder, fix="use a model folder with its tokenizer")
    tok = DynamicTokenizer.load(tok_path)
    if tok.n_base > n_base or n_base > 65536:
        raise TokbenchError(f"the tokenizer has {tok.n_base:,} ids for {n_base:,} head rows (at most 65,536 supported)",
                            path=folder, fix="use a model whose tokenizer matches its head")
    dyn, grams = merged_constituents(tok, corpora, progress=progress)
    need = n_rows - n_base
    chosen = dyn[:need]
    seen = set(chosen)
    if len(chosen) < need:
        keys = np.concatenate([grams[n][0] for n in _NGRAM])
        lens = np.concatenate([np.full(len(grams[n][0]), n) for n in _NGRAM])
        counts = np.concatenate([grams[n][1] for n in _NGRAM])
        for j in np.lexsort((keys, lens, -counts.astype(np.int64))):
            t = _ngram_tuple(int(keys[j]), int(lens[j]))
            if t not in seen:
                seen.add(t)
                chosen.append(t)
                if len(chosen) == need:
                    break
    if len(chosen) < need:
        raise TokbenchError(f"the corpora give only {len(chosen):,} distinct merged tokens, {need:,} needed",
                            fix="ask for fewer rows or add corpora")
    n_dyn = min(len(dyn), need)
    rows = np.empty((n_rows, d), np.float16)
    rows[:n_base] = head
    fallback = head.mean(axis=0)
    from tqdm import tqdm

    for a in tqdm(range(0, need, 65536), desc="merged rows", disable=not progress, leave=False):
        dec = [list(c) for c in chosen[a:a + 65536]]
        block = subword_rows(dec, head, fallback) if method == "mean" else position_mean_rows(dec, head, fallback)[0]
        rows[n_base + a:n_base + a + len(dec)] = block
    from tokbench.dynamic.factored import combine
    from tokbench.embeddings.subword import linear_decay

    coeffs = combine([(c, None if method == "mean" else linear_decay(len(c))) for c in chosen], n_base)
    out = HeadRows(rows, bias, n_base, n_dyn, need - n_dyn, chosen, coeffs)
    if path is not None:  # the CSR as one int64 array (indptr, indices, float32 bits of data), then the rows
        _atomic_save(cpath, np.concatenate([coeffs[0], coeffs[1].astype(np.int64),
                                            coeffs[2].view(np.int32).astype(np.int64)]))
        _atomic_save(path, rows, parts | {"n_dynamic": n_dyn, "n_ngram": need - n_dyn, "nnz": len(coeffs[1])})
    return out


def hidden_states(model="smollm2-135m", corpus="wikitext2-test", *, positions: int = 512, window: int = 128,
                  cache_dir=CACHE, threads: int | None = None) -> np.ndarray:
    """Final hidden states (after the last norm: what the head multiplies) of the model at the first `positions`
    positions of consecutive `window`-token windows of the corpus, (positions, d) float32; cached."""
    limits.at_least("positions", positions, 1, 100_000)
    limits.at_least("window", window, 2, 8192)
    folder = model_dir(model)
    parts = {"model": str(folder.resolve()), "corpus": str(corpus), "positions": positions, "window": window, "v": 1}
    folder_c = cache_folder(cache_dir)
    path = None if folder_c is None else folder_c / f"queries-{_key(parts)}.npy"
    if path is not None and path.exists():
        return np.load(path)
    import torch
    from transformers import AutoModelForCausalLM

    from tokbench.dynamic.fidelity import windows_from_corpus
    from tokbench.dynamic.merge import DynamicTokenizer

    if threads:
        torch.set_num_threads(limits.threads(threads, "threads"))
    tok = DynamicTokenizer.load(folder / "tokenizer.json")
    n_win = -(-positions // window)
    wins = windows_from_corpus(tok, corpus, n_win, window, 0)
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    except Exception as exc:  # transformers raises many types
        raise TokbenchError(f"the model does not load with transformers ({exc})", path=folder,
                            fix="check config.json and the weights") from None
    with torch.inference_mode():
        ids = torch.tensor([p for p, _ in wins], dtype=torch.long)
        hs = lm.model(input_ids=ids).last_hidden_state.reshape(-1, lm.config.hidden_size)[:positions]
    out = np.ascontiguousarray(hs.float().numpy())
    if path is not None:
        _atomic_save(path, out, parts)
    return out


def run_ann(model="smollm2-135m", n_rows: int = 1_000_000, *, kind: str = "ivf", storage: str = "fp16",
            queries: int = 256, k: int = 20, threads: int = 2, rerank: int = 64, nlist: int | None = None,
            nprobe: int = 64, m: int = 32, ef_construction: int = 64, ef_search: int = 256, method: str = "mean",
            baseline: bool = True, cosine: bool = True, repeats: int = 30, progress: bool = False) -> dict:
    """Build one index over `n_rows` rows of `model` (head_rows) and evaluate it on `queries` real hidden states
    (hidden_states) against the exact reference: what `tokbench dynamic ann` prints. baseline: also time the exact
    fp32 matmul (a second copy of the rows in memory); cosine: also the exact cosine top-k's recall; repeats:
    timed searches at batch 1 (a quarter of them at batch 32).

    kind "factored" (tokbench.dynamic.factored) scores the merged rows from their coefficients over the head: its
    reference is the exact matmul over the float32 rows those coefficients stand for (materialised once, 4 bytes
    per value), and "vs_fp16_rows" adds its agreement with the exact top-k of the fp16-stored table."""
    from tokbench.dynamic.ann import (STORAGES, OutputIndex, blas_threads, evaluate, exact_latency, exact_topk,
                                      measure, recall_at, rss_bytes)
    from tokbench.dynamic.factored import FactoredIndex

    if kind not in INDEX_KINDS:
        raise TokbenchError(f"unknown index {kind!r}", fix=f"use one of {', '.join(INDEX_KINDS)}")
    if storage not in STORAGES:
        raise TokbenchError(f"unknown storage {storage!r}", fix=f"use one of {', '.join(STORAGES)}")
    limits.at_least("queries", queries, 1, 100_000)
    limits.at_least("k", k, 1, 1024)
    limits.threads(threads, "threads")
    limits.at_least("repeats", repeats, 1, 100_000)
    hr = head_rows(model, n_rows, method=method, progress=progress)
    h = hidden_states(model, positions=queries, threads=threads)
    rows = hr.rows
    out = {"model": str(model), "rows": rows.shape[0], "dim": rows.shape[1], "n_base": hr.n_base,
           "n_dynamic": hr.n_dynamic, "n_ngram": hr.n_ngram, "row_storage": "fp16", "queries": len(h), "k": k,
           "threads": threads}
    ix = FactoredIndex(load_head(model)[0], hr.coeffs, hr.bias, threads=threads) if kind == "factored" else None
    with blas_threads(threads):
        ex16 = exact_topk(rows, hr.bias, h, k)
        table = ix.materialize() if ix is not None else None  # the float32 rows the coefficients stand for
        ex = ex16 if table is None else exact_topk(table, hr.bias, h, k)
        out["exact_seconds"] = ex.seconds
        if cosine:
            cos = exact_topk(rows, None, h, k, metric="cosine")
            out["cosine"] = {f"recall@{k}": recall_at(cos.ids, ex.ids, k),
                             "top1": float(np.mean(cos.ids[:, 0] == ex.ids[:, 0]))}
        if baseline:
            r32 = rows.astype(np.float32) if table is None else table
            out["exact"] = exact_latency(r32, hr.bias, h, k, repeats=max(1, repeats // 3))
            del r32
    del table
    if ix is None:
        ix = OutputIndex(rows, hr.bias, kind=kind, storage=storage, nlist=nlist, nprobe=nprobe, m=m,
                         ef_construction=ef_construction, ef_search=ef_search, rerank=rerank, threads=threads,
                         progress=progress)
    out["index"] = measure(ix, h, ex, k, repeats=repeats)
    if kind == "factored":
        ids, scores = ix.search(h, k)
        out["index"]["max_abs_logit_diff"] = float(np.abs(scores - ex.scores).max())
        out["index"]["vs_fp16_rows"] = evaluate(ix, h, ex16, k)
    if baseline:
        out["speedup_b1"] = out["exact"]["latency_b1_s"] / out["index"]["latency_b1_s"]
    out["rss_bytes"], out["peak_rss_bytes"] = rss_bytes()
    return out


__all__ = ["CACHE", "INDEX_KINDS", "ROW_CORPORA", "ROW_METHODS", "HeadRows", "head_rows", "hidden_states", "load_head",
           "merged_constituents", "run_ann"]
