"""Subword (decomposition) mean: a new token's row is the mean of the base rows of the pieces the base
tokenizer splits it into; a token without pieces gets the fallback row (the mean row)."""
from __future__ import annotations

import numpy as np

from tokbench.errors import TokbenchError


def subword_rows(decompositions: list[list[int]], rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(len(decompositions), d) float32: mean of rows[pieces] per token, `fallback` where pieces are empty."""
    out = np.empty((len(decompositions), rows.shape[1]), dtype=np.float32)
    for r, pieces in enumerate(decompositions):
        out[r] = rows[pieces].mean(axis=0) if pieces else fallback
    return out


def subword_record(pieces: list[int]) -> dict:
    rec: dict = {"method": "subword", "pieces": list(pieces)}
    if not pieces:
        rec["fallback"] = "mean"
    return rec


def linear_decay(n: int) -> np.ndarray:
    """Default position weights of n pieces: n, n-1, ..., 1 (the first piece counts most), summing to 1."""
    w = np.arange(n, 0, -1, dtype=np.float64)
    return w / w.sum()


def position_mean_rows(decompositions: list[list[int]], rows: np.ndarray, fallback: np.ndarray,
                       weights=None) -> tuple[np.ndarray, list[list[float]]]:
    """Position-weighted mean of the pieces' rows: weights is a function n -> (n,) weights (default
    `linear_decay`) or one list of weights per token; each token's weights are normalised to sum 1.
    Returns the rows and the weights used per token."""
    out = np.empty((len(decompositions), rows.shape[1]), dtype=np.float32)
    used: list[list[float]] = []
    for r, pieces in enumerate(decompositions):
        if not pieces:
            out[r] = fallback
            used.append([])
            continue
        if weights is None or callable(weights):
            w = np.asarray((weights or linear_decay)(len(pieces)), dtype=np.float64)
        else:
            w = np.asarray(weights[r], dtype=np.float64)
        if w.shape != (len(pieces),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise TokbenchError(f"position weights of token {r} must be {len(pieces)} non-negative numbers with a "
                                f"positive sum, got {w.tolist()}", fix="give one weight per piece")
        w = w / w.sum()
        out[r] = (w[:, None] * rows[pieces]).sum(axis=0)
        used.append([float(x) for x in w])
    return out, used
