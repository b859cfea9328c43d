"""Under-trained ("glitch") token detection in the style of Land & Bartolo, "Fishing for Magikarp"
(arXiv 2405.05417), written for tokbench from the paper's description.

Three steps, each a pure function over arrays (``detect`` runs the first two, ``detect_model`` reads a
model folder first, ``verify`` is the optional third):

1. **Indicator** (``indicator_scores``): one number per row, *low = under-trained*.
   - ``ein_l2``: L2 norm of the input-embedding row (untied models: rows that never receive a
     gradient keep their small initial norm or decay under weight decay).
   - ``eout_cos``: cosine distance of each output (unembedding) row to the mean of the *reference*
     rows (tokens known never to occur in training). In a tied model every never-seen token only gets
     the softmax push "away from the average hidden state" and weight decay, so all of them drift
     towards the same direction; the references show where that direction is.
   - ``eout_cos_centered``: the same after subtracting the mean of all rows; ``eout_cos_nopc``: after
     centring and removing the first principal component as well.
   ``auto`` = ``ein_l2`` for untied models, ``eout_cos`` for tied ones.
2. **References** (``known_unused``), needed by the ``eout_*`` indicators, derived from the vocabulary:
   (a) rows beyond the tokenizer (padding rows) and ids with no token; (b) single-byte tokens
   (byte-level or ``<0xNN>`` byte fallback) for the bytes valid UTF-8 never contains (0xC0, 0xC1,
   0xF5-0xFF); (c) tokens named like reserved/unused placeholders (``<unused12>``,
   ``<|reserved_special_token_3|>``). When none of these exist (SmolLM2 has no 0xC0 token), (d) the
   tokens the tokenizer itself can never produce from text (their own text does not encode to them,
   ``tokbench.surgery.union.reachability``): a model trained with that tokenizer never saw them as
   input or target. (e) Still none (SmolLM2: every token is reachable), for a tied model only: the
   0.1 % of ordinary, non-degenerate rows closest in direction to the mean row ("centroid"), a
   heuristic: never-seen tokens drift together, and their direction dominates the mean. On
   tbd-gpt2-d128 it gives AUROC 0.990 against never-seen tokens, against 0.9999 with the
   invalid-UTF-8 byte references (reports/surgery-analysis.md). Which rule gave the references is
   recorded.
3. **Degenerate rows** (``degenerate_rows``): a zero row has cosine distance 1 to everything and a row
   equal to the mean of all rows has an ordinary norm and distance, so both would rank as *well*
   trained; such rows (and exact duplicates of another row) are reported whatever their score.

Candidates = degenerate rows + rows whose score is at or below the ``percentile`` of the scores of
the ordinary tokens (specials and references excluded from the quantile). ``verify`` prompts a
``transformers`` causal LM (CPU) with a capped number of candidates, generates a few tokens greedily
and records the highest probability the model gives to re-emitting the candidate: > 0.9
``strong_rejected``, > 0.1 ``weak_rejected``, < 0.001 ``strong_verified``, else ``weak_verified``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tokbench.errors import TokbenchError
from tokbench.vocab.vocabulary import Kind, Vocabulary

INDICATORS = ("ein_l2", "eout_cos", "eout_cos_centered", "eout_cos_nopc")
INVALID_UTF8_BYTES = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])
_RESERVED_NAME = re.compile(r"^<\|?(unused|reserved|reserved_special_token|extra_token)[_-]?\d*\|?>$|"
                            r"^<\|?(unused|reserved_special_token)_?\d+\|?>$|^\[unused\d+\]$", re.IGNORECASE)
CENTROID_FRACTION = 0.001  # rule (e): share of rows taken as references
MAX_VERIFY = 10_000  # resource bound on prompted candidates
LABELS = ("strong_rejected", "weak_rejected", "weak_verified", "strong_verified")


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def _cos_distance(rows: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """1 - cos(row, ref) per row; a zero row (or zero ref) gives 1."""
    return 1.0 - _unit(rows) @ _unit(ref[None, :])[0]


# --- references --------------------------------------------------------------------------------
def _single_byte(vocab: Vocabulary, i: int) -> int | None:
    b = vocab.token_bytes[i]
    if b is None or len(b) != 1 or vocab.kinds[i] not in (Kind.NORMAL, Kind.BYTE):
        return None
    return b[0]


def known_unused(vocab: Vocabulary, rows: int, tokenizer_json: str | Path | dict | None = None
                 ) -> tuple[list[int], str]:
    """Ids known never to occur in training text, and the rule that found them (module docstring, step 2).

    rows: number of embedding rows (rows >= len(vocab) are padding). tokenizer_json: the tokenizer
    file, for rule (d) (unreachable tokens); without it rule (d) is skipped.
    """
    found: list[int] = list(range(len(vocab), rows))
    found += [i for i in range(min(len(vocab), rows)) if vocab.kinds[i] == Kind.UNUSED]
    rules = ["padding rows"] if found else []
    invalid = [i for i in range(min(len(vocab), rows)) if _single_byte(vocab, i) in INVALID_UTF8_BYTES]
    if invalid:
        found += invalid
        rules.append("invalid-UTF-8 byte tokens")
    named = [i for i, t in enumerate(vocab.tokens[:rows]) if t is not None and _RESERVED_NAME.match(t)]
    if named:
        found += named
        rules.append("reserved/unused names")
    if not found and tokenizer_json is not None:
        from tokbench.surgery.union import reachability

        reach = reachability(tokenizer_json)
        found = [i for i in reach.never_produced if i < rows]
        if found:
            rules.append("tokens the tokenizer cannot produce")
    return sorted(set(found)), " + ".join(rules) if rules else "none"


# --- indicator -----------------------------------------------------------------------------------
def indicator_scores(indicator: str, *, embedding: np.ndarray, head: np.ndarray | None = None,
                     references: Sequence[int] = ()) -> np.ndarray:
    """Per-row indicator (low = under-trained). head: the output matrix (None = tied, the embedding)."""
    if indicator not in INDICATORS:
        raise TokbenchError(f"unknown indicator {indicator!r}", fix=f"use one of auto, {', '.join(INDICATORS)}")
    if indicator == "ein_l2":
        return np.linalg.norm(embedding, axis=1).astype(np.float64)
    out = (embedding if head is None else head).astype(np.float64, copy=False)
    refs = np.asarray(list(references), dtype=np.int64)
    if refs.size == 0:
        raise TokbenchError(f"indicator {indicator} needs reference tokens known never to occur in training",
                            fix="pass references=[ids], or use indicator='ein_l2' for an untied model")
    if indicator == "eout_cos":
        return _cos_distance(out, out[refs].mean(axis=0))
    centred = out - out.mean(axis=0)
    if indicator == "eout_cos_nopc":
        # first principal direction of the centred rows by power iteration (the matrix is tall)
        v = np.random.default_rng(0).standard_normal(centred.shape[1])
        for _ in range(50):
            v = centred.T @ (centred @ v)
            v /= np.linalg.norm(v)
        centred = centred - np.outer(centred @ v, v)
    return _cos_distance(centred, centred[refs].mean(axis=0))


def degenerate_rows(matrix: np.ndarray, *, zero_tol: float = 1e-6, mean_cos: float = 0.999) -> dict[int, str]:
    """Rows that look trained by the indicators but cannot be: id -> "zero" | "mean" | "duplicate of N".

    zero: norm < zero_tol x the median row norm; mean: cosine to the mean of all rows > mean_cos;
    duplicate: bitwise equal to a lower-id row (every member of a group after the first).
    """
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1)
    med = float(np.median(norms)) if len(norms) else 0.0
    out: dict[int, str] = {}
    for i in np.flatnonzero(norms <= zero_tol * max(med, 1e-30)):
        out[int(i)] = "zero"
    cos = 1.0 - _cos_distance(m.astype(np.float64), m.astype(np.float64).mean(axis=0))
    for i in np.flatnonzero(cos > mean_cos):
        out.setdefault(int(i), "mean")
    keys = m.view(np.dtype((np.void, m.dtype.itemsize * m.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    owner = first[inverse]
    for i in np.flatnonzero(owner != np.arange(len(m))):
        out.setdefault(int(i), f"duplicate of {int(owner[i])}")
        out.setdefault(int(owner[i]), f"duplicated by {int(i)}")
    return out


# --- detection -----------------------------------------------------------------------------------
@dataclass
class Undertrained:
    """Result of a detection: per-row scores, the candidates and (after verify) their labels."""

    indicator: str
    scores: np.ndarray  # one per row, low = under-trained
    references: list[int]
    reference_rule: str
    percentile: float
    threshold: float
    candidates: list[int]  # degenerate first, then by score (ascending)
    degenerate: dict[int, str]
    tokens: list[str | None] = field(default_factory=list)  # token string per id (None beyond the tokenizer)
    verified: dict[int, dict] = field(default_factory=dict)  # id -> {"max_prob": p, "label": ...}

    def to_dict(self, top: int | None = None) -> dict:
        """JSON-ready summary: settings, counts, and one record per candidate (first `top`)."""
        cands = self.candidates if top is None else self.candidates[:top]
        label_counts = {k: 0 for k in LABELS}
        for v in self.verified.values():
            label_counts[v["label"]] = label_counts.get(v["label"], 0) + 1
        return {
            "indicator": self.indicator, "references": len(self.references),
            "reference_rule": self.reference_rule, "percentile": self.percentile,
            "threshold": self.threshold, "rows": int(len(self.scores)),
            "candidates": len(self.candidates), "degenerate": len(self.degenerate),
            "verified": len(self.verified), "labels": label_counts,
            "tokens": [{"id": i, "token": self.tokens[i] if i < len(self.tokens) else None,
                        "score": float(self.scores[i]), "degenerate": self.degenerate.get(i),
                        **({"verification": self.verified[i]} if i in self.verified else {})}
                       for i in cands],
        }


def detect(vocab: Vocabulary, embedding: np.ndarray, head: np.ndarray | None = None, *,
           indicator: str = "auto", references: Sequence[int] | str = "auto", percentile: float = 2.0,
           tokenizer_json: str | Path | dict | None = None, include_special: bool = False) -> Undertrained:
    """Score every row, find degenerate rows, pick the candidates (module docstring).

    head: the untied output matrix (None for a tied model). references: "auto" (``known_unused``) or
    ids. percentile: candidates are the ordinary rows scoring at or below this percentile (0 < p < 100).
    include_special: also let special/control tokens be candidates by score (degenerate ones always are).
    """
    if not 0 < percentile < 100:
        raise TokbenchError(f"percentile {percentile} is outside (0, 100)", fix="pass e.g. percentile=2.0")
    if head is not None and head.shape != embedding.shape:
        raise TokbenchError(f"head shape {head.shape} differs from embedding shape {embedding.shape}",
                            fix="pass the model's own output matrix, or head=None for a tied model")
    rows = embedding.shape[0]
    if indicator == "auto":
        indicator = "eout_cos" if head is None else "ein_l2"
    if references == "auto":
        refs, rule = known_unused(vocab, rows, tokenizer_json)
    else:
        refs = sorted({int(i) for i in references})
        if refs and (refs[0] < 0 or refs[-1] >= rows):
            raise TokbenchError(f"reference id {refs[-1] if refs[-1] >= rows else refs[0]} is outside 0..{rows - 1}",
                                fix="pass ids of embedding rows")
        rule = "given"
    degenerate = degenerate_rows(embedding)
    if head is not None:
        for i, why in degenerate_rows(head).items():
            degenerate.setdefault(i, f"head {why}")
    ordinary_kinds = (Kind.NORMAL, Kind.BYTE) if not include_special else tuple(Kind)
    if not refs and references == "auto" and indicator.startswith("eout"):
        refs = _centroid_references(embedding if head is None else head, vocab, degenerate)
        rule = "centroid (0.1% of rows nearest the mean direction)"
    scores = indicator_scores(indicator, embedding=embedding, head=head, references=refs)
    ref_set = set(refs)
    pool = [i for i in range(min(rows, len(vocab)))
            if vocab.kinds[i] in ordinary_kinds and i not in ref_set and i not in degenerate]
    if not pool:
        raise TokbenchError("no ordinary tokens to score", path=vocab.source, fix="check the vocabulary and the rows")
    threshold = float(np.percentile(scores[pool], percentile))
    by_score = sorted((i for i in pool if scores[i] <= threshold), key=lambda i: (scores[i], i))
    candidates = sorted(degenerate, key=lambda i: (scores[i], i)) + by_score
    tokens = list(vocab.tokens[:rows]) + [None] * max(0, rows - len(vocab))
    return Undertrained(indicator=indicator, scores=scores, references=refs, reference_rule=rule,
                        percentile=percentile, threshold=threshold, candidates=candidates,
                        degenerate=degenerate, tokens=tokens)


def _centroid_references(out: np.ndarray, vocab: Vocabulary, degenerate: dict[int, str]) -> list[int]:
    """Rule (e) of the module docstring: ordinary rows nearest in direction to the mean row."""
    pool = np.asarray([i for i in range(min(len(vocab), len(out)))
                       if vocab.kinds[i] in (Kind.NORMAL, Kind.BYTE) and i not in degenerate], dtype=np.int64)
    if pool.size == 0:
        return []
    cos = 1.0 - _cos_distance(out[pool].astype(np.float64), out[pool].astype(np.float64).mean(axis=0))
    k = max(8, int(round(CENTROID_FRACTION * len(out))))
    return sorted(int(i) for i in pool[np.argsort(-cos, kind="stable")[:k]])


def detect_model(model: str | Path, **kwargs) -> Undertrained:
    """``detect`` on a Hugging Face model folder (or model asset name): reads only the embedding and
    the head (tokbench.vocab.model_io) and the folder's tokenizer."""
    from tokbench.vocab.load import load_vocabulary
    from tokbench.vocab.model_io import open_model_folder

    path = Path(model)
    if not path.exists():
        from tokbench.assets import resolve

        path = Path(resolve(str(model), kind="model"))
    folder = open_model_folder(path)
    vocab = load_vocabulary(folder.path)
    emb = folder.read_embedding()
    head = None if folder.tied else folder.read_head()
    tj = folder.path / "tokenizer.json"
    kwargs.setdefault("tokenizer_json", tj if tj.is_file() else None)
    return detect(vocab, emb, head, **kwargs)


# --- verification --------------------------------------------------------------------------------
# (prefix, suffix) around the candidate id; the model should re-emit the candidate right after.
PROMPTS: dict[str, tuple[str, str]] = {
    "repeat": ("Copy each word exactly.\nword: apple\ncopy: apple\nword: river\ncopy: river\nword: ", "\ncopy:"),
    "quote": ('The string "', '" is written again here: "'),
    "echo": ("", ""),  # the candidate repeated: filled in by verify
}
ECHO_REPEATS = 12


def label_of(max_prob: float) -> str:
    if max_prob > 0.9:
        return "strong_rejected"
    if max_prob > 0.1:
        return "weak_rejected"
    if max_prob < 0.001:
        return "strong_verified"
    return "weak_verified"


def verify(model, encode: Callable[[str], list[int]], candidates: Sequence[int], *, max_candidates: int = 100,
           new_tokens: int = 3, prompts: Sequence[str] = ("repeat", "quote", "echo"), batch_size: int = 32,
           progress: bool = True) -> dict[int, dict]:
    """Prompt a causal LM with each candidate and record how likely it re-emits it.

    model: a ``transformers`` causal LM (eval mode; any device). encode: text -> ids without specials
    (e.g. ``tokenizers.Tokenizer.encode(t, add_special_tokens=False).ids``). The first
    ``max_candidates`` candidates are tested (bounded by MAX_VERIFY); for each prompt the candidate id is
    placed between the encoded prefix and suffix, ``new_tokens`` tokens are generated greedily and the
    candidate's probability is read at every step; the result is the maximum over steps and prompts.
    Returns id -> {"max_prob", "label", "per_prompt": {name: p}}.
    """
    import torch
    from tqdm.auto import tqdm

    if not 1 <= max_candidates <= MAX_VERIFY:
        raise TokbenchError(f"max_candidates {max_candidates} is outside 1..{MAX_VERIFY}",
                            fix="verification prompts the model per candidate; pass a smaller cap")
    if not 1 <= new_tokens <= 16:
        raise TokbenchError(f"new_tokens {new_tokens} is outside 1..16", fix="pass e.g. new_tokens=3")
    unknown = [p for p in prompts if p not in PROMPTS]
    if unknown:
        raise TokbenchError(f"unknown verification prompt {unknown[0]!r}", fix=f"use {', '.join(PROMPTS)}")
    ids = [int(i) for i in list(candidates)[:max_candidates]]
    device = next(model.parameters()).device
    import inspect

    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    best: dict[int, dict[str, float]] = {i: {} for i in ids}
    steps = [(p, k) for p in prompts for k in range(0, len(ids), batch_size)]
    for name, start in tqdm(steps, desc="verifying", unit="batch", disable=not progress, leave=False):
        chunk = ids[start:start + batch_size]
        if name == "echo":
            sep = encode(" ")
            rows = [([c] + sep) * ECHO_REPEATS for c in chunk]
        else:
            pre, suf = (encode(s) if s else [] for s in PROMPTS[name])
            rows = [pre + [c] + suf for c in chunk]
        x = torch.tensor(rows, dtype=torch.long, device=device)
        target = torch.tensor(chunk, dtype=torch.long, device=device)
        top = torch.zeros(len(chunk), dtype=torch.float64)
        with torch.no_grad():
            for _ in range(new_tokens):  # prompts are short: re-run them whole, last position's logits only
                logits = model(input_ids=x, **keep).logits[:, -1].float()
                probs = torch.softmax(logits, dim=-1)
                top = torch.maximum(top, probs.gather(1, target[:, None])[:, 0].double().cpu())
                x = torch.cat([x, probs.argmax(dim=-1, keepdim=True)], dim=1)
        for c, p in zip(chunk, top.tolist()):
            best[c][name] = max(best[c].get(name, 0.0), p)
    out: dict[int, dict] = {}
    for c in ids:
        mp = max(best[c].values())
        out[c] = {"max_prob": mp, "label": label_of(mp), "per_prompt": best[c]}
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of "low score => positive" (ties count half), by ranks."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    order = np.argsort(-s, kind="mergesort")  # rank by -score: low score = high rank
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = -s[order]
    # average ranks of ties
    uniq, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


__all__ = ["INDICATORS", "INVALID_UTF8_BYTES", "LABELS", "PROMPTS", "Undertrained", "auroc", "degenerate_rows",
           "detect", "detect_model", "indicator_scores", "known_unused", "label_of", "verify"]
