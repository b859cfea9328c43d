"""Differential fuzzing of tokbench.bpe against tiktoken and HF tokenizers (a gate: exits 1 on any mismatch).

    python benchmarks/fuzz_encode.py [--strings 125000] [--seed 0] [--batch 20000] [--only NAME ...]

Every reference gets the same seeded random strings (tests/fuzz_strings.py: random Unicode of every plane
including control characters and lone surrogates, long runs, mixed scripts, whitespace-heavy text,
contractions, digit runs). References:

- tiktoken, rank files: gpt2 (GPT-2 pattern), llama3 (cl100k pattern), and the Llama 3 ranks under the
  o200k and qwen2 patterns (`BPE.from_ranks` vs `tiktoken.Encoding` with the same ranks and pattern);
  with `--o200k-ranks FILE` also o200k_base's own ranks under its pattern;
  ids of `encode_ordinary`, strings passed as they are (both apply the lone-surrogate rule);
- HF tokenizers, tokenizer.json: gpt2, llama3-hf, qwen3 (NFC normaliser) and smollm2; ids of
  `encode(text, add_special_tokens=False)` on tokbench.text.clean(text) (the library refuses lone
  surrogates), against tokbench's `encode(text, allowed_special="all")` on the raw string.

Prints one line per reference (strings, mismatches, seconds of each side) and a total; figures go to
reports/robustness.md (section Fuzzing).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz_strings import random_strings  # noqa: E402

from tokbench.assets import resolve  # noqa: E402
from tokbench.bpe import BPE  # noqa: E402
from tokbench.text import clean_all  # noqa: E402
from tokbench.vocab.patterns import PATTERNS  # noqa: E402

TIKTOKEN = [("gpt2-tiktoken", "gpt2"), ("llama3", "llama3"), ("llama3", "o200k"), ("llama3", "qwen2")]
HF = ["gpt2", "llama3-hf", "qwen3", "smollm2"]


def _tiktoken_pair(asset: str, pattern: str, path: str | None = None):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = path or str(resolve(asset, kind="tokenizer"))
    ranks = load_tiktoken_bpe(path)
    ref = tiktoken.Encoding(f"{asset}-{pattern}", pat_str=PATTERNS[pattern], mergeable_ranks=ranks, special_tokens={})
    ours = BPE.from_ranks(ranks, pattern, {}, name=f"{asset}-{pattern}")
    return (lambda texts: ours.encode_ordinary_batch(texts)), (lambda texts: ref.encode_ordinary_batch(texts))


def _hf_pair(asset: str):
    import tokenizers

    p = Path(resolve(asset, kind="tokenizer"))
    file = p / "tokenizer.json" if p.is_dir() else p
    hf = tokenizers.Tokenizer.from_file(str(file))
    hf.no_padding()
    hf.no_truncation()
    ours = BPE.from_file(file)
    return ((lambda texts: ours.encode_batch(texts, allowed_special="all", disallowed_special=())),
            (lambda texts: [e.ids for e in hf.encode_batch(clean_all(texts), add_special_tokens=False)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strings", type=int, default=125_000, help="strings per reference (8 references: 1M comparisons)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--only", action="append", help="run only these references (e.g. llama3-o200k, hf:qwen3)")
    ap.add_argument("--o200k-ranks", help="also o200k_base itself: its rank file (not a registered asset; "
                    "benchmarks/bench_encode_peers.py unpacks the copy bpe-openai ships), reference o200k_base-o200k")
    a = ap.parse_args()
    refs = [(f"{x}-{p}", lambda x=x, p=p: _tiktoken_pair(x, p)) for x, p in TIKTOKEN]
    if a.o200k_ranks:
        refs.append(("o200k_base-o200k", lambda: _tiktoken_pair("o200k_base", "o200k", a.o200k_ranks)))
    refs += [(f"hf:{x}", lambda x=x: _hf_pair(x)) for x in HF]
    if a.only:
        refs = [r for r in refs if r[0] in a.only]
    print(f"# {a.strings:,} strings per reference, seed {a.seed}, load average {os.getloadavg()[0]:.1f}")
    total = bad_total = 0
    for name, make in refs:
        ours, ref = make()
        bad, t_ours, t_ref, first = 0, 0.0, 0.0, None
        for b0 in range(0, a.strings, a.batch):
            texts = random_strings(a.seed * 1_000_003 + b0 // a.batch, min(a.batch, a.strings - b0))
            t = time.perf_counter()
            got = ours(texts)
            t_ours += time.perf_counter() - t
            t = time.perf_counter()
            want = ref(texts)
            t_ref += time.perf_counter() - t
            for s, x, y in zip(texts, got, want):
                if x != y:
                    bad += 1
                    first = first or s
        total += a.strings
        bad_total += bad
        print(f"{name:<16} {a.strings:>10,} strings  {bad:>4} mismatches  tokbench {t_ours:7.1f} s  "
              f"reference {t_ref:7.1f} s" + (f"  first: {first!r}" if first else ""), flush=True)
    print(f"total {total:,} comparisons, {bad_total} mismatches")
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
