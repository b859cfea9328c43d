"""Rows for the output ids, computed once at write time from each slot's row spec.

Spec per output id: {"method": "keep", "old": id} (the base row); a new token's {"method": "subword" | "mean" |
"zero" | "random" | "copy", ...} made by the shared initialisers (`tokbench.embeddings.make_rows`: "pieces" are
the base ids its bytes split into, "old" the row copied, "norm_cap": "median" caps the row at the typical base
row); or a padding row's {"method": "pad", "init": "anti_hidden" | "negative_mean" | "mean" | "zero"}.
"""
from __future__ import annotations

import numpy as np

from tokbench.embeddings import NewTokens, RowStats, make_rows


def mean_hidden(model_dir, text: str, max_tokens: int = 2048) -> np.ndarray:
    """Mean final hidden state (the head's input) of the causal LM in model_dir over the first max_tokens
    tokens of text, in windows of 512."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
    model.eval()
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids[:, :max_tokens]
    total, n = None, 0
    with torch.no_grad():
        for k in range(0, ids.shape[1], 512):
            h = model(ids[:, k:k + 512], output_hidden_states=True).hidden_states[-1][0].float()
            total = h.sum(0) if total is None else total + h.sum(0)
            n += h.shape[0]
    return (total / max(n, 1)).numpy().astype(np.float32)


def pad_row(init: str, stats: RowStats, hidden: np.ndarray | None) -> np.ndarray:
    """A padding row. anti_hidden: opposite the base's mean final hidden state at the typical norm, so its
    logit is very low wherever hidden states share that direction (measured: reports/surgery.md);
    negative_mean: opposite the mean row; mean; zero."""
    if init == "zero":
        return np.zeros_like(stats.mean, dtype=np.float32)
    if init == "mean":
        return stats.mean.astype(np.float32)
    v = hidden if init == "anti_hidden" and hidden is not None else stats.mean
    return (-v / max(float(np.linalg.norm(v)), 1e-12) * stats.cap).astype(np.float32)


def build_rows(specs: list[dict], rows: np.ndarray, real: np.ndarray, seed: int,
               hidden: np.ndarray | None = None, union: np.ndarray | None = None) -> tuple[np.ndarray, dict, list[dict]]:
    """(output matrix for `specs` from the base matrix `rows`, counts per method, one record per output id).
    real: the base ids with tokens (their rows give the mean, std and norm cap new rows lean on).
    union: the re-indexed union matrix (op union) that {"method": "union", "index": k} specs take row k of."""
    stats = RowStats.of(rows, real)
    out = np.empty((len(specs), rows.shape[1]), dtype=np.float32)
    records: list[dict] = [{} for _ in specs]
    keep = [i for i, s in enumerate(specs) if s["method"] == "keep"]
    if keep:
        out[keep] = rows[[specs[i]["old"] for i in keep]]
        for i in keep:
            records[i] = {"method": "keep", "old": specs[i]["old"]}
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, s in enumerate(specs):
        if s["method"] == "union":
            out[i] = union[s["index"]]
            records[i] = {"method": "union", "source": s.get("source")}
        elif s["method"] not in ("keep", "pad"):
            capped_method = s["method"] in ("subword", "mean", "random")
            groups.setdefault((s["method"], capped_method and s.get("norm_cap", "median") == "median"), []).append(i)
    capped = 0
    for (method, cap), pos in sorted(groups.items()):
        req = NewTokens(ids=pos, decompositions=[specs[i].get("pieces") or [] for i in pos])
        res = make_rows(method, rows, req, stats=stats, seed=seed, cap=cap,
                        sources=[specs[i]["old"] for i in pos] if method == "copy" else None)
        out[pos] = res.rows
        capped += res.norm_capped
        for i, rec in zip(pos, res.records):
            rec = {k: v for k, v in rec.items() if k != "id"}
            if "copied_from" in specs[i]:
                rec["copied_from"] = specs[i]["copied_from"]
            records[i] = rec
    for i, s in enumerate(specs):
        if s["method"] == "pad":
            out[i] = pad_row(s.get("init", "anti_hidden"), stats, hidden)
            records[i] = {"method": "pad", "init": s.get("init")}
    counts: dict[str, int] = {}
    for s in specs:
        counts[s["method"]] = counts.get(s["method"], 0) + 1
    return out, {"methods": dict(sorted(counts.items())), "norm_capped": capped, "norm_cap": round(stats.cap, 6)}, records
