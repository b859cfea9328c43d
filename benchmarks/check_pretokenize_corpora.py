"""Whole-document check of the hand-written pre-tokenizers against fancy-regex (a gate: exits 1 on any difference).

    python benchmarks/check_pretokenize_corpora.py [--pattern o200k ...] [--corpus udhr ...]

For every registered corpus (whole documents as tests/bpe_corpora.py reads them: each Gutenberg book,
each Tatoeba file, each UDHR paragraph of every language, ...; not cut into lines, so whitespace
and newline runs that span lines are covered too) and every hand-scanned pattern, the pieces of
engine "hand" must equal those of engine "fancy" (the backtracking regex running the pattern
text). Prints one line per corpus and pattern (documents, MB, pieces, differing documents).
tests/test_pretokenize_hand.py runs the same comparison line by line in the test suite.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bpe_corpora import documents  # noqa: E402

from tokbench.assets import resolve  # noqa: E402
from tokbench.bpe import BPE  # noqa: E402
from tokbench.vocab.patterns import PATTERNS  # noqa: E402

CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "tinystories", "gsm8k-train", "gsm8k-test",
           "code-python", "code-rust", "code-cpp", "udhr", "tatoeba", "gutenberg", "bible-mark"]
HAND = ["gpt2", "llama3", "qwen2", "o200k"]
BYTES = {bytes([i]): i for i in range(256)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pattern", action="append", choices=HAND, help="default: all hand-scanned patterns")
    ap.add_argument("--corpus", action="append", choices=CORPORA, help="default: every corpus")
    a = ap.parse_args()
    print(f"# load average {os.getloadavg()[0]:.1f}")
    bad_total = 0
    for name in a.corpus or CORPORA:
        docs = documents(name, resolve(name, kind="corpus"))
        mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
        for pat in a.pattern or HAND:
            hand = BPE.from_ranks(BYTES, PATTERNS[pat], engine="hand")
            fancy = BPE.from_ranks(BYTES, PATTERNS[pat], engine="fancy")
            assert (hand.engine, fancy.engine) == ("hand", "fancy")
            t0 = time.perf_counter()
            bad, pieces, first = 0, 0, None
            for d in docs:
                got = hand.pre_tokenize(d)
                pieces += len(got)
                if got != fancy.pre_tokenize(d):
                    bad += 1
                    first = first or d[:80]
            bad_total += bad
            print(f"{name:<16} {pat:<7} {len(docs):>7,} docs {mb:7.2f} MB {pieces:>10,} pieces  {bad} differ"
                  f"  ({time.perf_counter() - t0:.1f} s)" + (f"  first: {first!r}" if first else ""), flush=True)
    print(f"total: {bad_total} documents differ")
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
