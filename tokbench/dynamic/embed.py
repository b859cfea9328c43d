"""Embedding rows for the dynamic tokens of a merged batch, from the shared initialisers (tokbench.embeddings)."""
from __future__ import annotations

import numpy as np

from tokbench.embeddings import NewRows, NewTokens, make_rows, table_space
from tokbench.errors import TokbenchError

EMBED_METHODS = ("mean", "position_mean", "norm_mean", "omp")


def dynamic_rows(batch, base_rows: np.ndarray, method: str = "mean", **kwargs) -> NewRows:
    """Rows (len(batch.tokens), d) for the dynamic tokens of `batch` (a MergedBatch), in token order.

    mean: the plain mean of the constituents' rows (the paper's FVT baseline; make_rows "subword").
    position_mean: a position-weighted mean of the constituents (weights n..1 unless `weights=` is given).
    norm_mean: the constituents' mean rescaled to their mean norm (make_rows "norm_mean"; `weights=`,
        `scale=` as there).
    omp: the constituent mean re-coded as a sparse combination of the model's own rows (OMP over
        `base_rows`, make_rows "omp" in a table space made of the base rows plus those means).
    Other keyword arguments go to `make_rows` (k, ridge, blend, seed, ...).
    """
    if method not in EMBED_METHODS:
        raise TokbenchError(f"unknown dynamic embedding {method!r}", fix=f"use one of {', '.join(EMBED_METHODS)}")
    base_rows = np.asarray(base_rows, dtype=np.float32)
    if base_rows.ndim != 2 or base_rows.shape[0] < batch.n_base:
        raise TokbenchError(f"the embedding matrix has shape {base_rows.shape}, not ({batch.n_base}, d) rows for "
                            f"the tokenizer's {batch.n_base:,} ids", fix="pass the model's input embedding matrix")
    n = batch.n_base
    req = NewTokens(ids=[n + k for k in range(len(batch.tokens))], decompositions=batch.tokens,
                    token_bytes=list(batch.token_bytes))
    if not len(req):
        return make_rows("subword", base_rows, req)
    if method == "mean":
        return make_rows("subword", base_rows, req, **kwargs)
    if method in ("position_mean", "norm_mean"):
        return make_rows(method, base_rows, req, **kwargs)
    means = np.stack([base_rows[p].mean(axis=0) for p in batch.tokens]).astype(np.float32)
    space = np.concatenate([base_rows, means])
    pos = {i: i for i in range(base_rows.shape[0])} | {i: base_rows.shape[0] + r for r, i in enumerate(req.ids)}
    return make_rows("omp", base_rows, req, space=table_space(space, pos), **kwargs)


def embed_batch(batch, base_rows: np.ndarray, dynamic: np.ndarray) -> list[np.ndarray]:
    """inputs_embeds per merged sequence: base rows for base ids, `dynamic[k]` for id n_base + k."""
    n = batch.n_base
    table = np.concatenate([np.asarray(base_rows[:n], dtype=np.float32), np.asarray(dynamic, dtype=np.float32)])
    return [table[np.asarray(seq, dtype=np.int64)] for seq in batch.merged]
