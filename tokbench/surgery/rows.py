"""Rows for the tokens surgery creates, computed once at write time from each slot's row spec.

A spec is a dict: {"method": "keep", "old": id} (the base row), {"method": "copy", "old": id},
{"method": "subword", "pieces": [old ids]}, {"method": "mean" | "zero" | "random"},
{"method": "pad", "init": "anti_hidden" | "negative_mean" | "mean" | "zero"}; "norm_cap": "median" | "none" (new rows are
never longer than the median norm of the base's real rows unless "none").
"""
from __future__ import annotations

import numpy as np


def base_stats(rows: np.ndarray, real: np.ndarray) -> dict:
    """Mean, per-dimension std and the median norm of the real (token-bearing) base rows."""
    r = rows[real] if len(real) else rows
    return {"mean": r.mean(axis=0), "std": r.std(axis=0), "cap": float(np.median(np.linalg.norm(r, axis=1)))}


def cap_rows(x: np.ndarray, cap: float) -> int:
    """Shrink rows longer than cap to cap in place (never scale up); returns how many were shrunk."""
    n = np.linalg.norm(x, axis=1)
    over = n > cap
    if over.any():
        x[over] *= (cap / n[over])[:, None]
    return int(over.sum())


def _new_row(s: dict, rows: np.ndarray, stats: dict, rng) -> np.ndarray:
    m = s["method"]
    if m == "subword":
        pieces = s.get("pieces") or []
        return rows[pieces].mean(axis=0) if pieces else stats["mean"]
    if m == "mean":
        return stats["mean"]
    if m == "zero":
        return np.zeros(rows.shape[1], dtype=np.float32)
    if m == "random":
        return stats["mean"] + stats["std"] * rng.standard_normal(rows.shape[1])
    if m == "pad":
        init = s.get("init", "negative_mean")
        if init == "anti_hidden" and stats.get("hidden") is not None:
            # opposite the mean final hidden state at the typical norm: a very low logit at every position
            hb = stats["hidden"]
            return -hb / max(float(np.linalg.norm(hb)), 1e-12) * stats["cap"]
        if init == "zero":
            return np.zeros(rows.shape[1], dtype=np.float32)
        if init == "mean":
            return stats["mean"]
        # away from the mean row at the typical norm: a low logit wherever hidden states share the mean's direction
        mu = stats["mean"]
        return -mu / max(float(np.linalg.norm(mu)), 1e-12) * stats["cap"]
    raise ValueError(f"unknown row method {m}")


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


def build_rows(specs: list[dict], rows: np.ndarray, real: np.ndarray, seed: int,
               hidden: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The output matrix for `specs` (one per output id) from the base matrix `rows`; plus counts per method.
    hidden: the base's mean final hidden state (for pad rows with init anti_hidden; else negative_mean)."""
    stats = base_stats(rows, real)
    stats["hidden"] = hidden
    rng = np.random.default_rng(seed)
    out = np.empty((len(specs), rows.shape[1]), dtype=np.float32)
    counts: dict[str, int] = {}
    gather = [(i, s["old"]) for i, s in enumerate(specs) if s["method"] in ("keep", "copy")]
    if gather:
        dst, src = zip(*gather)
        out[list(dst)] = rows[list(src)]
    capped = 0
    for i, s in enumerate(specs):
        m = s["method"]
        counts[m] = counts.get(m, 0) + 1
        if m in ("keep", "copy"):
            continue
        out[i] = _new_row(s, rows, stats, rng)
        if m in ("subword", "mean", "random") and s.get("norm_cap", "median") == "median":
            capped += cap_rows(out[i:i + 1], stats["cap"])
    return out, {"methods": dict(sorted(counts.items())), "norm_capped": capped, "norm_cap": round(stats["cap"], 6)}
