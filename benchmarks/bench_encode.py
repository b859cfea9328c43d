"""Encoding throughput: tokbench.bpe vs tiktoken vs HF tokenizers, same run, same machine.

    python benchmarks/bench_encode.py --data ../shared/data/extracted [--runs 5]

--data is a folder with the shared layout (tokenizers/..., corpora/...). Texts: the lines of
WikiText-2 test+valid, tinyshakespeare, the three code jsonl files, GSM8K train and Tatoeba.
Reports MB/s (median of --runs) for 1 thread (tokbench encode_ordinary_batch num_threads=1 and,
in its own column, tokbench encode_ordinary per text; tiktoken encode_ordinary per text,
tokenizers encode_batch with RAYON_NUM_THREADS=1 not settable per call, so tokenizers is timed
single-threaded through encode over the texts) and 2 threads (batch calls), checks that the ids
are identical, and prints ratios against each peer.

Every timing starts after a full garbage collection with no other library's results alive (the
ids are kept only as flat arrays for the comparison), so one library's result lists never
slow down the collector during another's timing.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from bpe_corpora import lines  # noqa: E402

CORPORA = {
    "wikitext2-test": "corpora/english/wikitext-2-test.tokens.txt",
    "wikitext2-valid": "corpora/english/wikitext-2-valid.tokens.txt",
    "tinyshakespeare": "corpora/english/tinyshakespeare.txt",
    "code-python": "corpora/code/thealgorithms-python.jsonl",
    "code-rust": "corpora/code/thealgorithms-rust.jsonl",
    "code-cpp": "corpora/code/thealgorithms-cpp.jsonl",
    "gsm8k-train": "corpora/math/gsm8k-train.jsonl",
    "tatoeba": "corpora/multilingual/tatoeba-laser-v1",
}
VOCABS = {
    # name: (tiktoken rank file, pattern name, tokenizer.json)
    "gpt2": ("tokenizers/gpt2/gpt2.tiktoken", "gpt2", "tokenizers/gpt2/tokenizer.json"),
    "llama3": ("tokenizers/llama3-tiktoken/tokenizer.model", "llama3",
               "tokenizers/llama3-tiktoken/tokenizer.json"),
}


def flat(ids: list[list[int]]) -> tuple[array, array]:
    """(lengths, all ids) as arrays: compact, and invisible to the garbage collector."""
    return array("Q", map(len, ids)), array("Q", (i for row in ids for i in row))


def timed(f, runs: int, ids=lambda out: out) -> tuple[float, tuple[array, array]]:
    """Median seconds of f() and the ids of its last result (ids(out), untimed)."""
    times, out = [], None
    for _ in range(runs):
        out = None
        gc.collect()
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), flat(ids(out))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", action="append", choices=list(VOCABS))
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import tiktoken
    import tokenizers
    from tiktoken.load import load_tiktoken_bpe

    import tokbench
    from tokbench import _core
    from tokbench.bpe import BPE
    from tokbench.vocab.patterns import PATTERNS

    texts: list[str] = []
    for name, rel in CORPORA.items():
        texts.extend(lines(name, args.data / rel))
    texts = [t for t in texts if t]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus; "
          f"tokbench {tokbench.__version__ if hasattr(tokbench, '__version__') else '?'} "
          f"(core {_core.core_version()}), tiktoken {tiktoken.__version__}, "
          f"tokenizers {tokenizers.__version__}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"texts: {len(texts)} lines, {mb:.2f} MB ({', '.join(CORPORA)}); median of {args.runs} runs")
    print()
    print("| vocab | threads | tokbench MB/s | tokbench per-text MB/s | tiktoken MB/s | tokenizers MB/s "
          "| vs tiktoken | per-text vs tiktoken | vs tokenizers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for vname in args.vocab or list(VOCABS):
        rank_rel, pat, json_rel = VOCABS[vname]
        ours = BPE.from_file(args.data / rank_rel)
        tk = tiktoken.Encoding(vname, pat_str=PATTERNS[pat],
                               mergeable_ranks=load_tiktoken_bpe(str(args.data / rank_rel)),
                               special_tokens=ours.special_tokens)
        hf = tokenizers.Tokenizer.from_file(str(args.data / json_rel))
        ours_hf = BPE.from_file(args.data / json_rel)
        for threads in (1, args.threads):
            t_ours, ids_ours = timed(lambda: ours.encode_ordinary_batch(texts, num_threads=threads), args.runs)
            per_text = ""
            if threads == 1:  # tiktoken's own 1-thread path: encode_ordinary per text (its batch
                # call with one worker adds a thread-pool hop per text and is slower)
                enc = ours.encode_ordinary
                t_pt, ids_pt = timed(lambda: [enc(t) for t in texts], args.runs)
                t_tk, ids_tk = timed(lambda: [tk.encode_ordinary(t) for t in texts], args.runs)
                same_pt = ids_pt == ids_tk
                per_text = f"{mb / t_pt:.1f}"
            else:
                t_tk, ids_tk = timed(lambda: tk.encode_ordinary_batch(texts, num_threads=threads),
                                     args.runs)
                same_pt = True
            if threads == 1:
                t_hf, ids_hf = timed(lambda: [hf.encode(t, add_special_tokens=False) for t in texts],
                                     args.runs, lambda out: [e.ids for e in out])
            else:
                t_hf, ids_hf = timed(lambda: hf.encode_batch(texts, add_special_tokens=False),
                                     args.runs, lambda out: [e.ids for e in out])
            same_tk = ids_ours == ids_tk and same_pt
            same_hf = flat(ours_hf.encode_batch(texts, num_threads=threads, allowed_special="all")) == ids_hf
            ratio_pt = f"{t_tk / t_pt:.2f}x" if threads == 1 else ""
            print(f"| {vname} | {threads} | {mb / t_ours:.1f} | {per_text} | {mb / t_tk:.1f} | {mb / t_hf:.1f} "
                  f"| {t_tk / t_ours:.2f}x | {ratio_pt} | {t_hf / t_ours:.2f}x |"
                  + ("" if same_tk and same_hf else f" IDS DIFFER (tiktoken {same_tk}, tokenizers {same_hf})"))
            del ids_ours, ids_tk, ids_hf
    print()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("tokenizers at 2 threads: encode_batch uses its own rayon pool (all cores, here "
          f"{os.cpu_count()}); at 1 thread: encode per text.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
