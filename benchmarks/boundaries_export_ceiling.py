"""How far can a static tokenizer follow a learned segmenter? (issue 13, item 6: F1 >= 0.85)

    nice python benchmarks/boundaries_export_ceiling.py RUN [--max-bytes 100000] [--threads 1]

Segments the train and held-out lines the way `tokbench boundaries export` does (each language's first
--max-bytes, each line alone) and prints, per held-out language:
- `segments seen`: the share of held-out learned segments that occur among the train segments (a static
  vocabulary can only hold those whole);
- `words seen`: the share of held-out whitespace words that occur in the train lines;
- `majority F1`: the boundary F1, on those seen words, of the most frequent learned pattern of each word in
  the train lines (the ends inside the word and at its end): what a static word -> segmentation map fitted on
  the train text would score where it knows the word;
- `in-sample F1`: the same map fitted on the held-out lines themselves (the context-dependence of the
  segmenter alone: 1.0 if every occurrence of a word were segmented alike).
"""
from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

import torch

from tokbench.boundaries.data import load_splits
from tokbench.boundaries.metrics import Segmenter
from tokbench.boundaries.train import load_model

WORD = re.compile(rb"\S+")


def lines_of(text: str, max_bytes: int) -> list[str]:
    return [x for x in text[:max_bytes].split("\n") if x.strip()]


def pieces(lines, ends_list):
    for t, ends in zip(lines, ends_list):
        b = t.encode("utf-8")
        yield from (b[a:z] for a, z in zip([0, *ends[:-1]], ends))


def words(lines, ends_list):
    """(word bytes, its learned ends relative to the word start, in (0, len])."""
    for t, ends in zip(lines, ends_list):
        b, es = t.encode("utf-8"), set(ends)
        for m in WORD.finditer(b):
            yield b[m.start():m.end()], tuple(e - m.start() for e in range(m.start() + 1, m.end() + 1) if e in es)


def majority_f1(fit, apply) -> tuple[float, float]:
    """(share of `apply` words seen in `fit`, F1 on them of each word's most frequent pattern in `fit`)."""
    by: dict[bytes, Counter] = defaultdict(Counter)
    for w, pat in fit:
        by[w][pat] += 1
    tp = fp = fn = seen = total = 0
    for w, pat in apply:
        total += 1
        if w not in by:
            continue
        seen += 1
        guess, gold = set(by[w].most_common(1)[0][0]), set(pat)
        tp, fp, fn = tp + len(guess & gold), fp + len(guess - gold), fn + len(gold - guess)
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return seen / max(1, total), 2 * p * r / max(1e-12, p + r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--max-bytes", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, state = load_model(args.run)
    seg = Segmenter(model, set(state["priors"]["script_of"].values()))
    splits = load_splits(state["config"]["languages"], english_train_bytes=1_000_000)
    train = [x for v in splits.train.values() for x in lines_of(v, args.max_bytes)]
    train_ends = seg.ends(train)
    train_segments = set(pieces(train, train_ends))
    train_words = list(words(train, train_ends))
    print(f"{args.run}: {len(train)} train lines, {len(train_segments)} distinct train segments")
    print("| language | segments seen | words seen | majority F1 (seen words) | in-sample F1 |")
    print("|---|---:|---:|---:|---:|")
    for lang, text in sorted(splits.test.items()):
        lines = lines_of(text, args.max_bytes)
        ends = seg.ends(lines)
        segs = list(pieces(lines, ends))
        covered = sum(s in train_segments for s in segs) / max(1, len(segs))
        held = list(words(lines, ends))
        seen, f1 = majority_f1(train_words, held)
        _, in_sample = majority_f1(held, held)
        print(f"| {lang} | {covered:.3f} | {seen:.3f} | {f1:.3f} | {in_sample:.3f} |")


if __name__ == "__main__":
    main()
