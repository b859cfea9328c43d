"""Alignment figures and wall times on the shared tokenizers (median of N runs per pair).

    python benchmarks/bench_align.py [--runs 3] [--markdown]

Needs the testbed tokenizers registered (`tokbench assets import ../shared/data/*.tar.xz`).
There is no peer library that exposes cross-family vocabulary alignment, so this prints absolute
figures (with the machine's load average) rather than ratios.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from tokbench import __version__
from tokbench.vocab import align, align_report, load_vocabulary

PAIRS = [("qwen3", "xlm-r"), ("xlm-r", "qwen3"), ("smollm2", "gpt2"), ("gpt2", "llama3"),
         ("llama2", "mistral-v3"), ("bert", "xlm-r"), ("tbd-mistral-d128", "tbd-gpt2-d128")]


def run(old: str, new: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    report = align_report(align(load_vocabulary(old), load_vocabulary(new)))
    return time.perf_counter() - t0, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print(f"tokbench {__version__}, Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| old -> new | shared | new only | old only | mean pieces | with unk | uncovered | "
          "numbers old/new | wall s (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for old, new in PAIRS:
        times, report = [], None
        for _ in range(args.runs):
            t, report = run(old, new)
            times.append(t)
        c, d, n = report["counts"], report["decomposition"], report["numbers"]
        print(f"| {old} -> {new} | {c['shared']:,} | {c['new_only']:,} | {c['old_only']:,} | "
              f"{d['mean_pieces']} | {d['with_unk']:,} | {d['uncovered']} | "
              f"{n['old']['policy']}/{n['new']['policy']} | {statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
