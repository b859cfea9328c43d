"""Boundary predictors behind one interface, and their prior losses.

Arms (`ARMS`):
- `dtp`: one predictor, one prior (dynamic token pooling, Nawrot et al. 2023; the baseline);
- `priors`: one predictor, the prior of each sequence's language (FLEXITOKENS' "1 bp, n priors");
- `magnet`: one predictor per script group, each sequence routed to its script's predictor and pushed
  towards that script's prior (Ahia et al. 2024).

A predictor is an MLP d -> d_inner -> 1 on the pre-layers' output, giving a logit per byte: byte t ends a
segment with probability sigmoid(logit_t). Training draws a relaxed Bernoulli sample (temperature tau) and
passes the hard 0/1 forward with the soft sample's gradient (straight-through); evaluation thresholds the
probability at 0.5 (logit > 0): deterministic, no noise. Training can anneal the noise to 0 (train.py), so that
the boundaries the prior loss counts at the end of training are the ones evaluation draws: with the noise,
a predictor whose probabilities hover near the prior (say 0.2) meets its prior in training and draws no
boundary at all at the 0.5 threshold. The output bias starts at logit(prior), so the
initial rate is the prior.

Calibrated threshold: each route also holds an `offset` (a buffer, 0 until calibrated) that evaluation
subtracts from the logits, i.e. byte t ends a segment when logit_t > offset. Training ignores it. The
Binomial prior holds the *average* rate over the steps at the prior, but the predictor's logits crowd
around 0, so the rate of any one snapshot of the weights swings by 10-25 % around it; `tokbench.boundaries.
calibrate` sets the offset, after training, to the logit quantile that gives each route its prior on
windows of its training text (never test text).

Losses (`prior_loss`): the Binomial prior, -log Binomial(k; n, beta) / n with k = the number of hard
boundaries of a sequence, n its length (MAGNET pretraining); or the hinge band of FLEXITOKENS,
max(0, r - beta) + max(0, beta - s*sigma - r) with r = k / n.
"""
from __future__ import annotations

import math

import torch
from torch import nn

ARMS = ("dtp", "priors", "magnet")
LOSSES = ("binomial", "hinge")


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class BoundaryPredictor(nn.Module):
    """n_routes MLPs sharing nothing; forward(h, route) -> logits (B, T), route (B,) long."""

    def __init__(self, d_model: int, d_inner: int, priors: list[float]):
        super().__init__()
        self.n_routes = len(priors)
        self.w1 = nn.Parameter(torch.empty(self.n_routes, d_model, d_inner))
        self.b1 = nn.Parameter(torch.zeros(self.n_routes, d_inner))
        self.w2 = nn.Parameter(torch.empty(self.n_routes, d_inner))
        self.b2 = nn.Parameter(torch.tensor([logit(p) for p in priors], dtype=torch.float32))
        self.register_buffer("offset", torch.zeros(self.n_routes))
        nn.init.normal_(self.w1, std=d_model ** -0.5)
        nn.init.normal_(self.w2, std=0.02 * d_inner ** -0.5)

    def raw(self, h: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """Logits before the calibrated offset (B, T)."""
        w1, b1, w2, b2 = self.w1[route], self.b1[route], self.w2[route], self.b2[route]
        z = torch.nn.functional.gelu(torch.einsum("btd,bdi->bti", h, w1) + b1[:, None, :])
        return torch.einsum("bti,bi->bt", z, w2) + b2[:, None]

    def forward(self, h: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        logits = self.raw(h, route)
        return logits if self.training else logits - self.offset[route][:, None]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before calibration existed hold no offset: uncalibrated (0)
        state_dict.setdefault(prefix + "offset", torch.zeros_like(self.offset))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def sample_boundaries(logits: torch.Tensor, *, training: bool, tau: float = 0.5,
                      generator: torch.Generator | None = None,
                      noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard boundaries with a straight-through gradient, probabilities). Deterministic unless training.
    `noise` scales the logistic noise of the relaxed sample (1: the relaxed Bernoulli; 0: the hard
    boundaries are the evaluation threshold's, with the gradient of sigmoid(logit / tau))."""
    probs = torch.sigmoid(logits)
    if not training:
        return (logits > 0).to(logits.dtype), probs
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    u = u.clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + noise * (torch.log(u) - torch.log1p(-u))) / tau)
    hard = (soft > 0.5).to(logits.dtype)
    return hard - soft.detach() + soft, probs


def binomial_loss(b: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over sequences of -log Binomial(k; n, beta) / n (b: (B, T) boundaries, beta: (B,))."""
    if mask is None:
        mask = torch.ones_like(b)
    n = mask.sum(-1)
    k = (b * mask).sum(-1)
    logpmf = (torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
              + k * torch.log(beta) + (n - k) * torch.log1p(-beta))
    return (-logpmf / n.clamp(min=1)).mean()


def hinge_loss(b: torch.Tensor, beta: torch.Tensor, sigma: torch.Tensor, s: float = 2.0,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """FLEXITOKENS' band: mean of max(0, r - beta) + max(0, beta - s*sigma - r), r = boundary rate."""
    if mask is None:
        mask = torch.ones_like(b)
    r = (b * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return (torch.relu(r - beta) + torch.relu(beta - s * sigma - r)).mean()


def prior_loss(kind: str, b: torch.Tensor, beta: torch.Tensor, *, sigma: torch.Tensor | None = None,
               s: float = 2.0) -> torch.Tensor:
    if kind == "binomial":
        return binomial_loss(b, beta)
    if kind == "hinge":
        return hinge_loss(b, beta, sigma if sigma is not None else 0.1 * beta, s)
    raise ValueError(kind)


__all__ = ["ARMS", "LOSSES", "BoundaryPredictor", "sample_boundaries", "binomial_loss", "hinge_loss",
           "prior_loss", "logit"]
