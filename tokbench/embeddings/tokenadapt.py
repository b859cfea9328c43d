"""TokenAdapt hybrid rows: a local estimate (the token's decomposition pieces, weighted by piece length and by
similarity to the token in an auxiliary space, softmax with a temperature) mixed with a global estimate (the
base rows of its FAISS top-k nearest base tokens in that space)."""
from __future__ import annotations

import numpy as np

from tokbench.embeddings.aux import AuxSpace
from tokbench.embeddings.norms import cap_mask
from tokbench.embeddings.omp import centred_cosine
from tokbench.embeddings.request import NewTokens, RowStats
from tokbench.embeddings.subword import subword_record


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def tokenadapt_rows(rows: np.ndarray, req: NewTokens, stats: RowStats, aux: AuxSpace, *, global_weight: float,
                    temperature: float, top_k: int, seed: int):
    """TokenAdapt rows for `req` (every id must have a vector in aux.new_pos); returns
    (rows, records, params, held_out, norm_capped)."""
    import faiss

    old_ids = aux.old_ids  # old ids with aux vectors (normal/byte tokens)
    old_vecs = aux.old_vecs
    old_pos = {int(j): r for r, j in enumerate(old_ids)}
    new_pos = aux.new_pos
    new_vecs = aux.new_vecs
    lens = aux.old_lens
    index = faiss.IndexFlatIP(old_vecs.shape[1])
    index.add(np.ascontiguousarray(old_vecs, dtype=np.float32))
    ids = list(req.ids)
    q = np.stack([new_vecs[new_pos[i]] for i in ids]) if ids else np.zeros((0, old_vecs.shape[1]), np.float32)
    sims, nbrs = index.search(np.ascontiguousarray(q, dtype=np.float32), top_k) if ids else (None, None)
    est = np.empty((len(ids), rows.shape[1]), dtype=np.float32)
    records: list[dict] = []
    for r, i in enumerate(ids):
        pieces = list(req.decompositions[r])
        if pieces:
            pv = np.stack([old_vecs[old_pos[p]] if p in old_pos else np.zeros(old_vecs.shape[1], np.float32)
                           for p in pieces])
            s = pv @ q[r]
            w = _softmax(s / temperature) * np.array([max(1, lens.get(p, 1)) for p in pieces], dtype=np.float64)
            w = w / w.sum()
            local = (w[:, None] * rows[pieces]).sum(0)
        else:
            local = stats.mean
        if i in req.subword_only:
            est[r] = rows[pieces].mean(0) if pieces else stats.mean
            rec = subword_record(pieces)
            rec["reason"] = "subword_only"
            records.append(rec)
            continue
        rec = {"method": "tokenadapt", "pieces": pieces, "global_weight": global_weight, "temperature": temperature}
        if not pieces:
            rec["local_fallback"] = "mean"
        nb = nbrs[r]
        valid = nb >= 0
        if valid.any():
            g = _softmax(sims[r][valid] / temperature)
            glob = (g[:, None] * rows[old_ids[nb[valid]]]).sum(0)
            est[r] = (1 - global_weight) * local + global_weight * glob
            rec["neighbours"] = [int(j) for j in old_ids[nb[valid]]]
        else:
            est[r] = local
            rec["neighbours"] = []
        records.append(rec)
    over = cap_mask(est, stats.cap)
    capped = int(over.sum())
    for rec, o in zip(records, over):
        rec["norm_capped"] = bool(o)
    # held-out view of the global estimate: reference tokens rebuilt from their top-k other old tokens
    rng = np.random.default_rng(seed)
    held_n = int(min(2000, max(1, round(0.05 * len(stats.reference)))))
    held = {}
    cand = np.array([j for j in stats.reference if int(j) in old_pos], dtype=np.int64)
    if len(cand) > top_k + 1:
        pick = rng.choice(cand, size=min(held_n, len(cand)), replace=False)
        qv = np.stack([old_vecs[old_pos[int(j)]] for j in pick])
        s2, n2 = index.search(np.ascontiguousarray(qv), top_k + 1)
        preds = np.empty((len(pick), rows.shape[1]), dtype=np.float32)
        for r, j in enumerate(pick):
            keep = (n2[r] >= 0) & (old_ids[np.maximum(n2[r], 0)] != j)
            nb, sv = n2[r][keep][:top_k], s2[r][keep][:top_k]
            g = _softmax(sv / temperature)
            preds[r] = (g[:, None] * rows[old_ids[nb]]).sum(0)
        held = {"metric": "centred cosine of held-out shared rows rebuilt by the global (FAISS top-k) estimate",
                "held_out": int(len(pick)),
                "global_estimate": round(float(centred_cosine(preds, rows[pick], stats.mean).mean()), 5)}
    params = {"global_weight": global_weight, "temperature": temperature, "top_k": top_k,
              "faiss_index": "IndexFlatIP", "aux_dim": int(old_vecs.shape[1]), "norm_cap": round(stats.cap, 5)}
    return est, records, params, held, capped
