"""`tokbench report`: the metrics of `tokbench metrics` as a static HTML folder with plots."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from tokbench.commands.metrics import run_from_options, tokenizer_corpus_options


@click.command()
@tokenizer_corpus_options
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (new or empty; see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a report tokbench wrote earlier.")
@click.option("--from-json", "from_json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Render a saved `tokbench metrics --json` output instead of computing "
                                 "(--tokenizer/--corpus then only select what to show).")
def report(tokenizers, corpora, parity, no_parity, alpha, max_order, limit_bytes, text_field, quiet, output,
           overwrite, from_json) -> None:
    """Compute the metrics of TOKENIZERs on CORPORA and write an offline HTML report to -o DIR
    (index.html, metrics.json/csv, ngrams.csv, parity.csv, PNG/SVG figures)."""
    from tokbench.errors import TokbenchError
    from tokbench.outputs import check_output
    from tokbench.report import write_report

    check_output(output, overwrite, [from_json] if from_json else [])  # before the metrics are computed

    command = "tokbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if from_json:
        try:
            data = json.loads(from_json.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TokbenchError(f"not JSON ({exc})", path=from_json, fix="pass `tokbench metrics --json` output") from None
        _check_metrics_json(data, from_json)
        keep_t = set(tokenizers)
        keep_c = set(corpora) or {c["name"] for c in data["corpora"]}
        data["tokenizers"] = [t for t in data["tokenizers"] if t["name"] in keep_t]
        data["corpora"] = [c for c in data["corpora"] if c["name"] in keep_c]
        data["results"] = [r for r in data["results"] if r["tokenizer"] in keep_t and r["corpus"] in keep_c]
        data["parity"] = {k: [p for p in v if p["tokenizer"] in keep_t] for k, v in data["parity"].items()
                          if not no_parity}
        if not data["tokenizers"]:
            raise TokbenchError("none of the --tokenizer names is in this JSON", path=from_json,
                                fix="pick names from its 'tokenizers'")
        data.setdefault("provenance", {})["rendered_from"] = str(from_json)
        command += f"   (metrics computed by: {data.get('command', 'tokbench metrics --json')})"
    else:
        data = run_from_options(tokenizers, corpora, parity, no_parity, alpha, max_order, limit_bytes, text_field,
                                quiet)
    try:
        out = write_report(data, output, command, overwrite=overwrite, inputs=[from_json] if from_json else [])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        if not from_json or isinstance(exc, TokbenchError):
            raise
        raise TokbenchError(f"not a complete `tokbench metrics --json` output ({type(exc).__name__}: {exc})",
                            path=from_json, fix="pass the unedited output of `tokbench metrics --json`") from None
    click.echo(f"wrote {out}/index.html")


_METRICS_JSON_KEYS = {"tokenizers": list, "corpora": list, "results": list, "parity": dict}


def _check_metrics_json(data, path: Path) -> None:
    """The top level of a `tokbench metrics --json` output: the lists of tokenizers, corpora and results
    (objects with a name / tokenizer and corpus) and the parity mapping."""
    from tokbench.errors import TokbenchError

    def refuse(why: str):
        raise TokbenchError(f"not a `tokbench metrics --json` output ({why})", path=path,
                            fix="pass the output of `tokbench metrics --json`")

    if not isinstance(data, dict):
        refuse(f"a JSON {type(data).__name__}, not an object")
    for key, kind in _METRICS_JSON_KEYS.items():
        if not isinstance(data.get(key), kind):
            refuse(f"no {kind.__name__} {key!r}")
    for key, need in (("tokenizers", ("name",)), ("corpora", ("name",)), ("results", ("tokenizer", "corpus"))):
        for i, item in enumerate(data[key]):
            if not isinstance(item, dict) or any(k not in item for k in need):
                refuse(f"{key}[{i}] is not an object with {' and '.join(need)}")
    if not data["results"]:
        refuse("'results' is empty")
    for k, v in data["parity"].items():
        if not isinstance(v, list) or not all(isinstance(p, dict) and "tokenizer" in p for p in v):
            refuse(f"parity[{k!r}] is not a list of objects with a tokenizer")
