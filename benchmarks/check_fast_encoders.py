"""Check that the metrics fast path (tokbench.bpe) gives the library's ids, text by text.

    python benchmarks/check_fast_encoders.py [-t NAME ...] [-c CORPUS ...]

For every tokenizer that has a fast path (tokbench.metrics.encoders), compares the ids of
every document of every corpus, every Tatoeba / UDHR parity unit and every isolated word
(as continued_words encodes it) with those of the tokenizer's own library. Prints one line per
tokenizer x text set and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import sys
import time

from tokbench.assets import iter_documents
from tokbench.metrics import load_encoder
from tokbench.metrics.core import count_words
from tokbench.metrics.parity import tatoeba_units, udhr_units
from tokbench.vocab.vocabulary import Style

TOKENIZERS = ["gpt2-tiktoken", "whisper", "llama3", "qwen3", "smollm2"]
CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "tinystories", "gutenberg", "gsm8k-train",
           "gsm8k-test", "code-python", "code-rust", "code-cpp", "udhr", "tatoeba", "bible-mark"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", action="append", dest="tokenizers")
    ap.add_argument("-c", action="append", dest="corpora")
    a = ap.parse_args()
    sets = {}
    for c in a.corpora or CORPORA:
        docs = list(iter_documents(c))
        sets[c] = docs
        sets[c + ":words"] = list(count_words(docs).whitespace_words)
    for kind, f in (("tatoeba", tatoeba_units), ("udhr", udhr_units)):
        sets["parity:" + kind] = sorted({x for u in f(kind).values() for p in u for x in p})
    bad = 0
    for name in a.tokenizers or TOKENIZERS:
        fast, lib = load_encoder(name), load_encoder(name, fast=False)
        if fast.fast is None:
            print(f"{name}: no fast path")
            continue
        v = fast.vocab
        prefix = " " if v.style in (Style.BYTELEVEL, Style.RAW) and not v.strip_leading_space else ""
        for key, texts in sets.items():
            if key.endswith(":words"):
                texts = [prefix + w for w in texts]
            t0 = time.perf_counter()
            got, want = fast.encode(texts), lib.encode(texts)
            diff = [i for i, (x, y) in enumerate(zip(got, want)) if x != y]
            n = sum(len(x) for x in want)
            print(f"{name:14s} {key:24s} texts {len(texts):7d} tokens {n:9d} differ {len(diff)}"
                  f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
            if diff or len(got) != len(want):
                bad += 1
                i = diff[0] if diff else 0
                print(f"  first difference: text {i} {texts[i][:80]!r}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
