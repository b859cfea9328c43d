"""Inputs of the ANN evaluation: a huge output table made of a model's real head rows plus rows for merged tokens
of real text, and real final hidden states of the model as queries. Both are cached under a folder (default
/tmp/tokbench-ann), written to a temporary sibling and renamed.

Rows, in order: the model's n_base head rows (ids 0..n_base-1); then the dynamic tokens that batch merging to
exhaustion (word mode, batches of 32 lines) makes on the corpora, most frequent first; then, to reach the size
asked for, the most frequent token n-grams (n = 2..4, inside lines) of the same corpora not already present.
A merged token's row is the mean (the paper's FVT baseline) or position_mean of its constituents' head rows
(tokbench.embeddings). Stored as float16.
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
from tokbench.errors import TokbenchError

ROW_CORPORA = ("wikitext2-test", "wikitext2-valid", "tinyshakespeare", "tinystories", "gutenberg", "gsm8k-train",
               "code-python", "code-rust", "code-cpp", "bible-mark", "udhr", "tatoeba")
ROW_METHODS = ("mean", "position_mean")
CACHE = Path(tempfile.gettempdir()) / "tokbench-ann"
_NGRAM = (2, 3, 4)


@dataclass
class HeadRows:
    """The output table: rows (n, d) float16, n_base real rows, then n_dynamic merged-batch tokens, then n-grams."""

    rows: np.ndarray
    bias: np.ndarray | None
    n_base: int
    n_dynamic: int
    n_ngram: int
    constituents: list | None = None


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
              cache_dir: Path | None = CACHE, progress: bool = False) -> HeadRows:
    """The output table of `n_rows` rows for `model` (see the module docstring), from the cache when present."""
    from tokbench.dynamic.merge import DynamicTokenizer
    from tokbench.embeddings import position_mean_rows, subword_rows

    if method not in ROW_METHODS:
        raise TokbenchError(f"unknown row method {method!r}", fix=f"use one of {', '.join(ROW_METHODS)}")
    head, bias, folder = load_head(model)
    n_base, d = head.shape
    n_rows = limits.at_least("rows", n_rows, n_base, 20_000_000, what=f"at least the model's {n_base:,} rows")
    parts = {"model": str(folder.resolve()), "rows": n_rows, "corpora": list(corpora), "method": method, "v": 1}
    path = None if cache_dir is None else Path(cache_dir) / f"rows-{_key(parts)}.npy"
    if path is not None and path.exists():
        meta = json.loads(path.with_suffix(".json").read_text())
        return HeadRows(np.load(path), bias, n_base, meta["n_dynamic"], meta["n_ngram"])
    if n_rows == n_base:
        return HeadRows(head.astype(np.float16), bias, n_base, 0, 0, [])
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
    out = HeadRows(rows, bias, n_base, n_dyn, need - n_dyn, chosen)
    if path is not None:
        _atomic_save(path, rows, parts | {"n_dynamic": n_dyn, "n_ngram": need - n_dyn})
    return out


def hidden_states(model="smollm2-135m", corpus="wikitext2-test", *, positions: int = 512, window: int = 128,
                  cache_dir: Path | None = CACHE, threads: int | None = None) -> np.ndarray:
    """Final hidden states (after the last norm: what the head multiplies) of the model at the first `positions`
    positions of consecutive `window`-token windows of the corpus, (positions, d) float32; cached."""
    limits.at_least("positions", positions, 1, 100_000)
    limits.at_least("window", window, 2, 8192)
    folder = model_dir(model)
    parts = {"model": str(folder.resolve()), "corpus": str(corpus), "positions": positions, "window": window, "v": 1}
    path = None if cache_dir is None else Path(cache_dir) / f"queries-{_key(parts)}.npy"
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


__all__ = ["CACHE", "ROW_CORPORA", "ROW_METHODS", "HeadRows", "head_rows", "hidden_states", "load_head",
           "merged_constituents"]
