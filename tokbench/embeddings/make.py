"""`make_rows(method, base_rows, request, ...)`: the one entry point to every initialiser."""
from __future__ import annotations

import numpy as np

from tokbench.embeddings.aux import AuxSpace
from tokbench.embeddings.baselines import baseline_rows
from tokbench.embeddings.copy import copy_rows
from tokbench.embeddings.norms import cap_mask
from tokbench.embeddings.omp import SpaceLookup, omp_rows
from tokbench.embeddings.request import NewRows, NewTokens, RowStats
from tokbench.embeddings.subword import norm_mean_rows, position_mean_rows, subword_record, subword_rows
from tokbench.embeddings.tokenadapt import tokenadapt_rows
from tokbench.errors import TokbenchError

METHODS = ("subword", "mean", "zero", "random", "omp", "tokenadapt", "copy", "position_mean", "norm_mean")


def make_rows(method: str, base_rows: np.ndarray, req: NewTokens, *, stats: RowStats | None = None,
              reference=None, seed: int = 0, cap: bool | None = None,
              space: SpaceLookup | None = None, anchors: tuple[np.ndarray, np.ndarray] | None = None,
              k: int | None = None, ridge: float | None = None, blend: float = 0.5,
              aux: AuxSpace | None = None, global_weight: float = 0.3, temperature: float = 0.3, top_k: int = 8,
              sources: list[int] | None = None, weights=None, scale: float = 1.0, centred: bool = False,
              device: str | None = None, progress: bool = False) -> NewRows:
    """Rows for the tokens of `req` from the base table `base_rows` (n, d) by `method` (one of METHODS).

    stats / reference: the statistics (mean, std, norm cap) new rows lean on, or the base ids to take them
        from (default: every base row). seed: random's draw and the held-out samples of omp / tokenadapt.
    cap: shrink rows longer than the typical reference row (default: omp and tokenadapt only; their own
        capping is always on).
    omp: space (lookup of ids in the coding space: `donor_space`, `table_space` or your own), anchors
        (keys looked up in the space, base row ids; default the reference ids for both), k, ridge, blend.
    tokenadapt: aux (an `AuxSpace` holding a vector for every requested id), global_weight, temperature, top_k.
    copy: sources (one base id per requested token).
    position_mean: weights (a function n -> n weights, default n, n-1, ..., 1; or one list per token).
    norm_mean: the pieces' mean (weights as position_mean, default all equal) rescaled to `scale` x the
        pieces' mean norm (`centred`: of their difference from the reference mean row).
    """
    if method not in METHODS:
        raise TokbenchError(f"unknown initialiser {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if base_rows.ndim != 2:
        raise TokbenchError(f"base rows must be a (rows, dim) matrix, got shape {base_rows.shape}",
                            fix="pass the model's input embedding or output head matrix")
    req.check_pieces(base_rows.shape[0])
    if stats is None:
        stats = RowStats.of(base_rows, reference)
    n, d = len(req), base_rows.shape[1]
    params: dict = {}
    held: dict = {}
    capped = 0
    if method == "omp":
        if space is None:
            raise TokbenchError("omp needs a space to code the new tokens in",
                                fix="pass space=donor_space(...) or table_space(...)")
        keys, base_ids = anchors if anchors is not None else (stats.reference, stats.reference)
        est, records, params, held, capped = omp_rows(
            base_rows, req, stats, space, np.asarray(keys, dtype=np.int64), np.asarray(base_ids, dtype=np.int64),
            k=k, ridge=ridge, blend=blend, seed=seed, device=device, progress=progress)
    elif method == "tokenadapt":
        if aux is None:
            raise TokbenchError("tokenadapt needs an auxiliary space", fix="pass aux=aux_space(...)")
        missing = [i for i in req.ids if i not in aux.new_pos]
        if missing:
            raise TokbenchError(f"new token {missing[0]} has no vector in the auxiliary space",
                                fix="embed every requested id when building the AuxSpace")
        est, records, params, held, capped = tokenadapt_rows(base_rows, req, stats, aux, global_weight=global_weight,
                                                             temperature=temperature, top_k=top_k, seed=seed)
    elif method == "copy":
        if sources is None or len(sources) != n:
            raise TokbenchError(f"copy needs one source id per new token ({n})",
                                fix="pass sources=[base id to copy, ...] in request order")
        est = copy_rows(base_rows, list(sources))
        records = [{"method": "copy", "source": int(s)} for s in sources]
    elif method in ("position_mean", "norm_mean"):
        if method == "position_mean":
            est, used = position_mean_rows(req.decompositions, base_rows, stats.mean, weights)
        else:
            est, used = norm_mean_rows(req.decompositions, base_rows, stats.mean, weights, scale,
                                       stats.mean if centred else None)
        records = []
        for p, w in zip(req.decompositions, used):
            rec = subword_record(p)
            rec.update(method=method, weights=w)
            if method == "norm_mean":
                rec.update(scale=scale, centred=centred)
            records.append(rec)
    elif method == "subword":
        est = subword_rows(req.decompositions, base_rows, stats.mean)
        records = [subword_record(p) for p in req.decompositions]
    else:
        est = baseline_rows(method, n, d, stats, seed)
        records = [{"method": method, "seed": seed} if method == "random" else {"method": method} for _ in range(n)]
    if method not in ("omp", "tokenadapt"):
        over = np.zeros(n, dtype=bool)
        if cap:
            est = np.array(est, dtype=np.float32)
            over = cap_mask(est, stats.cap)
            capped = int(over.sum())
        for rec, o in zip(records, over):
            rec["norm_capped"] = bool(o)
    for rec, i, tb in zip(records, req.ids, req.token_bytes or [None] * n):
        rec["id"] = i
        if tb is not None:
            rec["bytes"] = tb.hex()
    return NewRows(rows=est, records=records, params=params, held_out=held, norm_capped=capped)
