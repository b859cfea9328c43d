"""Subword (decomposition) mean: a new token's row is the mean of the base rows of the pieces the base
tokenizer splits it into; a token without pieces gets the fallback row (the mean row)."""
from __future__ import annotations

import math

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


def geometric(ratio: float):
    """Position weights n -> ratio**0, ratio**1, ..., ratio**(n-1) (ratio > 1: the last piece counts most)."""
    if not (math.isfinite(ratio) and ratio > 0):
        raise TokbenchError(f"the weight ratio must be a positive number, got {ratio}", fix="pass e.g. 1.5")
    return lambda n: ratio ** np.arange(n, dtype=np.float64)


def norm_mean_rows(decompositions: list[list[int]], rows: np.ndarray, fallback: np.ndarray, weights=None,
                   scale: float = 1.0, centre: np.ndarray | None = None) -> tuple[np.ndarray, list[list[float]]]:
    """A (weighted) mean of the pieces' rows, rescaled to `scale` times the mean norm of those pieces.
    Averaging vectors that point different ways shortens them (the mean of two orthogonal unit rows has norm
    0.71); this gives a merged token the length of a real row. weights: as `position_mean_rows` (default: all
    equal, the plain mean). centre: a vector (e.g. the table's mean row) taken off before and put back after,
    so that only the part of the rows that differs between tokens is rescaled. A one-piece token gets its
    own row back when scale is 1."""
    if not (math.isfinite(scale) and scale > 0):
        raise TokbenchError(f"the norm scale must be a positive number, got {scale}", fix="pass e.g. 1.0")
    out, used = position_mean_rows(decompositions, rows, fallback, weights or (lambda n: np.ones(n)))
    c = np.zeros(rows.shape[1], dtype=np.float32) if centre is None else np.asarray(centre, dtype=np.float32)
    for r, pieces in enumerate(decompositions):
        if pieces:
            have = float(np.linalg.norm(out[r] - c))
            want = scale * float(np.linalg.norm(rows[pieces] - c, axis=1).mean())
            if have > 0:
                out[r] = c + (out[r] - c) * (want / have)
    return out, used
