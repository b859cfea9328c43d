"""What the initialisers take and give: `NewTokens` (the request), `RowStats` (statistics of the base rows
that every method leans on) and `NewRows` (the answer: rows in request order + one record per row)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokbench.errors import TokbenchError

_WHOLE = 1 << 27  # reference rows x dim up to which the statistics use one copy (512 MB of float32)
_BLOCK = 8192


@dataclass
class NewTokens:
    """The tokens that need rows, in request order.

    ids: the tokens' ids in the new vocabulary (the keys a donor or auxiliary space is looked up by).
    decompositions: per token, the base-vocabulary ids its bytes split into (empty: no split known).
    token_bytes: per token, the bytes it stands for (None where unknown); kept in the records.
    subword_only: ids whose row is the decomposition mean whatever the method (transplant's numeric tokens
        when the two tokenizers split digits differently).
    """

    ids: list[int]
    decompositions: list[list[int]]
    token_bytes: list[bytes | None] | None = None
    subword_only: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.ids = [int(i) for i in self.ids]
        self.decompositions = [[int(p) for p in d] for d in self.decompositions]
        if len(self.decompositions) != len(self.ids):
            raise TokbenchError(f"{len(self.ids)} new token ids but {len(self.decompositions)} decompositions",
                                fix="give one decomposition (a list of base ids, possibly empty) per new token")
        if self.token_bytes is not None and len(self.token_bytes) != len(self.ids):
            raise TokbenchError(f"{len(self.ids)} new token ids but {len(self.token_bytes)} token_bytes",
                                fix="give one bytes value (or None) per new token, or leave token_bytes out")
        self.subword_only = frozenset(int(i) for i in self.subword_only)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_alignment(cls, al, ids=None, subword_only=()) -> "NewTokens":
        """The new-only tokens of an `Alignment` (or the given new ids), decomposed by the base tokenizer."""
        ids = list(al.new_only) if ids is None else [int(i) for i in ids]
        return cls(ids=ids, decompositions=[list(al.decompositions.get(i) or []) for i in ids],
                   token_bytes=[al.new.token_bytes[i] for i in ids], subword_only=frozenset(subword_only))

    def check_pieces(self, n_rows: int) -> None:
        for i, d in zip(self.ids, self.decompositions):
            bad = [p for p in d if not 0 <= p < n_rows]
            if bad:
                raise TokbenchError(f"the decomposition of new token {i} names base id {bad[0]}, outside the "
                                    f"{n_rows:,} base rows", fix="decompose new tokens into ids of the base vocabulary")


@dataclass
class RowStats:
    """mean / std (per dimension) and norm cap (median row norm) of the reference rows: the rows a new row
    should look like (transplant: the rows of tokens shared with the target; default: every base row)."""

    mean: np.ndarray
    std: np.ndarray
    cap: float
    reference: np.ndarray  # base row ids the statistics describe (may be empty: then every row was used)

    @classmethod
    def of(cls, rows: np.ndarray, reference=None) -> "RowStats":
        ref = np.arange(rows.shape[0], dtype=np.int64) if reference is None else np.asarray(reference, dtype=np.int64)
        if len(ref) * rows.shape[1] <= _WHOLE:
            ref_rows = rows[ref] if len(ref) else rows
            return cls(mean=ref_rows.mean(axis=0), std=ref_rows.std(axis=0),
                       cap=float(np.median(np.linalg.norm(ref_rows, axis=1))), reference=ref)
        # a large table (7B scale: 109k x 4096): two passes over blocks, no full copy of the reference rows
        blocks = [ref[i:i + _BLOCK] for i in range(0, len(ref), _BLOCK)]
        total = np.zeros(rows.shape[1], dtype=np.float64)
        norms = []
        for b in blocks:
            part = rows[b]
            total += part.sum(axis=0, dtype=np.float64)
            norms.append(np.linalg.norm(part, axis=1))
        mean = total / len(ref)
        sq = np.zeros(rows.shape[1], dtype=np.float64)
        for b in blocks:
            sq += np.square(rows[b] - mean).sum(axis=0)
        return cls(mean=mean.astype(np.float32), std=np.sqrt(sq / len(ref)).astype(np.float32),
                   cap=float(np.median(np.concatenate(norms))), reference=ref)


@dataclass
class NewRows:
    """rows: (len(request), d) float32 in request order; records: one dict per row saying how it was made
    (always "method" and "norm_capped"; plus e.g. "pieces", "fallback", "anchors", "neighbours", "source");
    params / held_out: the method's chosen parameters and held-out scores; norm_capped: rows shrunk."""

    rows: np.ndarray
    records: list[dict]
    params: dict = field(default_factory=dict)
    held_out: dict = field(default_factory=dict)
    norm_capped: int = 0
