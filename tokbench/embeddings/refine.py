"""`refine_rows`: a short, bounded optimisation of only the new rows of a model whose vocabulary changed.

Self-distillation across tokenizers: the teacher is the base model reading a text under its own tokenizer,
the student is the edited model (same body, new vocabulary) reading the same text under the new one. Both
tokenizations are cut at their shared character boundaries (a position where a token starts in both); the
text between two consecutive shared boundaries is a chunk, and both models give it a log-likelihood (the sum
of the log-probabilities of the tokens that start inside it, each given the same preceding text). The loss
compares the two per chunk (ALM-style, arXiv 2503.20083):

- "distill": binarised KL between Bernoulli(p_teacher(chunk)) and Bernoulli(p_student(chunk));
- "distill_ntp": "distill" plus the student's next-token loss of the chunks (bits per byte);
- "ntp" (default): the student's next-token loss alone (no teacher pass: more steps per second; the body,
  which is the teacher's, stays frozen, so fitting the text is what moves the new rows towards it).

Only the new rows move: the embedding (and an untied head) stay frozen and a small trainable delta tensor
(one row per new id) is added where those ids are looked up (input) and to their logits (head; a tied head
shares the delta). By default (rows="touched") a step moves only the rows its batch holds, and (shared=True)
one affine map of the initial new rows (d x d + bias) is trained with them, so every new row moves with what
the batches teach (recipe and measurement: reports/transplant.md, "Refinement that learns per CPU second").
The last `held_out` fraction of the text (of each domain's, when the text is a mapping of domains) is never
trained on: the student's bits per byte on its chunks is measured before the first step and every `eval_every`
steps, training stops early after `patience` evaluations without improvement, and the rows returned are those of
the best evaluation (lowest total, no domain worse than at the start), the initial rows included, so they are
never worse than the initialisation on any domain's slice. Bounded by `seconds` (wall clock of the
optimisation, held-out evaluations included) and/or `steps`. Deterministic for a given seed when bounded by
steps. torch and transformers are imported only when this runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokbench import limits
from tokbench.errors import TokbenchError

LOSSES = ("distill", "distill_ntp", "ntp")
ROWS = ("touched", "all")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_LR = 5e-3  # measured best of 1e-2 / 5e-3 on GPT-2, Llama 3 and Qwen3 (reports/transplant.md)


@dataclass
class Refined:
    """rows: (len(new_ids), d) float32 input rows in request order; head_rows: the same for an untied head
    (None when the head is tied to the embedding); record: what was done (steps, seconds, curve, ...)."""

    rows: np.ndarray
    head_rows: np.ndarray | None
    record: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # seconds -> (rows, head_rows): the best rows at that time


@dataclass
class _Segment:
    student: list[int]
    teacher: list[int]
    s_chunk: np.ndarray  # chunk index (local, 0 = context only) of every student token
    t_chunk: np.ndarray
    chunk_bytes: np.ndarray  # UTF-8 bytes of every chunk (index 0 unused)


def check_refine_args(seconds, steps, *, lr: float = DEFAULT_LR, warmup: int = 0, batch: int = 4,
                      window: int = 256, held_out: float = 0.1, eval_every: int = 10, patience: int = 3,
                      loss: str = "ntp", rows: str = "touched", head_steps: int = 0,
                      shared: bool = True, precision: str = "auto") -> None:
    """Refuse out-of-range refinement arguments (one line each) before any work."""
    if seconds is None and steps is None:
        raise TokbenchError("refinement needs a bound", fix="pass seconds (e.g. 300) and/or steps")
    if seconds is not None:
        limits.real("refine seconds", seconds, 0, 7 * 86400, lo_open=True)
    limits.optional("refine steps", steps, 1, 10_000_000)
    limits.real("refine lr", lr, 0, 1, lo_open=True)
    limits.at_least("refine warmup", warmup, 0, 1_000_000, what="steps of linear learning-rate warm-up")
    limits.at_least("refine head_steps", head_steps, 0, 64, what="output-side steps per step on its hidden states")
    limits.at_least("refine batch", batch, 1, 1024, what="segments per step")
    limits.at_least("refine window", window, 8, 8192, what="new-tokenizer tokens per segment")
    limits.real("refine held_out", held_out, 0, 0.5, lo_open=True, what="fraction of the text kept for early stopping")
    limits.at_least("refine eval_every", eval_every, 1, what="steps between held-out evaluations")
    limits.at_least("refine patience", patience, 1, what="evaluations without improvement before stopping")
    if loss not in LOSSES:
        raise TokbenchError(f"unknown refinement loss {loss!r}", fix=f"use one of {', '.join(LOSSES)}")
    if not isinstance(shared, bool):
        raise TokbenchError(f"refine shared must be true or false, got {shared!r}", fix="pass shared=True or False")
    if rows not in ROWS:
        raise TokbenchError(f"unknown refinement rows mode {rows!r}", fix=f"use one of {', '.join(ROWS)}")
    if precision not in PRECISIONS:
        raise TokbenchError(f"unknown refinement precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")


def native_bf16(device: str) -> bool:
    """Whether `device` multiplies bfloat16 matrices natively (a CUDA GPU that supports it; a CPU with AMX tiles),
    so that training steps under bf16 autocast run faster than in float32 (on other CPUs they run slower)."""
    import torch

    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if str(device) != "cpu":
        return False
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: a torch without it stays in float32
    return bool(probe()) if probe is not None else False


def _starts(tok, text: str) -> tuple[list[int], np.ndarray]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = np.array([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
    if len(starts):
        starts = np.maximum.accumulate(starts)
        starts[0] = 0
    return list(enc["input_ids"]), starts


def _segments(text: str, s_tok, t_tok, window: int, t_window: int) -> list[_Segment]:
    """Cut `text` at shared boundaries into segments of at most `window` student / `t_window` teacher tokens."""
    s_ids, s_st = _starts(s_tok, text)
    t_ids, t_st = _starts(t_tok, text)
    shared = np.intersect1d(s_st, t_st)
    bounds = np.append(shared, len(text))
    char_bytes = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    byte_pos = np.concatenate([[0], np.cumsum(char_bytes)])
    # token index ranges per shared boundary: tokens starting in [bounds[i], bounds[i+1])
    s_first = np.searchsorted(s_st, bounds)
    t_first = np.searchsorted(t_st, bounds)
    out: list[_Segment] = []
    a, n_chunks = 0, len(shared)
    while a < n_chunks - 1:
        b = a + 1
        while (b < n_chunks and s_first[b + 1] - s_first[a] <= window and t_first[b + 1] - t_first[a] <= t_window):
            b += 1
        if b - a < 2:  # one chunk longer than a window (or nothing to predict): skip it
            a = b
            continue
        s_lo, s_hi, t_lo, t_hi = s_first[a], s_first[b], t_first[a], t_first[b]
        s_chunk = np.searchsorted(bounds, s_st[s_lo:s_hi], side="right") - 1 - a
        t_chunk = np.searchsorted(bounds, t_st[t_lo:t_hi], side="right") - 1 - a
        cb = byte_pos[bounds[a + 1:b + 1]] - byte_pos[bounds[a:b]]
        out.append(_Segment(s_ids[s_lo:s_hi], t_ids[t_lo:t_hi], s_chunk, t_chunk, cb))
        a = b
    return out


def _load(folder: Path, what: str, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # transformers raises many types
        raise TokbenchError(f"the {what}'s tokenizer does not load with transformers ({exc})", path=folder,
                            fix="check tokenizer.json / tokenizer_config.json") from None
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except Exception as exc:
        raise TokbenchError(f"the {what} model does not load with transformers ({exc})", path=folder,
                            fix="check config.json and the weights") from None
    lm.to(device).eval().requires_grad_(False)
    from tokbench.eval.bpb import split_head

    split = split_head(lm)
    if split is None:
        raise TokbenchError(f"refinement needs a causal LM whose logits are its head applied to the last hidden state "
                            f"({type(lm).__name__} is not one)", path=folder,
                            fix="use a Llama, Mistral, Qwen, GPT-2, GPT-NeoX, Phi, OLMo or StableLM model")
    return tok, lm, split


class _Student:
    """The edited model with trainable deltas on the rows of `new_ids` (input, and the untied head's); with
    `shared`, also one affine map of the initial new rows (d x d matrix and bias, from zero) that every new row
    gets, so what a batch teaches about some new rows reaches those it does not hold."""

    def __init__(self, lm, split, new_ids: list[int], device: str, shared: bool = False):
        import torch

        self.body, self.head = split
        self.emb = lm.get_input_embeddings().weight
        self.tied = self.head.weight.data_ptr() == self.emb.data_ptr()
        n, d = len(new_ids), self.emb.shape[1]
        self.ids = torch.tensor(new_ids, dtype=torch.long, device=device)
        self.pos = torch.full((self.emb.shape[0],), n, dtype=torch.long, device=device)
        self.pos[self.ids] = torch.arange(n, device=device)
        self.delta = torch.zeros(n, d, device=device, requires_grad=True)
        self.delta_head = None if self.tied else torch.zeros(n, d, device=device, requires_grad=True)
        self.zero = torch.zeros(1, d, device=device)
        self.shared: list = []
        if shared:
            self.init_in = self.emb[self.ids].detach().clone()
            self.shared = [torch.zeros(d, d, device=device, requires_grad=True),
                           torch.zeros(d, device=device, requires_grad=True)]
            if not self.tied:
                self.init_out = self.head.weight[self.ids].detach().clone()
                self.shared += [torch.zeros(d, d, device=device, requires_grad=True),
                                torch.zeros(d, device=device, requires_grad=True)]

    def params(self) -> list:
        return [self.delta] + ([] if self.delta_head is None else [self.delta_head])

    def deltas(self) -> tuple:
        """(input delta, head delta) of every new row: its own delta plus the shared map's."""
        d_in = self.delta
        if self.shared:
            d_in = d_in + self.init_in @ self.shared[0] + self.shared[1]
        if self.tied:
            return d_in, d_in
        d_out = self.delta_head
        if self.shared:
            d_out = d_out + self.init_out @ self.shared[2] + self.shared[3]
        return d_in, d_out

    def state(self) -> tuple:
        d_in, d_out = self.deltas()
        return (d_in.detach().clone(),) + (() if self.tied else (d_out.detach().clone(),))

    def logprobs(self, inp):
        """log p(inp[:, t+1] | inp[:, :t+1]) for every t: (batch, length - 1)."""
        import torch

        f = torch.nn.functional
        d_in, d_out = self.deltas()
        # embedding() backward sums the rows' gradients in a fixed order (a plain index would scatter-add them in
        # parallel, whose float rounding varies run to run)
        x = f.embedding(inp, self.emb) + f.embedding(self.pos[inp], torch.cat([d_in, self.zero]))
        h = self.body(inputs_embeds=x).last_hidden_state[:, :-1]
        self.last_hidden = h.detach()
        return self.head_logprobs(h, inp, d_out)

    def head_logprobs(self, h, inp, d_out=None):
        """The same log-probabilities from given last hidden states `h` (batch, length - 1, d): the output side
        alone, for the head steps that reuse a step's hidden states without another pass through the body."""
        import torch

        dh = self.deltas()[1] if d_out is None else d_out
        # float32 before the softmax: under bf16 autocast the products are bf16, and so would be logsumexp's sum
        logits = self.head(h).float().index_add(-1, self.ids, (h @ dh.T).float())
        target = inp[:, 1:]
        return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _teacher_logprobs(split, inp):
    import torch

    body, head = split
    with torch.inference_mode():
        h = body(input_ids=inp).last_hidden_state[:, :-1]
        logits = head(h)
        return logits.gather(-1, inp[:, 1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _batch(segs: list[_Segment], side: str, device: str):
    """Right-padded ids (causal attention: padding never reaches earlier positions), the global chunk index of
    every predicted position (-1: not counted) and the bytes of every chunk of the batch."""
    import torch

    length = max(len(getattr(s, side)) for s in segs)
    inp = torch.zeros(len(segs), length, dtype=torch.long)
    where = torch.full((len(segs), length - 1), -1, dtype=torch.long)
    offset = 0
    for r, s in enumerate(segs):
        ids = getattr(s, side)
        chunk = s.s_chunk if side == "student" else s.t_chunk
        inp[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        c = torch.tensor(chunk[1:], dtype=torch.long)
        where[r, :len(ids) - 1] = torch.where(c >= 1, c - 1 + offset, torch.full_like(c, -1))
        offset += len(s.chunk_bytes) - 1
    nbytes = torch.tensor(np.concatenate([s.chunk_bytes[1:] for s in segs]), dtype=torch.float64)
    return inp.to(device), where.to(device), nbytes, offset


def _chunk_sums(lp, where, n):
    import torch

    mask = where >= 0
    out = torch.zeros(n, dtype=lp.dtype, device=lp.device)
    return out.index_add(0, where[mask], lp[mask])


def _log1mexp(x):
    import torch

    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _loss(kind: str, s, t, nbytes):
    """Loss per byte of the batch's chunks: s / t are student / teacher chunk log-likelihoods (nats)."""
    import torch

    total = s.new_zeros(())
    if kind in ("distill", "distill_ntp"):
        pt = torch.exp(t)
        kl = pt * (t - s) + (1 - pt) * (_log1mexp(t) - _log1mexp(s))
        total = total + kl.sum()
    if kind in ("ntp", "distill_ntp"):
        total = total - s.sum()
    return total / float(nbytes.sum())


class _LazyAdam:
    """Adam on the row deltas that updates only the rows a step touched (rows="touched"), each row with its own
    step count for the bias correction; with every row touched at every step it is plain Adam. A row that no
    batch has held keeps its initial value: it gets no gradient but the push-down of its logit through the
    softmax, which Adam's normalisation would turn into a full-size step towards less probability."""

    def __init__(self, params: list, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = [torch.zeros(p.shape[0], dtype=torch.float64, device=p.device) for p in params]

    def step(self, rows, lr: float) -> None:
        """rows: indices (into the deltas) of the rows to update."""
        import torch

        b1, b2 = self.betas
        with torch.no_grad():
            for p, m, v, t in zip(self.params, self.m, self.v, self.t):
                if p.grad is None:  # a head step of an untied model: the input rows are not in its graph
                    continue
                t[rows] += 1
                c1 = (1 - b1 ** t[rows]).float().unsqueeze(1)
                c2 = (1 - b2 ** t[rows]).float().unsqueeze(1)
                g = p.grad[rows]
                m[rows] = b1 * m[rows] + (1 - b1) * g
                v[rows] = b2 * v[rows] + (1 - b2) * g * g
                p[rows] -= lr * (m[rows] / c1) / ((v[rows] / c2).sqrt() + self.eps)


def _step_shared(opt, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()


def _domains(text) -> dict[str, str]:
    if isinstance(text, str):
        return {"text": text}
    try:
        out = {str(k): v for k, v in dict(text).items()}
    except (TypeError, ValueError):
        raise TokbenchError("the refinement text must be a string or a mapping domain -> string",
                            fix="pass text='...' or text={'english': '...', 'math': '...'}") from None
    bad = [k for k, v in out.items() if not isinstance(v, str)]
    if not out or bad:
        raise TokbenchError(f"refinement domain {bad[0]!r} is not a string" if bad else "no refinement domains given",
                            fix="pass a mapping domain name -> text")
    return out


def teacher_chunk_logprobs(split, segs: list[_Segment], device: str):
    """The teacher's log-likelihood (nats) of every chunk of `segs`, concatenated in batch order (the value the
    training loop caches per segment: the teacher never changes)."""
    inp, where, _, n = _batch(segs, "teacher", device)
    return _chunk_sums(_teacher_logprobs(split, inp), where, n).float()


def refine_rows(teacher, student, new_ids, text, *, seconds: float | None = None, steps: int | None = None,
                lr: float = DEFAULT_LR, warmup: int = 0, batch: int = 4, window: int = 256, held_out: float = 0.1,
                eval_every: int = 10, patience: int = 3, loss: str = "ntp", rows: str = "touched",
                head_steps: int = 0, shared: bool = True, precision: str = "auto", seed: int = 0,
                device: str | None = None, snapshots=(), progress: bool = True) -> Refined:
    """Refine the rows of `new_ids` (ids of the student's vocabulary) of the model folder `student` against the
    model folder `teacher` (the model before its vocabulary changed) on `text`; returns the rows and a record.

    text: a string, or a mapping domain name -> string (e.g. {"english": ..., "math": ..., "code": ...}): each
    domain keeps its own held-out slice (its last `held_out` share) and rows are only accepted when the held-out
    bits/byte improves in total and is no worse than the initialisation on any domain's slice.
    seconds / steps: bounds (at least one). lr: Adam's learning rate on the row deltas; warmup: steps of linear
    warm-up to it. batch: segments per step; window: student tokens per segment. held_out / eval_every /
    patience: early stopping (see the module doc). loss: one of LOSSES. rows: "touched" (default: a step updates
    only the new rows its batch holds, and segments without any new id are not trained on) or "all" (every new
    row every step, plain Adam). head_steps: after each step, that many more Adam steps of the same loss on the
    output side alone (the step's last hidden states kept, the body not run again). shared: also train one
    affine map (d x d and a bias, from zero, Adam at lr / sqrt(d)) applied to every new row's initial value, so
    rows no batch holds move too (with rows="touched" the per-row deltas still move only the rows a batch
    holds). precision: "bf16" runs the training steps under bfloat16 autocast (the rows, their optimiser state,
    the softmax and every held-out evaluation stay float32), "fp32" does not, "auto" (default) picks bf16 where
    the device multiplies bf16 natively (`native_bf16`: about 2x faster steps on a CPU with AMX). device: torch
    device (default cpu). snapshots: seconds at which to evaluate and keep the best rows
    so far (`Refined.snapshots`; for curves of one run). The teacher's chunk log-likelihoods are computed once
    per training segment and cached.
    """
    check_refine_args(seconds, steps, lr=lr, warmup=warmup, batch=batch, window=window, held_out=held_out,
                      eval_every=eval_every, patience=patience, loss=loss, rows=rows, head_steps=head_steps,
                      shared=shared, precision=precision)
    domains = _domains(text)
    from tokbench.extras import need

    need("torch", "transformers", what="refinement of new rows")
    import torch
    from tqdm import tqdm

    t_start = time.perf_counter()
    device = device or "cpu"
    bf16 = precision == "bf16" or (precision == "auto" and native_bf16(device))

    def amp():
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    teacher, student = Path(teacher), Path(student)
    s_tok, s_lm, s_split = _load(student, "student", device)
    rows_n = s_lm.get_input_embeddings().weight.shape[0]
    new_ids = [int(i) for i in new_ids]
    bad = [i for i in new_ids if not 0 <= i < rows_n]
    if bad:
        raise TokbenchError(f"new id {bad[0]} is outside the student's {rows_n:,} embedding rows", path=student,
                            fix="pass ids of the edited model's vocabulary")
    if len(set(new_ids)) != len(new_ids):
        raise TokbenchError("new ids repeat", fix="pass each new id once")
    t_tok, t_lm, t_split = _load(teacher, "teacher", device) if loss != "ntp" else (None, None, None)
    if t_tok is None:
        from transformers import AutoTokenizer

        t_tok = AutoTokenizer.from_pretrained(str(teacher))  # the teacher's boundaries still define the chunks
    t_window = int(window * 1.5) + 8
    is_new = np.zeros(rows_n, dtype=bool)
    is_new[new_ids] = True
    train: list[_Segment] = []
    held: dict[str, list[_Segment]] = {}
    chars = {}
    dropped = 0
    for name, body in domains.items():
        cut = int(len(body) * (1 - held_out))
        cut = body.rfind("\n", 0, cut) + 1 or cut  # the held-out slice starts on a line
        segs = _segments(body[:cut], s_tok, t_tok, window, t_window)
        if rows == "touched":  # a segment without new ids would update no row
            keep = [s for s in segs if is_new[s.student].any()]
            dropped += len(segs) - len(keep)
            segs = keep
        train += segs
        held[name] = _segments(body[cut:], s_tok, t_tok, window, t_window)
        chars[name] = {"train": cut, "held_out": len(body) - cut}
        if not held[name]:
            raise TokbenchError(f"the refinement text{'' if len(domains) == 1 else f' of domain {name!r}'} is too "
                                f"short ({len(body):,} characters give no held-out segment)",
                                fix="pass a longer text (at least a few pages)")
    if not train:
        total = sum(map(len, domains.values()))
        raise TokbenchError(f"the refinement text is too short or holds no new token ({total:,} characters give no "
                            f"training segment)", fix="pass a longer text (at least a few pages)")
    torch.manual_seed(seed)
    stu = _Student(s_lm, s_split, new_ids, device, shared=shared)
    opt = _LazyAdam(stu.params(), lr)
    # the map multiplies rows of d entries: a step of lr / sqrt(d) on it moves a row about as far as lr on its own
    opt_shared = torch.optim.Adam(stu.shared, lr=lr / math.sqrt(stu.emb.shape[1])) if shared else None
    rng = np.random.default_rng(seed)

    held_batches = {d: [h[i:i + batch] for i in range(0, len(h), batch)] for d, h in held.items()}
    held_bytes = {d: float(sum(s.chunk_bytes[1:].sum() for s in h)) for d, h in held.items()}
    all_bytes = sum(held_bytes.values())

    def held_nats(teacher_side: bool = False) -> dict[str, float]:
        out = {}
        with torch.inference_mode():
            for d, batches in held_batches.items():
                total = 0.0
                for segs in batches:
                    if teacher_side:
                        total += float(teacher_chunk_logprobs(t_split, segs, device).double().sum())
                    else:
                        inp, where, _, n = _batch(segs, "student", device)
                        total += float(_chunk_sums(stu.logprobs(inp), where, n).double().sum())
                out[d] = -total / math.log(2)
        return out

    def as_bpb(nats: dict[str, float]) -> tuple[float, dict[str, float]]:
        return sum(nats.values()) / all_bytes, {d: v / held_bytes[d] for d, v in nats.items()}

    teacher_bpb, teacher_dom = as_bpb(held_nats(teacher_side=True)) if t_split is not None else (None, None)
    init_bpb, init_dom = as_bpb(held_nats())
    setup_s = time.perf_counter() - t_start
    curve = [{"step": 0, "seconds": 0.0, "held_out_bpb": init_bpb, "domains": init_dom}]
    best = (init_bpb, 0, stu.state())
    pending = sorted(float(x) for x in snapshots)
    taken: dict = {}

    def rows_of(deltas):
        with torch.no_grad():
            r = (stu.emb[stu.ids] + deltas[0]).float().cpu().numpy()
            h = None if stu.tied else (stu.head.weight[stu.ids] + deltas[1]).float().cpu().numpy()
        return r, h

    def evaluate() -> bool:
        """One held-out evaluation; True when it improved on the best so far in total and is no worse than the
        initialisation on any domain."""
        nonlocal best
        bpb, dom = as_bpb(held_nats())
        recent = train_losses[-(step - curve[-1]["step"]):] if step > curve[-1]["step"] else []
        worse = sorted(d for d, v in dom.items() if v > init_dom[d])
        curve.append({"step": step, "seconds": round(time.perf_counter() - t0, 2), "held_out_bpb": bpb, "domains": dom,
                      "train_loss": float(np.mean(recent)) if recent else None,
                      **({"worse_on": worse} if worse else {})})
        bar.set_postfix(held_out_bpb=f"{bpb:.4f}")
        if bpb < best[0] and not worse:
            best = (bpb, step, stu.state())
            return True
        return False

    teacher_cache: dict[int, object] = {}  # training segment -> the teacher's chunk log-likelihoods
    order: list[int] = []
    step, since_best, stopped = 0, 0, "steps"
    t0 = time.perf_counter()
    teacher_s = 0.0
    train_losses: list[float] = []
    bar = tqdm(total=steps, desc="refining new rows", unit="step", disable=not progress)
    while True:
        if steps is not None and step >= steps:
            stopped = "steps"
            break
        if seconds is not None and time.perf_counter() - t0 >= seconds:
            stopped = "seconds"
            break
        while pending and time.perf_counter() - t0 >= pending[0]:
            if curve[-1]["step"] != step:
                evaluate()
            taken[pending.pop(0)] = rows_of(best[2])
        if len(order) < batch:
            order += list(rng.permutation(len(train)))
        pick, order = order[:batch], order[batch:]
        segs = [train[i] for i in pick]
        inp, where, nbytes, n = _batch(segs, "student", device)
        t_sum = None
        if loss != "ntp":
            tt = time.perf_counter()
            missing = [i for i in dict.fromkeys(pick) if i not in teacher_cache]
            if missing:
                flat = teacher_chunk_logprobs(t_split, [train[i] for i in missing], device)
                at = 0
                for i in missing:
                    k = len(train[i].chunk_bytes) - 1
                    teacher_cache[i] = flat[at:at + k]
                    at += k
            t_sum = torch.cat([teacher_cache[i] for i in pick])
            teacher_s += time.perf_counter() - tt
        with amp():
            s_sum = _chunk_sums(stu.logprobs(inp), where, n)
        value = _loss(loss, s_sum, t_sum, nbytes)
        for p in stu.params() + stu.shared:
            p.grad = None
        value.backward()
        touched = (torch.unique(stu.pos[inp]) if rows == "touched"
                   else torch.arange(len(new_ids) + 1, device=device))
        touched = touched[touched < len(new_ids)]
        step_lr = lr * min(1.0, (step + 1) / (warmup + 1))
        opt.step(touched, step_lr)
        if opt_shared is not None:
            _step_shared(opt_shared, step_lr / math.sqrt(stu.emb.shape[1]))
        for _ in range(head_steps):  # the output side again on this step's hidden states: no body pass
            with amp():
                lp_h = stu.head_logprobs(stu.last_hidden, inp)
            value_h = _loss(loss, _chunk_sums(lp_h, where, n), t_sum, nbytes)
            for p in stu.params() + stu.shared:
                p.grad = None
            value_h.backward()
            opt.step(touched, step_lr)
            if opt_shared is not None:
                _step_shared(opt_shared, step_lr / math.sqrt(stu.emb.shape[1]))
        step += 1
        train_losses.append(float(value.detach()))
        bar.update(1)
        if step % eval_every == 0:
            since_best = 0 if evaluate() else since_best + 1
            if since_best >= patience:
                stopped = "early"
                break
    if curve[-1]["step"] != step:
        evaluate()
    bar.close()
    best_bpb, best_step, deltas = best
    rows_out, head_rows = rows_of(deltas)
    for left in pending:
        taken[left] = (rows_out, head_rows)
    ever = torch.zeros(len(new_ids), dtype=torch.bool)
    ever[(opt.t[0] > 0).cpu()] = True
    record = {
        "loss": loss, "lr": lr, "warmup": warmup, "batch": batch, "window": window, "rows_mode": rows,
        "head_steps": head_steps, "shared": shared, "precision": "bf16" if bf16 else "fp32", "seed": seed,
        "device": device, "bounds": {"seconds": seconds, "steps": steps}, "stopped": stopped, "steps": step,
        "seconds": round(time.perf_counter() - t0, 2), "setup_seconds": round(setup_s, 2),
        "teacher_seconds": round(teacher_s, 2), "teacher_cached_segments": len(teacher_cache),
        "rows": len(new_ids), "rows_updated": int(ever.sum()), "head_rows": 0 if stu.tied else len(new_ids),
        "tied": stu.tied,
        "train": {"chars": sum(c["train"] for c in chars.values()), "segments": len(train),
                  "segments_without_new_ids_dropped": dropped},
        "held_out": {"chars": sum(c["held_out"] for c in chars.values()), "segments": sum(map(len, held.values())),
                     "bytes": int(all_bytes), "teacher_bpb": teacher_bpb, "initial_bpb": init_bpb,
                     "best_bpb": best_bpb},
        "domains": {d: {"chars": chars[d], "held_out_bytes": int(held_bytes[d]), "initial_bpb": init_dom[d],
                        "best_bpb": next(c["domains"][d] for c in curve if c["step"] == best_step),
                        **({"teacher_bpb": teacher_dom[d]} if teacher_dom else {})} for d in domains},
        "best_step": best_step, "returned": "refined" if best_step > 0 else "initial",
        "curve": curve,
    }
    if teacher_bpb:
        for point in curve:
            point["ratio_to_teacher"] = point["held_out_bpb"] / teacher_bpb
    return Refined(rows=rows_out, head_rows=head_rows, record=record, snapshots=taken)
