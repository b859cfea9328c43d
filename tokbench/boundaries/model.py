"""A byte-level causal hourglass language model with learned segment boundaries.

    bytes -> embedding -> pre-layers -> h ──> boundary predictor -> b_t (byte t ends a segment)
                                        │
              shortening: segment k = the bytes after boundary k-1 up to and including boundary k,
              mean-pooled; the middle sequence is [null, pool_0, pool_1, ...]
                                        │
                           middle layers (causal, over segments)
                                        │
              upsampling: byte t takes middle output m_t = number of segments completed at t
              (boundaries at positions <= t), which has seen null + the completed segments only
                                        │
    h + upsampled ──> post-layers ──> next-byte logits

Why nothing sees later bytes: b_t depends on bytes <= t (causal pre-layers); middle position m attends to
positions <= m, i.e. null and pools 0..m-1; byte t reads position m_t, so only segments that ended at or
before t, whose bytes are all <= t. The incomplete segment holding t sits at position m_t + 1 and is
invisible to t. The assignment matrices are relu(1 - |c_t - k|) of the (straight-through) boundary
cumsums: exactly one-hot in value, with a gradient to the predictor.

Transformer blocks are pre-LN with rotary position embeddings (RoPE) and a causal mask. `arm="bytes"` runs the
middle layers on the bytes themselves (no shortening): the byte-level baseline of the same depth.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.boundaries.predictors import BoundaryPredictor, sample_boundaries


@dataclass
class ModelConfig:
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    layers: tuple[int, int, int] = (2, 2, 2)  # pre, middle, post
    seq_len: int = 256
    d_predictor: int = 256
    arm: str = "magnet"
    routes: list[str] = field(default_factory=lambda: ["all"])  # predictor names (script groups for magnet)
    route_priors: list[float] = field(default_factory=lambda: [0.2])  # bias initialisation per predictor
    tau: float = 0.5

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["layers"] = tuple(d["layers"])
        return cls(**d)


def _rope(x: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over the sequence axis of (B, H, T, Dh)."""
    _, _, t, dh = x.shape
    half = dh // 2
    inv = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out if 2 * half == dh else torch.cat([out, x[..., 2 * half:]], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(_rope(q), _rope(k), v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.ln2(x))


def _stack(n: int, cfg: ModelConfig) -> nn.ModuleList:
    return nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.d_ff) for _ in range(n))


def _assign(c: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T, n): relu(1 - |c_t - k|), one-hot for integer c_t (gradient through c)."""
    k = torch.arange(n, device=c.device, dtype=c.dtype)
    return torch.relu(1.0 - (c[..., None] - k).abs())


def _hidden(m, x: torch.Tensor) -> torch.Tensor:
    """The pre-layers' output (B, T, d) of a module with embed and pre."""
    h = m.embed(x)
    for blk in m.pre:
        h = blk(h)
    return h


def _boundaries(m, x: torch.Tensor, route: torch.Tensor, generator=None):
    """(pre-layer output, hard boundaries (B, T) with straight-through gradient, probabilities) of a module
    with embed, pre, predictor (None: no boundaries) and cfg."""
    h = m.hidden(x)
    if m.predictor is None:
        return h, None, None
    logits = m.predictor(h, route)
    b, p = sample_boundaries(logits, training=m.training, tau=m.cfg.tau, generator=generator,
                             noise=getattr(m, "noise_scale", 1.0))
    return h, b, p


class PreSegmenter(nn.Module):
    """The standalone segmenter: byte embedding, pre-layers and predictor(s) of a trained HourglassLM (its
    state is HourglassLM.segmenter_parameters(), same keys)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(256, cfg.d_model)
        self.pre = _stack(cfg.layers[0], cfg)
        self.predictor = BoundaryPredictor(cfg.d_model, cfg.d_predictor, list(cfg.route_priors))
        self.shortens = True

    hidden = _hidden
    boundaries = _boundaries


class HourglassLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        self.cfg = cfg
        self.embed = nn.Embedding(256, cfg.d_model)
        self.pre, self.mid, self.post = (_stack(n, cfg) for n in cfg.layers)
        self.null = nn.Parameter(torch.zeros(cfg.d_model))
        self.shortens = cfg.arm != "bytes"
        self.predictor = (BoundaryPredictor(cfg.d_model, cfg.d_predictor, list(cfg.route_priors))
                          if self.shortens else None)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, 256, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)

    def segmenter_parameters(self) -> dict[str, torch.Tensor]:
        """The state of the standalone segmenter: embedding, pre-layers, predictor(s)."""
        return {k: v for k, v in self.state_dict().items()
                if k.startswith(("embed.", "pre.", "predictor."))}

    hidden = _hidden
    boundaries = _boundaries

    def forward(self, x: torch.Tensor, route: torch.Tensor | None = None, generator=None) -> dict:
        if route is None:
            route = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h, b, p = self.boundaries(x, route, generator)
        if b is None:
            z = h
            for blk in self.mid:
                z = blk(z)
            y = h + z
        else:
            inclusive = b.cumsum(-1)
            exclusive = inclusive - b
            n_pools = int(exclusive[:, -1].detach().max().item()) + 1
            a = _assign(exclusive, n_pools)  # (B, T, P): byte t in segment k
            pooled = torch.einsum("btk,btd->bkd", a, h) / a.sum(1).clamp(min=1.0)[..., None]
            z = torch.cat([self.null.expand(x.shape[0], 1, -1), pooled], dim=1)
            for blk in self.mid:
                z = blk(z)
            u = _assign(inclusive, n_pools + 1)  # (B, T, P+1): byte t reads middle position m_t
            y = h + torch.einsum("btm,bmd->btd", u, z)
        for blk in self.post:
            y = blk(y)
        return {"logits": self.head(self.ln_f(y)), "boundaries": b, "probs": p}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ModelConfig", "HourglassLM", "PreSegmenter", "Block", "n_parameters"]
