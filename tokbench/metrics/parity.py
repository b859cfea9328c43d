"""Cross-language parity of tokenizers on parallel text: how many more tokens a language needs than
English. The units and the premium arithmetic live in tokbench.fairness (shared with `tokbench
boundaries`); this module counts tokens with an Encoder.

Per language L (English excluded) and tokenizer: premium_sum (ratio of sums) and premium_mean (mean
of per-unit ratios); across languages: mean, max, Gini and CV of premium_sum (tokbench.fairness).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tokbench.fairness import distinct_texts, premium_table, tatoeba_units, udhr_units
from tokbench.metrics.encoders import Encoder

__all__ = ["parity", "tatoeba_units", "udhr_units", "distinct_texts"]

ENCODE_CHUNK = 5000


def _encode_lengths(encoder: Encoder, texts: Sequence[str], progress=None) -> np.ndarray:
    out = np.zeros(len(texts), dtype=np.int64)
    for i in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[i:i + ENCODE_CHUNK]
        out[i:i + len(chunk)] = [len(x) for x in encoder.encode(chunk)]
        if progress is not None:
            progress.update(sum(len(t) for t in chunk))
    return out


def parity(encoder: Encoder, units: dict[str, list[tuple[str, str]]], *, dataset: str,
           progress=None) -> dict:
    """Premiums per language and their spread. `units` from tatoeba_units / udhr_units."""
    lengths: dict[str, int] = {}
    if units:
        texts = distinct_texts(units)
        lengths = dict(zip(texts, _encode_lengths(encoder, texts, progress).tolist()))
    table = premium_table(units, lengths.__getitem__, what="tokens", dataset=dataset)
    table.pop("mean_abs_log2", None)
    table["missing"].pop("mean_abs_log2", None)
    return {"tokenizer": encoder.name, "dataset": dataset, **table}
