"""Static HTML report of a metrics run (`tokbench report`): opens offline, no scripts.

`write_report(data, out_dir, command=...)` writes, through a temporary sibling folder renamed
into place:

    index.html       summary table, per-domain compression bars, H_k curves, parity charts,
                     full table, how it was made
    metrics.json     everything (`tokbench metrics --json` output)
    metrics.csv      one row per tokenizer x corpus (`tokbench metrics --csv`)
    ngrams.csv       tokenizer, corpus, order, N, distinct, contexts, singleton fraction, entropies
    parity.csv       dataset, tokenizer, language, units, tokens, English tokens, premiums
    *.png, *.svg     the figures (matplotlib)
"""
from __future__ import annotations

import html
import json
import math
import os
import warnings
from pathlib import Path
from typing import Iterable

from tokbench.outputs import output_folder
from tokbench.report.plots import DOMAINS, compression_bars, domain_of, domain_table, hk_curves, parity_chart

__all__ = ["write_report", "domain_of"]


def _f(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '<span class="na" title="missing">—</span>'
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        text = f"{v:.{digits}f}"
        return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.000"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    # wide tables scroll inside their own box instead of overflowing the page
    return f'<div class="wide"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _csvs(data: dict, out: Path) -> None:
    from tokbench.commands.metrics import to_csv
    from tokbench.metrics import flat_rows

    (out / "metrics.csv").write_text(to_csv(flat_rows(data)), encoding="utf-8")
    ng = []
    for r in data["results"]:
        for g in r["ngrams"]:
            ng.append({"tokenizer": r["tokenizer"], "corpus": r["corpus"], **{k: v for k, v in g.items()}})
    (out / "ngrams.csv").write_text(to_csv(ng), encoding="utf-8")
    pr = []
    for dataset, rows in data["parity"].items():
        for p in rows:
            for lang, v in p["languages"].items():
                pr.append({"dataset": dataset, "tokenizer": p["tokenizer"], "language": lang, **v})
    (out / "parity.csv").write_text(to_csv(pr) if pr else "dataset,tokenizer,language\n", encoding="utf-8")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1250px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child,td.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.na{color:#b00}.note{color:#555;font-size:13px}img{max-width:100%}code,pre{background:#f6f6f6;font-size:12px}
pre{padding:.6em;white-space:pre-wrap}
.wide{max-width:100%;overflow-x:auto}.full td:last-child{min-width:26em;text-align:left}
"""


def _summary(data: dict) -> str:
    dt = domain_table(data)
    doms = [d for d, _ in DOMAINS if any(d in v for v in dt.values())]
    by_tok: dict = {}
    for r in data["results"]:
        by_tok.setdefault(r["tokenizer"], []).append(r)
    par = {(k, p["tokenizer"]): p for k, rows in data["parity"].items() for p in rows}
    head = ["tokenizer", "K"] + [f"bytes/token<br>{d}" for d in doms] + [
        "fertility<br>English", "Rényi eff.<br>(α, K) English", "H1 bits<br>English",
        "h5 plug-in / held-out<br>English", "unk + byte-fb<br>multilingual"]
    for k in data["parity"]:
        head += [f"{k} mean<br>premium", f"{k}<br>Gini"]
    rows = []
    for t in data["tokenizers"]:
        name = t["name"]
        eng = [r for r in by_tok.get(name, []) if domain_of(r["corpus"]) == "english"]
        # byte-weighted over the English corpora
        tot = sum(r["bytes"] for r in eng) or None

        def w(key):
            vals = [(r.get(key), r["bytes"]) for r in eng if r.get(key) is not None]
            return sum(v * b for v, b in vals) / sum(b for _, b in vals) if vals and tot else None

        def w_last(field):
            vals = [(r["ngrams"][-1].get(field), r["bytes"]) for r in eng if r["ngrams"][-1].get(field) is not None]
            return sum(v * b for v, b in vals) / sum(b for _, b in vals) if vals else None

        row = [html.escape(name), _f(t["K"])] + [_f(dt.get(name, {}).get(d, {}).get("bytes_per_token"), 2)
                                                 for d in doms]
        row += [_f(w("fertility"), 2), _f(w("renyi_efficiency")), _f(w("shannon_entropy"), 2),
                f'{_f(w_last("conditional_entropy"), 2)} / {_f(w_last("heldout_bits_per_token"), 2)}']
        multi = [r for r in by_tok.get(name, []) if domain_of(r["corpus"]) == "multilingual"]
        rate = None
        if multi:
            bad = sum(((r["unk_rate"] or 0) + (r["byte_fallback_rate"] or 0)) * r["tokens"] for r in multi)
            rate = bad / sum(r["tokens"] for r in multi)
        row.append(_f(rate, 4))
        for k in data["parity"]:
            p = par.get((k, name), {})
            row += [_f(p.get("premium_sum_mean"), 2), _f(p.get("gini"))]
        rows.append(row)
    note = ('<p class="note">English, math, code, multilingual: corpora grouped by name (see the full table). '
            "Per-domain and English values are weighted by corpus bytes (unk + byte-fallback rate: by tokens). "
            "A tokenizer that maps unknown scripts to one unk token looks cheap in the parity columns: read "
            "its premiums with its unk rate. — = missing (reason in the full table "
            "and in metrics.json).</p>")
    return _table(head, rows) + note


def _full_table(data: dict) -> str:
    head = ["tokenizer", "corpus", "tokens", "bytes/tok", "chars/tok", "words", "fertility", "continued",
            "unk rate", "byte-fb rate", "types", "util.", "H1", "Rényi H<sub>α</sub>", "eff. (K)", "eff. (types)",
            "unigram b/B", "gzip b/B", "zstd b/B", "lzma b/B", "missing"]
    rows = []
    for r in data["results"]:
        rows.append([html.escape(r["tokenizer"]), html.escape(r["corpus"]), _f(r["tokens"]),
                     _f(r["bytes_per_token"], 2), _f(r["chars_per_token"], 2),
                     f'{_f(r["words"])} ({html.escape(r["word_segmentation"])})', _f(r["fertility"], 2),
                     _f(r["continued_words"]), _f(r["unk_rate"], 4), _f(r["byte_fallback_rate"], 4),
                     _f(r["types"]), _f(r["utilisation"]), _f(r["shannon_entropy"], 2), _f(r["renyi_entropy"], 2),
                     _f(r["renyi_efficiency"]), _f(r["renyi_efficiency_observed"]), _f(r["unigram_bits_per_byte"]),
                     _f(r.get("gzip_bits_per_byte")), _f(r.get("zstd_bits_per_byte")),
                     _f(r.get("lzma_bits_per_byte")),
                     f'<span class="l">{html.escape("; ".join(f"{k}: {v}" for k, v in r["missing"].items()))}</span>'])
    return _table(head, rows, "full")


def _ngram_table(data: dict) -> str:
    head = ["tokenizer", "corpus", "k", "N k-grams", "distinct contexts", "singleton contexts",
            "H(X<sub>k</sub>|X<sub>&lt;k</sub>) plug-in", "Miller–Madow", "held-out WB", "block H_k"]
    rows = []
    for r in data["results"]:
        for g in r["ngrams"]:
            rows.append([html.escape(r["tokenizer"]), html.escape(r["corpus"]), str(g["order"]), _f(g["n"]),
                         _f(g["contexts"]), _f(g["singleton_context_fraction"]), _f(g["conditional_entropy"]),
                         _f(g["conditional_entropy_mm"]), _f(g.get("heldout_bits_per_token")),
                         _f(g["block_entropy"])])
    return _table(head, rows)


def _parity_table(data: dict) -> str:
    head = ["dataset", "tokenizer", "languages", "mean premium (ratio of sums)", "max", "Gini", "CV", "missing"]
    rows = []
    for k, ps in data["parity"].items():
        for p in ps:
            rows.append([html.escape(k), html.escape(p["tokenizer"]), _f(p.get("n_languages")), _f(p.get("premium_sum_mean"), 2),
                         _f(p.get("premium_sum_max"), 2), _f(p.get("gini")), _f(p.get("cv")),
                         html.escape("; ".join(f"{a}: {b}" for a, b in p["missing"].items()))])
    return _table(head, rows)


def _provenance(data: dict, command: str | None) -> str:
    s = data["settings"]
    toks = _table(["tokenizer", "K", "format", "family", "library", "version", "encoded by", "source"],
                  [[html.escape(t["name"]), _f(t["K"]), _f(t["format"]), _f(t["family"]), _f(t["library"]),
                    html.escape(str(t["library_version"])), html.escape(t.get("encoder", t["library"])),
                    f'<span class="l">{html.escape(t["source"])}</span>']
                   for t in data["tokenizers"]])
    cors = _table(["corpus", "documents", "bytes", "words counted as", "path"],
                  [[html.escape(c["name"]), _f(c["documents"]), _f(c["bytes"]), _f(c["word_segmentation"]),
                    f'<span class="l">{html.escape(c["path"])}</span>'] for c in data["corpora"]])
    split = sorted({r["heldout_split"] for r in data["results"]})
    ser = sorted({r["serialisation"] for r in data["results"]})
    return (f"<p>Command: <code>{html.escape(command or '(API)')}</code></p>"
            f"<p>Settings: Rényi α = {s['alpha']}, n-gram orders 1..{s['max_order']}, compressors "
            f"{', '.join(s['compressors'])} (gzip level 6, zstd level 3, lzma preset 1), limit_bytes "
            f"{s['limit_bytes']}; held-out split: {html.escape('; '.join(split))}; compression serialisation: "
            f"{html.escape('; '.join(ser))}.</p>"
            f"{toks}{cors}"
            f"<p>Versions: <code>{html.escape(json.dumps(data['provenance']['versions']))}</code></p>"
            f"<p>Machine: <code>{html.escape(json.dumps(data['provenance']['machine']))}</code>; "
            f"seconds: <code>{html.escape(json.dumps(data['seconds']))}</code></p>"
            "<p>Definitions of every metric: <code>reports/metrics.md</code> in the tokbench repository.</p>")


def _img(stem: str, alt: str) -> str:
    return f'<p><a href="{stem}.svg"><img src="{stem}.png" alt="{html.escape(alt)}"></a></p>'


def render_html(data: dict, figures: dict[str, list[str]], command: str | None) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tokbench metrics report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>tokbench: tokenizer metrics</h1>",
             f"<p class='note'>{len(data['tokenizers'])} tokenizers × {len(data['corpora'])} corpora"
             f"{', parity on ' + ', '.join(data['parity']) if data['parity'] else ''}. Data beside this page: "
             "<a href='metrics.json'>metrics.json</a>, <a href='metrics.csv'>metrics.csv</a>, "
             "<a href='ngrams.csv'>ngrams.csv</a>, <a href='parity.csv'>parity.csv</a>.</p>",
             "<h2>Summary</h2>", _summary(data)]
    if figures.get("compression"):
        parts += ["<h2>Compression per domain</h2>", _img("compression", "compression per domain")]
    if figures.get("hk"):
        parts += ["<h2>Conditional entropy H(X<sub>k</sub> | X<sub>&lt;k</sub>)</h2>",
                  "<p class='note'>Solid: plug-in estimate on the whole corpus (falls towards 0 as contexts become "
                  "unique: see N, distinct contexts and singleton contexts in the n-gram table). Dotted: held-out "
                  "cross-entropy of an interpolated Witten–Bell k-gram model (an upper bound).</p>",
                  _img("hk_curves", "H_k curves")]
    if data["parity"]:
        parts += ["<h2>Cross-language parity</h2>", _parity_table(data)]
        for k in data["parity"]:
            if figures.get(f"parity_{k}"):
                parts.append(_img(f"parity_{k}", f"parity {k}"))
    parts += ["<h2>All metrics</h2>", _full_table(data),
              "<h2>N-gram entropies</h2>", _ngram_table(data),
              "<h2>How it was made</h2>", _provenance(data, command), "</body></html>"]
    return "\n".join(parts)


def _inputs_of(data: dict) -> list[str]:
    """The corpus and tokenizer files a metrics run read (the report folder may not touch them)."""
    paths = [c.get("path") for c in data.get("corpora", []) if isinstance(c, dict)]
    paths += [t.get("source") for t in data.get("tokenizers", []) if isinstance(t, dict)]
    return [p for p in paths if isinstance(p, str) and p and os.path.exists(p)]


def write_report(data: dict, out_dir: str | os.PathLike, command: str | None = None, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), force: bool | None = None) -> Path:
    """Write the report folder through a temporary sibling renamed into place (tokbench.outputs: an
    existing non-empty folder is replaced only with `overwrite` and only when tokbench wrote it; never a
    folder holding an input, the current folder or a parent). `inputs`: files read besides those the
    data names. `force`: deprecated name of `overwrite`. Returns the folder."""
    from tokbench.commands.metrics import to_json

    if force is not None:
        warnings.warn("write_report(force=...) is deprecated; use overwrite=", DeprecationWarning, stacklevel=2)
        overwrite = force
    with output_folder(out_dir, overwrite, [*inputs, *_inputs_of(data)], command="report") as tmp:
        (tmp / "metrics.json").write_text(to_json(data), encoding="utf-8")
        _csvs(data, tmp)
        figures = {}
        if data["results"]:
            figures["compression"] = compression_bars(data, tmp)
            figures["hk"] = hk_curves(data, tmp)
        for k in data["parity"]:
            figures[f"parity_{k}"] = parity_chart(data, tmp, k)
        (tmp / "index.html").write_text(render_html(data, figures, command), encoding="utf-8")
    return Path(out_dir)
