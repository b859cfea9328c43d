"""Calibrated evaluation thresholds: each predictor route's deterministic boundary rate set to its prior.

Why: training holds the boundary rate at the prior *on average over steps* (the Binomial prior pushes it back
whenever it drifts), but a predictor's logits crowd around 0, so the rate of the final snapshot of the
weights is off by 10-25 % (measured on the training text itself: Latin 0.238 for a prior of 0.2 while the
training log showed 0.200). Evaluation would inherit that error in every rate and parity figure.

`calibrate(model, texts, targets)` draws windows of each route's *training* text (never test text), the
languages of a route uniformly as in training, computes the predictor's raw logits there and sets the
route's offset (BoundaryPredictor.offset) to the logit quantile above which the route's target fraction of
bytes lies. Evaluation then draws a boundary where logit > offset. The model's weights do not change;
training ignores the offset, so a resumed run trains the same way and is recalibrated at its end.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from tokbench.errors import TokbenchError

WINDOWS = 1024  # windows per route, split equally between its languages
CHUNK = 64
# where a training or calibration window starts: `random` at any byte; `line` at a newline byte (or the text's
# start), so that the window reads "\n" + a line as the isolated-sentence evaluation does; `mixed` half and half
POLICIES = ("random", "line", "mixed")
NEWLINE = 10


@torch.no_grad()
def raw_logits(model, x: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
    """The predictor's logits before the offset (B, T)."""
    return model.predictor.raw(model.hidden(x), route)


def byte_array(text: str, min_len: int) -> np.ndarray:
    """The UTF-8 bytes of `text` (uint8), repeated until there are at least `min_len` of them."""
    a = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return np.tile(a, min_len // max(1, a.size) + 1) if a.size < min_len else a


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise TokbenchError(f"unknown window policy {policy!r}", fix=f"use one of {', '.join(POLICIES)}")
    return policy


def line_starts(a: np.ndarray, length: int) -> np.ndarray:
    """The offsets of `a` where a window of `length` bytes can start at a line: each newline byte (the
    window then reads the newline and the line after it) and the text's start."""
    s = np.flatnonzero(a[:a.size - length + 1] == NEWLINE)
    return s if s.size and s[0] == 0 else np.concatenate(([0], s)).astype(np.int64)


def draw_starts(a: np.ndarray, length: int, n: int | None, rng: np.random.Generator, policy: str = "random",
                lines: np.ndarray | None = None):
    """Start offsets of `n` windows of `length` bytes of `a` under `policy` (n=None: one, as an int);
    `lines`: line_starts(a, length), when the caller keeps it. `random` draws exactly what it always drew."""
    if policy == "random":
        return rng.integers(0, a.size - length + 1, n)
    if lines is None:
        lines = line_starts(a, length)
    at_line = lines[rng.integers(0, lines.size, n)]
    if policy == "line":
        return at_line
    anywhere = rng.integers(0, a.size - length + 1, n)
    pick = np.where(rng.random(n) < 0.5, at_line, anywhere)
    return int(pick) if n is None else pick


def windows_of(texts: Sequence[str], seq_len: int, n: int, rng: np.random.Generator,
               policy: str = "random") -> np.ndarray:
    """(n // len(texts) * len(texts), seq_len) byte windows starting under `policy`, the same number from
    each text (languages weigh equally, as in training, without the sampling noise of drawing the language)."""
    per = max(1, n // len(texts))
    out = []
    for t in texts:
        a = byte_array(t, seq_len)
        out.extend(a[s:s + seq_len] for s in draw_starts(a, seq_len, per, rng, policy))
    return np.stack(out).astype(np.int64)


@torch.no_grad()
def calibrate(model, route_texts: Mapping[str, Sequence[str]], targets: Mapping[str, float], *,
              windows: int = WINDOWS, seed: int = 0, policy: str = "random") -> dict:
    """Set model.predictor.offset per route so that the deterministic rate on `windows` windows of the route's
    texts (route name -> training texts, one per language), drawn under the window `policy` of training,
    equals targets[route]. Returns, per route: the target, the rate before (offset 0) and after, the offset,
    the number of bytes judged and the policy."""
    check_policy(policy)
    if model.predictor is None:
        raise TokbenchError("the byte-level arm has no boundary predictor to calibrate",
                            fix="calibrate a dtp, priors or magnet model")
    device = model.predictor.offset.device
    was_training = model.training
    model.eval()
    out = {}
    offsets = model.predictor.offset.clone()
    for r, name in enumerate(model.cfg.routes):
        texts = [t for t in route_texts.get(name, ()) if t]
        if not texts:
            continue
        target = float(targets[name])
        x = windows_of(texts, model.cfg.seq_len, windows, np.random.default_rng(seed + 7919 * (r + 1)), policy)
        logits = torch.cat([raw_logits(model, torch.from_numpy(x[i:i + CHUNK]).to(device),
                                       torch.full((len(x[i:i + CHUNK]),), r, device=device))
                            for i in range(0, len(x), CHUNK)]).flatten().float()
        # the value above which a fraction `target` of the logits lies
        k = int(round((1.0 - target) * (logits.numel() - 1)))
        offset = float(torch.kthvalue(logits.cpu(), k + 1).values)
        offsets[r] = offset
        out[name] = {"target": target, "rate_before": float((logits > 0).float().mean()),
                     "rate_after": float((logits > offset).float().mean()), "offset": offset,
                     "bytes": int(logits.numel()), "windows": policy}
    model.predictor.offset.copy_(offsets)
    model.train(was_training)
    return out


__all__ = ["calibrate", "raw_logits", "windows_of", "byte_array", "WINDOWS", "POLICIES", "check_policy",
           "line_starts", "draw_starts"]
