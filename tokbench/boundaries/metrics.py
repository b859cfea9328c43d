"""Measurements of a trained boundary model (and of zero-training segmenters) on held-out text.

- `Segmenter`: a model (or its exported pre-layers + predictors) that maps texts to segment end offsets.
  Two protocols: `ends` segments each line on its own, after a newline byte of context; `ends_in_context`
  segments the lines as running text (joined by newlines, as training reads its text), each line judged
  with the lines before it as context (the model is causal: never the lines after it). A text longer than
  the model's window is cut into windows. Routing: each line goes to the
  predictor of its dominant script among the scripts the model was trained on; a line with letters but none
  of a trained script is refused with one line (TokbenchError).
- bytes per segment per language; boundary rate against the prior per script (relative difference);
- segment premium on parallel text S_L = segments(L) / segments(English) (tokbench.fairness: ratio of sums,
  mean of ratios, and across languages mean |log2 S|, CV, Gini, max);
- held-out bits per byte per language (next-byte cross-entropy over windows of the test text);
- whitespace-boundary F1: predicted segment ends against the ends of whitespace-delimited words;
- bytes/s of segmentation and of the full LM forward pass.

Boundaries are offsets into the UTF-8 bytes of a text: `e` in ends means a segment ends after byte e-1 (the
last segment always ends at len(bytes)).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tokbench.boundaries.scripts import char_group, script_counts
from tokbench.errors import TokbenchError
from tokbench.fairness import premium_table, spread

CONTEXT = b"\n"
MAX_TEST_BYTES = 200_000


def route_for(text: str, routes: Sequence[str], trained: Iterable[str]) -> int:
    """Index of the predictor for `text` (its dominant trained script); TokbenchError when it has letters
    but none of a trained script. `routes` = ['all'] for single-predictor arms."""
    trained = sorted(set(trained))
    counts = script_counts(text)
    known = {g: n for g, n in counts.items() if g in trained}
    if counts and not known:
        raise TokbenchError(f"text with no letters of a trained script ({', '.join(sorted(counts))}; "
                            f"the model knows {', '.join(trained)}): {text[:40]!r}",
                            fix="train on a language of that script, or drop those lines")
    if routes == ["all"] or len(routes) == 1:
        return 0
    if not known:  # digits / punctuation only: the first route, deterministically
        return 0
    top = max(known.values())
    group = next(g for g in sorted(known) if known[g] == top)
    return routes.index(group)


class Segmenter:
    """Segment texts with a model's embedding + pre-layers + predictor(s) (eval mode, deterministic)."""

    def __init__(self, model, scripts: Iterable[str], *, batch: int = 64, device: str = "cpu"):
        self.model = model.eval()
        self.routes = list(model.cfg.routes)
        self.scripts = sorted(set(scripts))
        self.window = model.cfg.seq_len
        self.batch = batch
        self.device = torch.device(device)

    def _pieces(self, texts: Sequence[str]):
        """(text index, offset of the first judged byte, context + bytes, number of judged bytes, route):
        a text longer than the window is read in windows that advance by half a window, each judging the
        bytes of its second half with the first half as context (the first window: the newline)."""
        half = self.window // 2
        for i, t in enumerate(texts):
            data = t.encode("utf-8")
            r = route_for(t, self.routes, self.scripts)
            first = self.window - len(CONTEXT)
            yield i, 0, CONTEXT + data[:first], min(first, len(data)), r
            for start in range(first, len(data), half):
                yield i, start, data[start - half:start + half], min(half, len(data) - start), r

    @torch.no_grad()
    def ends(self, texts: Sequence[str]) -> list[list[int]]:
        """Segment end offsets per text (the last one is always len(bytes); [] for an empty text)."""
        out: list[list[int]] = [[] for _ in texts]
        pieces = list(self._pieces(texts))
        pieces.sort(key=lambda p: len(p[2]))
        for j in range(0, len(pieces), self.batch):
            chunk = pieces[j:j + self.batch]
            width = max(len(p[2]) for p in chunk)
            x = np.zeros((len(chunk), width), dtype=np.int64)
            for k, (_, _, row, _, _) in enumerate(chunk):
                x[k, :len(row)] = np.frombuffer(row, dtype=np.uint8)
            route = torch.tensor([p[4] for p in chunk], device=self.device)
            _, b, _ = self.model.boundaries(torch.from_numpy(x).to(self.device), route)
            b = b.cpu().numpy()
            for k, (i, start, row, n, _) in enumerate(chunk):
                ctx = len(row) - n
                pos = np.nonzero(b[k, ctx:ctx + n])[0]
                out[i].extend(int(start + p + 1) for p in pos)
        for i, t in enumerate(texts):
            total = len(t.encode("utf-8"))
            if total:
                out[i] = sorted(set(e for e in out[i] if e < total) | {total})
        return out

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(e) for e in self.ends(texts)]

    def ends_in_context(self, texts: Sequence[str]) -> list[list[int]]:
        """Segment end offsets per text, the texts read in order as one running text joined by newlines
        (routed by the dominant script of the whole); an end at a newline belongs to no text."""
        if not texts:
            return []
        (stream_ends,) = self.ends(["\n".join(texts)])
        spans, pos = [], 0
        for t in texts:
            n = len(t.encode("utf-8"))
            spans.append((pos, pos + n))
            pos += n + 1
        out, j = [], 0
        for a, b in spans:
            while j < len(stream_ends) and stream_ends[j] <= a:
                j += 1
            k = j
            while k < len(stream_ends) and stream_ends[k] < b:
                k += 1
            out.append([e - a for e in stream_ends[j:k]] + ([b - a] if b > a else []))
            j = k
        return out

    def count_in_context(self, texts: Sequence[str]) -> list[int]:
        return [len(e) for e in self.ends_in_context(texts)]


def word_ends(text: str) -> list[int]:
    """Byte offsets where whitespace-delimited words end (and the end of the text)."""
    data = text.encode("utf-8")
    ends = []
    for i in range(len(data)):
        if not chr(data[i]).isspace() and (i + 1 == len(data) or chr(data[i + 1]).isspace()):
            ends.append(i + 1)
    if data and (not ends or ends[-1] != len(data)):
        ends.append(len(data))
    return ends


def byte_ends(text: str) -> list[int]:
    return list(range(1, len(text.encode("utf-8")) + 1))


def boundary_f1(pred: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]) -> dict:
    """Precision, recall and F1 of predicted against gold end offsets, over interior ends (the end of each
    text is excluded: every segmenter has it)."""
    tp = fp = fn = 0
    for p, g in zip(pred, gold):
        last = max(p[-1] if p else 0, g[-1] if g else 0)
        ps, gs = set(p) - {last}, set(g) - {last}
        tp += len(ps & gs)
        fp += len(ps - gs)
        fn += len(gs - ps)
    prec = tp / (tp + fp) if tp + fp else 1.0  # no predicted end: none wrong
    rec = tp / (tp + fn) if tp + fn else 1.0  # no gold end: none missed
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def parity_in_context(seg: "Segmenter", parallel: dict[str, list[tuple[str, str]]]) -> dict:
    """Segment premium per language vs English with both sides of each language's pairs read as running
    text (Segmenter.ends_in_context: each sentence after the sentences before it), and its spread (the
    same keys as segment_parity)."""
    rows, premiums, eng_bytes, eng_segments = {}, [], 0, 0
    for lang, pairs in sorted(parallel.items()):
        if not pairs:
            continue
        a = sum(seg.count_in_context([x for x, _ in pairs]))
        b = sum(seg.count_in_context([y for _, y in pairs]))
        eng_bytes += sum(len(y.encode("utf-8")) for _, y in pairs)
        eng_segments += b
        rows[lang] = {"units": len(pairs), "segments": a, "english_segments": b,
                      "premium_sum": a / b if b else None}
        if b:
            premiums.append(a / b)
    out = {"languages": rows, "n_languages": len(premiums), "protocol": "in context",
           "english_bytes_per_segment": eng_bytes / eng_segments if eng_segments else None}
    if len(premiums) >= 2:
        s = spread(premiums)
        out.update(premium_sum_mean=s["mean"], premium_sum_max=s["max"], gini=s["gini"], cv=s["cv"],
                   mean_abs_log2=s["mean_abs_log2"])
    return out


def segment_parity(count_of: Callable[[str], int], parallel: dict[str, list[tuple[str, str]]]) -> dict:
    """Segment premium per language vs English on parallel pairs, and its spread (tokbench.fairness)."""
    return premium_table(parallel, count_of, what="segments", dataset="parallel test")


def counter(segment_counts: Callable[[Sequence[str]], list[int]], parallel) -> Callable[[str], int]:
    """A count_of(text) for premium_table that segments every distinct text of `parallel` in one batch."""
    from tokbench.fairness import distinct_texts

    texts = distinct_texts(parallel)
    table = dict(zip(texts, segment_counts(texts)))
    return table.__getitem__


@torch.no_grad()
def bits_per_byte(model, text: str, route: int, *, device: str = "cpu", batch: int = 16,
                  max_bytes: int = MAX_TEST_BYTES) -> dict:
    """Next-byte cross-entropy (bits/byte) over non-overlapping windows of `text` (the first max_bytes)."""
    data = np.frombuffer(text.encode("utf-8")[:max_bytes], dtype=np.uint8).astype(np.int64)
    w = model.cfg.seq_len + 1
    n = (data.size - 1) // (w - 1)
    if n == 0:
        return {"bits_per_byte": None, "bytes": 0}
    total, count = 0.0, 0
    for i in range(0, n, batch):
        idx = range(i, min(n, i + batch))
        x = torch.from_numpy(np.stack([data[j * (w - 1):j * (w - 1) + w] for j in idx])).to(device)
        r = torch.full((x.shape[0],), route, dtype=torch.long, device=device)
        logits = model(x[:, :-1], r)["logits"]
        total += F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    return {"bits_per_byte": total / count / math.log(2), "bytes": count}


@torch.no_grad()
def throughput(model, text: str, *, device: str = "cpu", batch: int = 8, repeats: int = 3) -> dict:
    """Bytes per second of the full LM forward pass over windows of `text` (median of `repeats`)."""
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    w = model.cfg.seq_len
    n = min(batch, data.size // w)
    if n == 0:
        return {"bytes_per_s": None}
    x = torch.from_numpy(data[:n * w].reshape(n, w)).to(device)
    r = torch.zeros(n, dtype=torch.long, device=device)
    model(x, r)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x, r)
        times.append(time.perf_counter() - t0)
    return {"bytes_per_s": n * w / float(np.median(times)), "bytes": n * w, "repeats": repeats}


def evaluate(model, state: dict, splits, *, device: str = "cpu", max_bytes: int = MAX_TEST_BYTES,
             progress: bool = False) -> dict:
    """Every metric of a trained model on the held-out splits (JSON-ready)."""
    priors = state["priors"]
    arm = state["config"]["arm"]
    script_of = priors["script_of"]
    out: dict = {"arm": arm, "windows": state["config"].get("windows", "random"),
                 "preset": state["config"]["preset"], "step": state["step"],
                 "n_parameters": state["n_parameters"], "languages": {}, "scripts": {}}
    seg = Segmenter(model, set(script_of.values()), device=device) if model.shortens else None
    from tokbench.boundaries.train import sequence_prior

    rate_acc: dict[str, list[int]] = {}
    for lang, text in sorted(splits.test.items()):
        if lang not in script_of:
            continue
        lines = [x for x in text[:max_bytes].split("\n") if x]
        row: dict = {"script": script_of[lang], "test_bytes": sum(len(x.encode()) for x in lines)}
        route = 0 if arm != "magnet" else model.cfg.routes.index(script_of[lang])
        row.update(bits_per_byte(model, text, route, device=device, max_bytes=max_bytes))
        if seg is not None:
            ends = seg.ends(lines)
            nseg, nbytes = sum(len(e) for e in ends), row["test_bytes"]
            interior = nseg - len([e for e in ends if e])
            row["segments"] = nseg
            row["bytes_per_segment"] = nbytes / nseg if nseg else None
            row["rate"] = interior / max(1, nbytes - len(lines)) if nbytes else None
            row["prior"] = sequence_prior(arm, priors, lang)
            row["whitespace_f1"] = boundary_f1(ends, [word_ends(x) for x in lines])["f1"]
            acc = rate_acc.setdefault(script_of[lang], [0, 0, 0, 0])
            acc[0] += interior
            acc[1] += nbytes - len(lines)
            # the same text read in context (running text, as in training)
            in_ctx = sum(len(e) for e in seg.ends_in_context(lines)) - len(lines)
            row["rate_in_context"] = in_ctx / max(1, nbytes - len(lines)) if nbytes else None
            acc[2] += in_ctx
        out["languages"][lang] = row
    for g, (k, n, kc, _) in sorted(rate_acc.items()):
        langs = [lang for lang, s in script_of.items() if s == g]
        prior = float(np.mean([sequence_prior(arm, priors, lang) for lang in langs]))
        train_bytes = sum(len(splits.train[lang].encode()) for lang in langs if lang in splits.train)
        rate = k / n if n else None
        rate_c = kc / n if n else None
        out["scripts"][g] = {"rate": rate, "prior": prior, "relative": (rate / prior - 1) if rate is not None else None,
                             "rate_in_context": rate_c,
                             "relative_in_context": (rate_c / prior - 1) if rate_c is not None else None,
                             "train_bytes": train_bytes}
    if seg is not None:
        par = {k: v for k, v in splits.parallel_test.items() if k in script_of}
        table = segment_parity(counter(seg.count, par), par)
        eng = [y for pairs in par.values() for _, y in pairs]
        eng_bytes = sum(len(y.encode()) for y in dict.fromkeys(eng))
        eng_segments = sum(seg.count(list(dict.fromkeys(eng))))
        table["english_bytes_per_segment"] = eng_bytes / eng_segments if eng_segments else None
        out["parity"] = table
        out["parity_in_context"] = parity_in_context(seg, par)
    eng_text = splits.test.get("eng") or next(iter(splits.test.values()))
    out["throughput"] = throughput(model, eng_text, device=device)
    if seg is not None:
        lines = [x for x in eng_text[:100_000].split("\n") if x]
        t0 = time.perf_counter()
        seg.ends(lines)
        out["throughput"]["segment_bytes_per_s"] = sum(len(x.encode()) for x in lines) / (time.perf_counter() - t0)
    return out


def baseline_parity(name: str, count_batch: Callable[[Sequence[str]], list[int]], parallel) -> dict:
    """Parity of a zero-training segmenter (`count_batch(texts)` -> segments per text) on parallel pairs."""
    table = segment_parity(counter(count_batch, parallel), parallel)
    eng = list(dict.fromkeys(y for pairs in parallel.values() for _, y in pairs))
    n = sum(count_batch(eng))
    table["english_bytes_per_segment"] = sum(len(y.encode()) for y in eng) / n if n else None
    table["segmenter"] = name
    return table


__all__ = ["Segmenter", "route_for", "parity_in_context", "word_ends", "byte_ends", "boundary_f1", "segment_parity", "bits_per_byte",
           "throughput", "evaluate", "baseline_parity", "spread", "char_group"]
