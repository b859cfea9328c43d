"""MAGNET-style learned, script-aware segmentation (`tokbench boundaries`).

A byte-level causal hourglass LM (model.py) learns where segments end with boundary predictors
(predictors.py: DTP, one predictor with per-language priors, MAGNET's per-script predictors) pushed towards
priors derived from data (priors.py) on splits that keep test text out of training (data.py); train.py
trains with atomic checkpoints, metrics.py measures rates, parity, bits/byte and F1, export.py writes a
standalone segmenter and a distilled tokenizer.json. Script groups: scripts.py.

torch is needed (extra `transplant`) and imported only when a submodule that uses it is imported;
`require_torch()` names the extra when it is missing.
"""
from __future__ import annotations

from tokbench.extras import need


def require_torch(what: str = "tokbench boundaries") -> None:
    need("torch", "safetensors", what=what)


__all__ = ["require_torch"]
