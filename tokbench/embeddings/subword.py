"""Subword (decomposition) mean: a new token's row is the mean of the base rows of the pieces the base
tokenizer splits it into; a token without pieces gets the fallback row (the mean row)."""
from __future__ import annotations

import numpy as np


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
