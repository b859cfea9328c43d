"""Norm capping: a new row is never longer than the typical existing row (`RowStats.cap`, the median norm)."""
from __future__ import annotations

import numpy as np


def cap_mask(x: np.ndarray, cap: float) -> np.ndarray:
    """Shrink rows of `x` longer than `cap` to `cap` (in place); never scale up. Returns which were shrunk."""
    n = np.linalg.norm(x, axis=1)
    over = n > cap
    x[over] *= (cap / n[over])[:, None]
    return over


def cap_norms(x: np.ndarray, cap: float) -> int:
    """Shrink rows longer than `cap` to `cap` (in place); never scale up. Returns how many were shrunk."""
    return int(cap_mask(x, cap).sum())
