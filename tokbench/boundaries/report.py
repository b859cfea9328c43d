"""Tables and a figure of boundary runs (`tokbench boundaries report`): evaluate every run on the held-out
splits (tokbench.boundaries.metrics.evaluate), add zero-training segmenters (bytes, whitespace words, BPE
tokenizers encoded with HF `tokenizers`) on the same parallel test text, and write markdown, JSON, an HTML
page and a PNG of the segment premium per language.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Sequence

from tokbench.assets import resolve
from tokbench.boundaries.metrics import baseline_parity, byte_ends, evaluate, word_ends
from tokbench.errors import TokbenchError
from tokbench.outputs import atomic_write

DEFAULT_BASELINES = ("gpt2", "llama3-hf", "xlm-r")


def _hf_counter(name: str):
    from tokenizers import Tokenizer

    path = Path(resolve(name, kind="tokenizer"))
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.suffix != ".json" or not path.is_file():
        raise TokbenchError("baseline tokenizers must be HF tokenizer.json files", path=path,
                            fix="pass a tokenizer.json asset (e.g. gpt2, llama3-hf, xlm-r)")
    tok = Tokenizer.from_file(str(path))
    return lambda texts: [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def baselines(parallel, names: Sequence[str] = DEFAULT_BASELINES) -> dict:
    """Parity tables of zero-training segmenters on `parallel` (language -> pairs)."""
    out = {"bytes": baseline_parity("bytes", lambda ts: [len(byte_ends(t)) for t in ts], parallel),
           "words": baseline_parity("words", lambda ts: [len(word_ends(t)) for t in ts], parallel)}
    for n in names:
        out[n] = baseline_parity(n, _hf_counter(n), parallel)
    return out


def run_name(run: dict) -> str:
    """A run's name in the tables: its arm, and its window policy unless random (train --windows)."""
    policy = run.get("windows", "random")
    return run["arm"] if policy == "random" else f"{run['arm']}, {policy} windows"


def _f(x, spec=".3f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(runs: list[dict], base: dict, command: str = "") -> str:
    lines = ["# tokbench boundaries: learned segmentation", ""]
    if command:
        lines += ["Produced by:", "", "```", command, "```", ""]
    langs = sorted({k for r in runs for k in r.get("parity", {}).get("languages", {})}
                   | {k for b in base.values() for k in b["languages"]})
    lines += ["## Segment premium on the Tatoeba test split (S_L = segments(L) / segments(English))", "",
              "| segmenter | English bytes/segment | mean \\|log2 S\\| | CV | Gini | max S | "
              + " | ".join(langs) + " |", "|---" * (6 + len(langs)) + "|"]
    rows = [(f"{run_name(r)} ({r['preset']}, step {r['step']})", r["parity"]) for r in runs if "parity" in r]
    rows += [(n, b) for n, b in base.items()]
    for name, t in rows:
        per = [_f(t["languages"].get(k, {}).get("premium_sum"), ".2f") for k in langs]
        lines.append(f"| {name} | {_f(t.get('english_bytes_per_segment'), '.2f')} | {_f(t.get('mean_abs_log2'))} | "
                     f"{_f(t.get('cv'))} | {_f(t.get('gini'))} | {_f(t.get('premium_sum_max'), '.2f')} | "
                     + " | ".join(per) + " |")
    ctx = [(f"{run_name(r)} ({r['preset']}, step {r['step']})", r["parity_in_context"]) for r in runs
           if "parity_in_context" in r]
    if ctx:
        lines += ["", "## The same, each sentence read in context (after the test sentences before it, both sides)",
                  "", "| segmenter | English bytes/segment | mean \\|log2 S\\| | CV | Gini | max S | "
                  + " | ".join(langs) + " |", "|---" * (6 + len(langs)) + "|"]
        for name, t in ctx:
            per = [_f(t["languages"].get(k, {}).get("premium_sum"), ".2f") for k in langs]
            lines.append(f"| {name} | {_f(t.get('english_bytes_per_segment'), '.2f')} | "
                         f"{_f(t.get('mean_abs_log2'))} | {_f(t.get('cv'))} | {_f(t.get('gini'))} | "
                         f"{_f(t.get('premium_sum_max'), '.2f')} | " + " | ".join(per) + " |")
    lines += ["", "## Boundary rate against the prior per script (held-out text; each line alone / in context)", "",
              "| run | script | train bytes | prior | rate | relative | rate in context | relative |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        for g, s in r.get("scripts", {}).items():
            lines.append(f"| {run_name(r)} | {g} | {s['train_bytes']:,} | {_f(s['prior'], '.4f')} | "
                         f"{_f(s['rate'], '.4f')} | {_f(s['relative'], '+.1%')} | "
                         f"{_f(s.get('rate_in_context'), '.4f')} | {_f(s.get('relative_in_context'), '+.1%')} |")
    lines += ["", "## Held-out bits/byte, bytes per segment, whitespace-boundary F1 per language", "",
              "| run | " + " | ".join(sorted({k for r in runs for k in r['languages']})) + " |",
              "|---" * (1 + len({k for r in runs for k in r['languages']})) + "|"]
    all_langs = sorted({k for r in runs for k in r["languages"]})
    for r in runs:
        cells = []
        for k in all_langs:
            row = r["languages"].get(k, {})
            cells.append(f"{_f(row.get('bits_per_byte'))} / {_f(row.get('bytes_per_segment'), '.1f')} / "
                         f"{_f(row.get('whitespace_f1'), '.2f')}")
        lines.append(f"| {run_name(r)} | " + " | ".join(cells) + " |")
    lines += ["", "## Speed (CPU forward pass of the whole LM; segmentation alone)", "",
              "| run | parameters | LM bytes/s | segmenter bytes/s |", "|---|---:|---:|---:|"]
    for r in runs:
        t = r.get("throughput", {})
        lines.append(f"| {run_name(r)} | {r['n_parameters']:,} | {_f(t.get('bytes_per_s'), ',.0f')} | "
                     f"{_f(t.get('segment_bytes_per_s'), ',.0f')} |")
    return "\n".join(lines) + "\n"


def figure(runs: list[dict], base: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(run_name(r), r["parity"]) for r in runs if "parity" in r] + list(base.items())
    langs = sorted({k for _, t in rows for k in t["languages"]})
    fig, ax = plt.subplots(figsize=(max(6, len(langs) * 0.9), 3.2))
    w = 0.8 / max(1, len(rows))
    for i, (name, t) in enumerate(rows):
        vals = [t["languages"].get(k, {}).get("premium_sum") or np.nan for k in langs]
        ax.bar(np.arange(len(langs)) + i * w, vals, w, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log", base=2)
    ax.set_xticks(np.arange(len(langs)) + 0.4 - w / 2, langs)
    ax.set_ylabel("segment premium vs English")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    buf = __import__("io").BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def report(checkpoints: Sequence[str | os.PathLike], splits, out: str | os.PathLike, *,
           baseline_names: Sequence[str] = DEFAULT_BASELINES, device: str = "cpu", command: str = "",
           max_bytes: int = 200_000) -> dict:
    """Evaluate runs, add baselines, write OUT (.md) plus OUT's .json, .html and .png siblings."""
    from tokbench.boundaries.train import load_model

    runs = []
    for c in checkpoints:
        model, state = load_model(c, device)
        runs.append(evaluate(model, state, splits, device=device, max_bytes=max_bytes))
    par = splits.parallel_test
    base = baselines(par, baseline_names)
    out = Path(out)
    md = markdown(runs, base, command)
    png = figure(runs, base, out.with_suffix(".png"))
    md += f"\n![segment premium per language]({png.name})\n"
    atomic_write(out, md)
    atomic_write(out.with_suffix(".json"), json.dumps({"runs": runs, "baselines": base}, indent=1))
    page = (f"<!doctype html><meta charset='utf-8'><title>tokbench boundaries</title><pre>{html.escape(md)}</pre>"
            f"<img src='{png.name}'>")
    atomic_write(out.with_suffix(".html"), page)
    return {"runs": runs, "baselines": base, "markdown": str(out)}


__all__ = ["report", "baselines", "markdown", "figure", "run_name", "DEFAULT_BASELINES"]
