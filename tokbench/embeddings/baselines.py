"""Baselines that ignore the token's text: the mean row, a zero row, or a random row drawn per dimension
from the reference rows' mean and standard deviation (numpy default_rng(seed), one draw of (n, d))."""
from __future__ import annotations

import numpy as np

from tokbench.embeddings.request import RowStats


def baseline_rows(method: str, n: int, d: int, stats: RowStats, seed: int) -> np.ndarray:
    if method == "mean":
        return np.tile(stats.mean, (n, 1))
    if method == "zero":
        return np.zeros((n, d), dtype=np.float32)
    if method == "random":
        rng = np.random.default_rng(seed)
        return (stats.mean + stats.std * rng.standard_normal((n, d))).astype(np.float32)
    raise ValueError(method)


def fill_row(method: str, stats: RowStats, d: int) -> np.ndarray:
    """The row a table starts from before known and new rows are written into it (zero for `zero`, else mean)."""
    if method == "zero":
        return np.zeros(d, dtype=np.float32)
    return stats.mean
