"""Dynamic batch merging: the Rust kernel vs the pure-Python reference (tests/dynamic_reference.py) on real
batches, and the merges -> length curve.

    python benchmarks/bench_dynamic.py [--tokenizer smollm2] [--corpus wikitext2-test] [--batch 32]
                                       [--batches 8] [--runs 3] [--mode word] [--json OUT.json]

For each of the first `--batches` batches of `--batch` non-blank lines: the kernel and the reference merge
the same ids and masks to exhaustion (outputs checked identical), each timed `--runs` times (median). Then the
kernel at 100 merges per batch over all chosen batches (tokens/s = tokens before merging / kernel time).
Prints the load average before and after: the machine is shared.

    python benchmarks/bench_dynamic.py --fidelity [--model smollm2-135m] [--windows 16] [--prefix 128]
                                       [--continuation 64] [--mode word] [--merge-batch N] [--cache DIR]
                                       [--threads 2] [--keep POLICY] [--json OUT.json]

instead runs `tokbench.dynamic.fidelity.prefill_fidelity` (merged prefix through inputs_embeds, continuation
bits/byte with the original head) at budgets 0, 2, 10 and exhaustion (`--budgets`), methods mean and
position_mean (`--methods`), with a paired bootstrap 95 % interval of each Δ over windows; `--cache` keeps the
unmerged run's bits per window for later calls; `--keep` a keep policy (tokbench.dynamic.keep: last-occurrence,
last-word, last-punct, recent:N, one last-* and recent:N joined by '+'), whose exhaustion point is printed as a % of the mode's word level.

    python benchmarks/bench_dynamic.py --reach --keep last-occurrence,last-punct [--corpus ...] [--windows 64]
                                       [--modes pretokens,pretokens-unicode]

prints, without a model, how far each keep policy lets merging go on the fidelity windows (merge batches of
`--merge-batch`, default 32): its exhaustion point as % of the mode's word level (without the policy), over all
windows and for the lowest merge batch (a % budget applies per batch, so every batch must reach it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dynamic_reference import reference_merge  # noqa: E402
from tokbench.dynamic import DynamicTokenizer, boundary_mask, merge_ids  # noqa: E402
from tokbench.dynamic.stats import corpus_lines  # noqa: E402


def _median_time(fn, runs):
    out, times = None, []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="smollm2")
    ap.add_argument("--corpus", default="wikitext2-test")
    ap.add_argument("--mode", default="word")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--fidelity", action="store_true")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--prefix", type=int, default=128)
    ap.add_argument("--continuation", type=int, default=64)
    ap.add_argument("--budgets", default="2,10,exhaustion",
                    help="comma-separated: merges, P%% (of the word level) or exhaustion (0, unmerged, always runs)")
    ap.add_argument("--methods", default="mean,position_mean")
    ap.add_argument("--control", action="store_true", help="add the original tokens + new embedding control")
    ap.add_argument("--merge-batch", type=int, default=None, help="windows per merge batch (default: all)")
    ap.add_argument("--cache", default=None, help="folder for the unmerged run's bits per window")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default="none",
                    help="keep policy: last-occurrence, last-word, last-punct, recent:N, one last-* and "
                         "recent:N joined by '+', or none (the default)")
    ap.add_argument("--repeats", action="store_true",
                    help="then split each delta: windows whose continuation repeats a word merged in their prefix "
                         "vs the rest")
    ap.add_argument("--reach", action="store_true",
                    help="print each --keep policy's (comma-separated) maximum as %% of the word level, no model")
    ap.add_argument("--modes", default="pretokens,pretokens-unicode", help="modes for --reach")
    ap.add_argument("--repeats-of", default=None, metavar="RESULT.json",
                    help="only print that split for a saved --fidelity --json result")
    a = ap.parse_args(argv)
    if a.repeats_of:
        print(repeats_table(json.loads(Path(a.repeats_of).read_text())))
        return 0
    if a.reach:
        return reach(a)
    if a.fidelity:
        return fidelity(a)
    load0 = os.getloadavg()
    tok = DynamicTokenizer.load(a.tokenizer)
    lines = corpus_lines(a.corpus, limit_lines=a.batch * a.batches)
    bb = tok.base_bytes()
    rows = []
    curve_words = []
    for b in range(0, len(lines), a.batch):
        texts = lines[b:b + a.batch]
        ids = tok.bpe.encode_ordinary_batch(texts)
        cut = boundary_mask(tok, ids, a.mode, texts)
        got, tk = _median_time(lambda: merge_ids(ids, cut, bb), a.runs)
        ref, tr = _median_time(lambda: reference_merge(ids, cut, bb), max(1, a.runs // 3))
        got = (got[0], got[1], [tuple(m) for m in got[2]], got[3])
        if got != ref:
            print(f"batch {b // a.batch}: kernel and reference differ", file=sys.stderr)
            return 1
        lengths = got[3]
        rows.append({"batch": b // a.batch, "tokens": lengths[0], "merges": len(lengths) - 1,
                     "kernel_s": tk, "reference_s": tr, "ratio": tr / tk})
        curve_words.append(lengths)
        print(f"batch {b // a.batch}: {lengths[0]:,} tokens, {len(lengths) - 1} merges to exhaustion, "
              f"kernel {tk * 1e3:.2f} ms, reference {tr * 1e3:.1f} ms, ratio {tr / tk:.0f}x")
    # throughput at 100 merges per batch
    prepared = []
    for b in range(0, len(lines), a.batch):
        texts = lines[b:b + a.batch]
        ids = tok.bpe.encode_ordinary_batch(texts)
        prepared.append((ids, boundary_mask(tok, ids, a.mode, texts)))
    total = sum(sum(map(len, ids)) for ids, _ in prepared)

    def at100():
        for ids, cut in prepared:
            merge_ids(ids, cut, bb, merges=100)
    _, t100 = _median_time(at100, a.runs)
    load1 = os.getloadavg()
    ratios = [r["ratio"] for r in rows]
    summary = {
        "tokenizer": a.tokenizer, "corpus": a.corpus, "mode": a.mode, "batch": a.batch, "batches": len(rows),
        "median_ratio_exhaustion": statistics.median(ratios), "min_ratio": min(ratios),
        "median_kernel_ms": statistics.median(r["kernel_s"] for r in rows) * 1e3,
        "median_reference_ms": statistics.median(r["reference_s"] for r in rows) * 1e3,
        "tokens_per_s_at_100_merges": total / t100, "tokens_at_100": total,
        "curve_batch0": curve_words[0], "load_before": load0, "load_after": load1, "rows": rows,
    }
    print(f"median ratio (reference / kernel, exhaustion): {summary['median_ratio_exhaustion']:.0f}x "
          f"(min {summary['min_ratio']:.0f}x); 100 merges per batch: {total / t100 / 1e6:.2f}M tokens/s "
          f"({total:,} tokens); load average {load0[0]:.2f} -> {load1[0]:.2f}")
    c = curve_words[0]
    marks = [m for m in (0, 1, 2, 5, 10, 20, 50, 100, 200, len(c) - 1) if m < len(c)]
    print("batch 0 curve (merges: length, % shorter): " + ", ".join(
        f"{m}: {c[m]} ({100 * (c[0] - c[m]) / c[0]:.1f}%)" for m in marks))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))
    return 0


def fidelity(a) -> int:
    from tokbench.dynamic.fidelity import prefill_fidelity

    load0 = os.getloadavg()
    from tokbench.dynamic.fidelity import fidelity_table, parse_budgets

    budgets = [0] + parse_budgets(a.budgets)
    r = prefill_fidelity(a.model, a.tokenizer, a.corpus, n_windows=a.windows, prefix=a.prefix,
                         continuation=a.continuation, budgets=budgets, methods=a.methods.split(","),
                         control=a.control, mode=a.mode, merge_batch=a.merge_batch, threads=a.threads,
                         teacher_cache=a.cache, progress=True, keep=a.keep)
    r["load_before"], r["load_after"] = load0, os.getloadavg()
    print(fidelity_table(r))
    print(f"{a.mode} mode: {r['windows']} windows of {r['prefix']}+{r['continuation']} tokens in "
          f"{r['merge_batches']} merge batch(es), {r['continuation_bytes']:,} continuation bytes; word level "
          f"{r['word_level_pct_shorter']:.2f}% shorter (word mode's: {r['word_mode_level_pct_shorter']:.2f}%); "
          f"keep {r['keep']}: at most {r['keep_pct_of_word_level']:.1f}% of the word level "
          f"({100.0 * (r['prefix_tokens'] - r['keep_level']) / r['prefix_tokens']:.2f}% shorter); "
          f"{r['seconds']:.0f} s; load average {load0[0]:.2f} -> {r['load_after'][0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    if a.repeats:
        print(repeats_table(r))
    return 0


def reach(a) -> int:
    from tokbench.dynamic.fidelity import _groups, windows_from_corpus

    tok = DynamicTokenizer.load(a.tokenizer)
    wins = windows_from_corpus(tok, a.corpus, a.windows, a.prefix, a.continuation)
    print(f"{a.corpus}, {a.windows} windows of {a.prefix}+{a.continuation}, merge batches of {a.merge_batch or 32}:")
    print("| mode | keep | word level, % shorter | policy maximum, % of word level | % shorter | lowest batch, % of word level |")
    print("|---|---|---:|---:|---:|---:|")
    for mode in a.modes.split(","):
        for keep in a.keep.split(","):
            groups = _groups(tok, wins, mode, a.merge_batch or 32, keep)
            tot = sum(sum(map(len, g[0])) for g in groups)
            wl, kl = sum(g[3] for g in groups), sum(g[4] for g in groups)
            low = min(100.0 * (sum(map(len, g[0])) - g[4]) / max(sum(map(len, g[0])) - g[3], 1) for g in groups)
            print(f"| {mode} | {keep} | {100.0 * (tot - wl) / tot:.2f} | {100.0 * (tot - kl) / max(tot - wl, 1):.1f} | "
                  f"{100.0 * (tot - kl) / tot:.2f} | {low:.1f} |")
    return 0


def repeats_table(r: dict) -> str:
    """Markdown table of `repeat_split` for a prefill_fidelity result."""
    from tokbench.dynamic.fidelity import repeat_split

    out = [f"{r['mode']} mode, keep {r.get('keep', 'none')}, {r['windows']} windows of {r['corpus']}:",
           "| budget | method | windows repeating a merged word | Δ there | other windows | Δ there | "
           "share of the extra bits |", "|---|---|---:|---:|---:|---:|---:|"]
    for x in repeat_split(r["tokenizer"], r):
        f = (lambda v: "–" if v is None else f"{v:+.2f}%")
        share = "–" if x["share_of_extra_bits_repeat"] is None else f"{100 * x['share_of_extra_bits_repeat']:.0f}%"
        out.append(f"| {x['budget']} | {x['method']} | {x['windows_repeat']} | {f(x['delta_pct_repeat'])} | "
                   f"{x['windows_other']} | {f(x['delta_pct_other'])} | {share} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
