"""Copies of existing rows: a new token takes the row of another token (a special mapped by role, a control
token made "like <|im_start|>"), and a whole table is assembled from a fill row plus copied and new rows."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tokbench.errors import TokbenchError


def copy_rows(rows: np.ndarray, sources: list[int]) -> np.ndarray:
    """(len(sources), d) float32: rows[sources]."""
    bad = [s for s in sources if not 0 <= int(s) < rows.shape[0]]
    if bad:
        raise TokbenchError(f"copy source id {bad[0]} is outside the {rows.shape[0]:,} base rows",
                            fix="name an existing token (an id of the base vocabulary) to copy the row of")
    idx = np.asarray(sources, dtype=np.int64)
    return rows[idx].astype(np.float32, copy=False) if len(idx) else np.zeros((0, rows.shape[1]), np.float32)


def assemble(size: int, fill: np.ndarray, parts: Iterable[tuple[np.ndarray, np.ndarray | tuple[np.ndarray, np.ndarray]]],
             block: int = 16384) -> np.ndarray:
    """A (size, d) float32 table: `fill` everywhere, then each (ids, rows) part written in order (later wins).
    rows may be (source table, source ids): then the rows are copied `block` at a time, without the full
    fancy-indexed copy (1.8 GB for the shared rows of a 128k x 4096 table)."""
    out = np.tile(fill.astype(np.float32), (size, 1))
    for ids, rows in parts:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            continue
        if isinstance(rows, tuple):
            src, src_ids = rows
            src_ids = np.asarray(src_ids, dtype=np.int64)
            for i in range(0, len(ids), block):
                out[ids[i:i + block]] = src[src_ids[i:i + block]]
        else:
            out[ids] = rows
    return out
