"""Reduction tables of dynamic merging per language (issue 12, acceptance 3): Tatoeba (112 languages) and UDHR
(every language sharing sections with English), for several tokenizers, with the token premium against English
before and after merging.

    python benchmarks/bench_dynamic_tables.py [--tokenizers smollm2,gpt2,llama3,qwen3,xlm-r]
        [--mode pretokens-unicode] [--batch 32] [--out reports/dynamic-tables]
    python benchmarks/bench_dynamic_tables.py --markdown pretokens-unicode,pretokens    # the tables in reports/

Per language L and tokenizer: the texts of L (Tatoeba: its sentences; UDHR: its sections shared with English)
are merged in consecutive batches of `--batch` to exhaustion in `--mode`; so are the English sides (Tatoeba:
L's own English lines; UDHR: the English record's same sections). Columns: tokens before, after 10 and 100 merges
per batch, at the word level (exhaustion); % shorter absolute and % of the word level; premium = tokens(L) /
tokens(English) before, at 100 merges and at the word level (English merged the same way). Summaries over
languages (English excluded): mean |log2 premium|, CV (population std / mean) and Gini of the premiums (Gini from
tokbench.metrics), mean % shorter at the word level; plus each tokenizer's English word level on WikiText-2
test (same mode, batches of 32 lines). Writes <out>/<dataset>-<mode>.csv and <out>/summary-<mode>.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

from tokbench.dynamic import DynamicTokenizer
from tokbench.dynamic.stats import corpus_stats, length_profile
from tokbench.fairness import spread
from tokbench.metrics.parity import tatoeba_units, udhr_units

MARKS = (10, 100)


def _pct(a, b):
    return 100.0 * (a - b) / a if a else 0.0


def _summary(rows, key):
    p = [r[key] for r in rows if r[key] and r[key] > 0]
    if len(p) < 2:
        return None
    return {**spread(p), "n": len(p)}


def table(tok, units, dataset, mode, batch, english_shared=False):
    rows = []
    eng_cache = None
    for lang, pairs in sorted(units.items()):
        if not pairs:
            continue
        own = length_profile(tok, [x for x, _ in pairs], mode=mode, batch=batch, marks=MARKS)
        if english_shared and eng_cache is not None and eng_cache[0] == len(pairs) and \
                eng_cache[1] == [y for _, y in pairs]:
            eng = eng_cache[2]
        else:
            eng = length_profile(tok, [y for _, y in pairs], mode=mode, batch=batch, marks=MARKS)
            if english_shared:
                eng_cache = (len(pairs), [y for _, y in pairs], eng)
        if not own["tokens"] or not eng["tokens"]:
            continue
        r = {"dataset": dataset, "lang": lang, "tokenizer": tok.name, "mode": mode, "units": len(pairs),
             "tokens": own["tokens"], "tokens_at_10": own["tokens_at_10"], "tokens_at_100": own["tokens_at_100"],
             "word_level": own["word_level"], "eng_tokens": eng["tokens"], "eng_word_level": eng["word_level"]}
        room = own["tokens"] - own["word_level"]
        r["pct_shorter_word_level"] = _pct(own["tokens"], own["word_level"])
        for m in MARKS:
            n = own[f"tokens_at_{m}"]
            r[f"pct_shorter_at_{m}"] = _pct(own["tokens"], n)
            r[f"pct_of_word_level_at_{m}"] = 100.0 * (own["tokens"] - n) / room if room else 100.0
        r["eng_pct_shorter_word_level"] = _pct(eng["tokens"], eng["word_level"])
        r["premium_before"] = own["tokens"] / eng["tokens"]
        r["premium_at_100"] = own["tokens_at_100"] / eng["tokens_at_100"]
        r["premium_word_level"] = own["word_level"] / eng["word_level"]
        rows.append(r)
    return rows


def markdown(out: Path, modes: list[str], langs=("hin", "ben", "tam", "rus", "deu", "cmn", "jpn")) -> str:
    """The summary tables of reports/dynamic.md from the files this script wrote."""
    lines = []
    for mode in modes:
        s = json.loads((out / f"summary-{mode}.json").read_text())
        lines += [f"Mode `{mode}`, batches of {s['batch']} (load average {s['load_before'][0]:.1f} -> "
                  f"{s['load_after'][0]:.1f}, {s['seconds']:.0f} s):", "",
                  "| tokenizer | dataset | languages | mean % shorter at word level | at 10 merges: % shorter (% of word level) "
                  "| at 100: % shorter (% of word level) | English side at word level | premium mean abs log2 before -> 100 -> "
                  "word level | CV | Gini |", "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
        for name, v in s["tokenizers"].items():
            for d in ("tatoeba", "udhr"):
                if d not in v:
                    continue
                x = v[d]
                pb, p1, pw = x["premium_before"], x["premium_at_100"], x["premium_word_level"]
                lines.append(f"| {name} | {d} | {x['languages']} | {x['mean_pct_shorter_word_level']:.1f} | "
                             f"{x['mean_pct_shorter_at_10']:.1f} ({x['mean_pct_of_word_level_at_10']:.0f}) | "
                             f"{x['mean_pct_shorter_at_100']:.1f} ({x['mean_pct_of_word_level_at_100']:.0f}) | "
                             f"{x['english_side_pct_shorter_word_level']:.1f} | "
                             f"{pb['mean_abs_log2']:.3f} -> {p1['mean_abs_log2']:.3f} -> {pw['mean_abs_log2']:.3f} | "
                             f"{pb['cv']:.2f} -> {p1['cv']:.2f} -> {pw['cv']:.2f} | "
                             f"{pb['gini']:.3f} -> {p1['gini']:.3f} -> {pw['gini']:.3f} |")
        lines += ["", "| tokenizer | WikiText-2 test (English): % shorter at word level | at 100 merges |", "|---|---:|---:|"]
        for name, v in s["tokenizers"].items():
            lines.append(f"| {name} | {v['wikitext2_test_english_word_level_pct_shorter']:.2f} | "
                         f"{v['wikitext2_test_pct_shorter_at_100']:.2f} |")
        lines.append("")
    path = {m: out / f"tatoeba-{m}.csv" for m in modes}
    rows = {m: list(csv.DictReader(open(path[m]))) for m in modes if path[m].exists()}
    if rows:
        lines += ["Tatoeba, % shorter at the word level, a few languages:", "",
                  "| tokenizer | " + " | ".join(f"{l} ({m})" for l in langs for m in rows) + " |",
                  "|---|" + "---:|" * (len(langs) * len(rows))]
        names = list(dict.fromkeys(r["tokenizer"] for r in next(iter(rows.values()))))
        for name in names:
            cells = []
            for lang in langs:
                for m, rr in rows.items():
                    hit = [r for r in rr if r["tokenizer"] == name and r["lang"] == lang]
                    cells.append(f"{float(hit[0]['pct_shorter_word_level']):.1f}" if hit else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", default=None, help="only print the summary tables of these modes (comma-separated)")
    ap.add_argument("--tokenizers", default="smollm2,gpt2,llama3,qwen3,xlm-r")
    ap.add_argument("--mode", default="pretokens-unicode")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--datasets", default="tatoeba,udhr")
    ap.add_argument("--out", default="reports/dynamic-tables")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.markdown:
        print(markdown(out, a.markdown.split(",")))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    units = {}
    if "tatoeba" in a.datasets:
        units["tatoeba"] = tatoeba_units("tatoeba")
    if "udhr" in a.datasets:
        units["udhr"] = udhr_units("udhr")
    summary = {"mode": a.mode, "batch": a.batch, "tokenizers": {}}
    all_rows = {d: [] for d in units}
    for name in a.tokenizers.split(","):
        tok = DynamicTokenizer.load(name)
        s = summary["tokenizers"].setdefault(name, {})
        wiki = corpus_stats(tok, "wikitext2-test", mode=a.mode, batch=a.batch)
        s["wikitext2_test_english_word_level_pct_shorter"] = wiki["word_level_pct_shorter"]
        s["wikitext2_test_pct_shorter_at_100"] = corpus_stats(tok, "wikitext2-test", mode=a.mode, batch=a.batch,
                                                              merges=100)["pct_shorter"]
        for d, u in units.items():
            t1 = time.perf_counter()
            rows = table(tok, u, d, a.mode, a.batch, english_shared=(d == "udhr"))
            all_rows[d] += rows
            s[d] = {"languages": len(rows),
                    "mean_pct_shorter_word_level": sum(r["pct_shorter_word_level"] for r in rows) / len(rows),
                    "mean_pct_shorter_at_10": sum(r["pct_shorter_at_10"] for r in rows) / len(rows),
                    "mean_pct_shorter_at_100": sum(r["pct_shorter_at_100"] for r in rows) / len(rows),
                    "mean_pct_of_word_level_at_10": sum(r["pct_of_word_level_at_10"] for r in rows) / len(rows),
                    "mean_pct_of_word_level_at_100": sum(r["pct_of_word_level_at_100"] for r in rows) / len(rows),
                    "english_side_pct_shorter_word_level":
                        100.0 * (1 - sum(r["eng_word_level"] for r in rows) / sum(r["eng_tokens"] for r in rows))
                        if d == "tatoeba" else rows[0]["eng_pct_shorter_word_level"],
                    "premium_before": _summary(rows, "premium_before"),
                    "premium_at_100": _summary(rows, "premium_at_100"),
                    "premium_word_level": _summary(rows, "premium_word_level"),
                    "seconds": time.perf_counter() - t1}
            print(f"{name} {d}: {len(rows)} languages, mean {s[d]['mean_pct_shorter_word_level']:.1f}% shorter at "
                  f"the word level; premium mean |log2| {s[d]['premium_before']['mean_abs_log2']:.3f} -> "
                  f"{s[d]['premium_word_level']['mean_abs_log2']:.3f} ({s[d]['seconds']:.0f} s)", flush=True)
    for d, rows in all_rows.items():
        path = out / f"{d}-{a.mode}.csv"
        with open(path.with_suffix(".tmp"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
        os.replace(path.with_suffix(".tmp"), path)
    summary["seconds"] = time.perf_counter() - t0
    summary["load_before"], summary["load_after"] = load0, os.getloadavg()
    sp = out / f"summary-{a.mode}.json"
    sp.write_text(json.dumps(summary, indent=1))
    print(f"wrote {', '.join(str(out / f'{d}-{a.mode}.csv') for d in all_rows)}, {sp}; {summary['seconds']:.0f} s, "
          f"load {load0[0]:.2f} -> {summary['load_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
