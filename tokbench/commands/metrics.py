"""`tokbench metrics`: compression, entropy and parity metrics of tokenizers on corpora."""
from __future__ import annotations

import csv
import io
import json
import math

import click


def _fmt(v, digits=3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        text = f"{v:.{digits}f}"
        return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.00"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def text_table(head: list[str], rows: list[list[str]], left: int = 2) -> list[str]:
    """Lines of a plain-text table: every column as wide as its widest cell, two spaces between
    columns (so numbers never run together), the first `left` columns left-aligned, the rest right."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head)] + [line(r) for r in rows]


def tokenizer_corpus_options(f):
    """Options shared by `metrics` and `report`."""
    opts = [
        click.option("--tokenizer", "-t", "tokenizers", multiple=True, required=True,
                     help="Tokenizer asset name or path (repeatable)."),
        click.option("--corpus", "-c", "corpora", multiple=True,
                     help="Corpus asset name or path (repeatable)."),
        click.option("--parity", "parity", multiple=True,
                     help="Parallel set for cross-language parity: tatoeba, udhr or a path (repeatable; "
                          "default: the corpora that are Tatoeba or UDHR)."),
        click.option("--no-parity", is_flag=True, help="Skip cross-language parity."),
        click.option("--alpha", default=2.5, show_default=True, type=click.FloatRange(0, min_open=True),
                     help="Rényi order."),
        click.option("--max-order", default=5, show_default=True, type=click.IntRange(1, 8),
                     help="Largest n-gram order for H_k."),
        click.option("--limit-bytes", default=None, type=click.IntRange(1), help="Read at most this many bytes per corpus."),
        click.option("--text-field", default=None, help="JSONL field(s) holding the text, e.g. 'question,answer'."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def run_from_options(tokenizers, corpora, parity, no_parity, alpha, max_order, limit_bytes, text_field, quiet):
    import shlex
    import sys

    from tokbench.metrics import run_metrics

    data = run_metrics(list(tokenizers), list(corpora), parity=[] if no_parity else (list(parity) or None),
                       alpha=alpha, max_order=max_order, limit_bytes=limit_bytes, text_field=text_field,
                       progress=not quiet)
    data["command"] = "tokbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return data


def _nan_to_none(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return o


def to_json(data: dict) -> str:
    return json.dumps(_nan_to_none(data), ensure_ascii=False, indent=2)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


@click.command()
@tokenizer_corpus_options
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per tokenizer x corpus.")
@click.option("--engine", default=None, type=click.Choice(["inline", "process", "ray"]),
              help="Count on an executor (tokbench.metrics.counting): the count-based metrics only (bytes/token, "
                   "entropies, H_1..H_k), the same values on every engine [none: everything in memory].")
@click.option("--workers", default=None, type=click.IntRange(min=1, max=4096),
              help="--engine process / ray: tasks at once [all cores].")
@click.option("--ray-address", default=None, help="--engine ray: auto or HOST:PORT [a local cluster].")
@click.option("--shard-size", default=None, type=click.IntRange(min=1024),
              help="--engine: bytes of JSONL per map task (a text file is one document, so one task) [64 MiB].")
def metrics(tokenizers, corpora, parity, no_parity, alpha, max_order, limit_bytes, text_field, quiet,
            as_json, as_csv, engine, workers, ray_address, shard_size) -> None:
    """Bytes/token, fertility, Rényi efficiency, H_1..H_k, compression and parity of each
    TOKENIZER on each CORPUS. Missing values print as — (JSON null) with the reason."""
    from tokbench.metrics import flat_rows

    if engine is not None:
        import shlex
        import sys

        from tokbench.errors import TokbenchError
        from tokbench.metrics.counting import run_count_metrics

        if limit_bytes is not None or parity:
            raise TokbenchError("--limit-bytes and --parity do not apply with --engine",
                                fix="drop them, or run without --engine")
        data = run_count_metrics(list(tokenizers), list(corpora), engine=engine, workers=workers,
                                 ray_address=ray_address, alpha=alpha, max_order=max_order, text_field=text_field,
                                 shard_bytes=shard_size, progress=not quiet)
        data["command"] = "tokbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    elif workers is not None or ray_address is not None or shard_size is not None:
        from tokbench.errors import TokbenchError

        raise TokbenchError("--workers, --ray-address and --shard-size need --engine",
                            fix="add --engine process (or ray)")
    else:
        data = run_from_options(tokenizers, corpora, parity, no_parity, alpha, max_order, limit_bytes, text_field,
                                quiet)
    if as_json:
        click.echo(to_json(data))
        return
    if as_csv:
        click.echo(to_csv(flat_rows(data)), nl=False)
        return
    head = ["tokenizer", "corpus", "tokens", "B/tok", "fert", "cont", "util", "H1", "Rényi eff", "uni b/B", "gzip",
            "zstd", "lzma"]
    rows = [[r["tokenizer"], r["corpus"], _fmt(r["tokens"]), _fmt(r["bytes_per_token"], 2), _fmt(r["fertility"], 2),
             _fmt(r["continued_words"], 2), _fmt(r["utilisation"], 3), _fmt(r["shannon_entropy"], 2),
             _fmt(r["renyi_efficiency"], 3), _fmt(r["unigram_bits_per_byte"], 2),
             _fmt(r.get("gzip_bits_per_byte"), 2), _fmt(r.get("zstd_bits_per_byte"), 2),
             _fmt(r.get("lzma_bits_per_byte"), 2)] for r in data["results"]]
    for line in text_table(head, rows):
        click.echo(line)
    click.echo("\nconditional entropy H(X_k | X_<k), bits/token: plug-in, Miller-Madow, held-out Witten-Bell; "
               "with N k-grams, distinct contexts, singleton contexts")
    rows = [[r["tokenizer"], r["corpus"], str(g["order"]), _fmt(g["conditional_entropy"], 3),
             _fmt(g["conditional_entropy_mm"], 3), _fmt(g.get("heldout_bits_per_token"), 3), _fmt(g["n"]),
             _fmt(g["contexts"]), _fmt(g["singleton_context_fraction"], 3)]
            for r in data["results"] for g in r["ngrams"]]
    for line in text_table(["tokenizer", "corpus", "k", "plug-in", "MM", "held-out", "N", "contexts", "singleton"],
                           rows):
        click.echo(line)
    missing = sorted({f"{k}: {v}" for r in data["results"] for k, v in r["missing"].items()})
    if missing:
        click.echo("missing (—): " + "; ".join(missing))
    for kind, rows in data["parity"].items():
        for p in rows:
            click.echo(f"parity {kind:<8} {p['tokenizer']:<14} languages {p.get('n_languages', 0):>4}  "
                       f"mean premium {_fmt(p.get('premium_sum_mean'), 2)}  Gini {_fmt(p.get('gini'), 3)}  "
                       f"CV {_fmt(p.get('cv'), 3)}"
                       + (f"  missing: {'; '.join(sorted(set(p['missing'].values())))}" if p["missing"] else ""))
    click.echo(f"{data['seconds']['total']:.1f} s")
