"""`tokbench surgery RECIPE.yml -o OUT`: edit a model's vocabulary after the fact from a YAML recipe."""
from __future__ import annotations

import json

import click


def _print_plan(p: dict) -> None:
    click.echo(f"base: {p['base_ids']:,} ids, hidden {p['hidden']}, {'tied' if p['tied'] else 'untied'}, {p['dtype']}")
    for op in p["ops"]:
        detail = ", ".join(f"{k} {v}" for k, v in op.items() if k not in ("op", "name", "examples") and v not in ([], {}, None))
        click.echo(f"  {op['op']} {op['name']}: {detail}")
        if op.get("examples"):
            click.echo(f"      e.g. {', '.join(repr(x) for x in op['examples'])}")
    click.echo(f"final: {p['tokens']:,} tokens, {p['rows']:,} rows ({p['padding_rows']} padding), "
               f"{p['added']:,} added, {p['removed']:,} removed")


@click.command("surgery")
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("-o", "--out", default=None, help="Output model folder (required unless --dry-run); with "
              "--from-mergekit: the recipe file to write.")
@click.option("--from-mergekit", "mergekit", type=click.Path(dir_okay=False), default=None,
              help="Convert a mergekit merge config (tokenizer / tokenizer_source / chat_template) into a recipe.")
@click.option("--mergekit-templates", "templates", type=click.Path(file_okay=False), default=None,
              help="With --from-mergekit: folder of mergekit's bundled chat templates (NAME.jinja) for "
              "chat_template: llama3 / mistral / alpaca / exaone (default: the installed mergekit package).")
@click.option("--dry-run", is_flag=True, help="Print the plan (per op: tokens added/removed/renamed, final size, "
              "padded rows, row initialisers) and write nothing.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--no-cache", is_flag=True, help="Do not cache the auxiliary embeddings omp / tokenadapt make of the "
              "base's tokens (default: $TOKBENCH_HOME/cache).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def surgery(recipe, out, mergekit, templates, dry_run, overwrite, no_cache, as_json) -> None:
    """Apply the surgery RECIPE (YAML) to its base model and write the edited model to OUT."""
    from pathlib import Path

    from tokbench.errors import TokbenchError
    from tokbench.surgery import run

    if mergekit:
        import yaml

        from tokbench.surgery.union import from_mergekit

        if not out:
            raise TokbenchError("no recipe file to write", fix="pass -o recipe.yml with --from-mergekit")
        dest = Path(out)
        if dest.exists() and not overwrite:
            raise TokbenchError("recipe file exists", path=dest, fix="pass --overwrite or choose another -o")
        body = from_mergekit(mergekit, files=dest.absolute().parent, templates=templates)
        dest.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), encoding="utf-8")
        click.echo(f"wrote {dest}: {len(body.get('ops', []))} ops ({', '.join(o['op'] for o in body.get('ops', []))})")
        return
    if not recipe:
        raise TokbenchError("no recipe", fix="pass RECIPE.yml (or --from-mergekit merge.yml -o recipe.yml)")
    if not dry_run and not out:
        raise TokbenchError("no output folder", fix="pass -o OUT, or --dry-run to see the plan")
    from tokbench.assets import home

    report = run(recipe, out, dry_run=dry_run, overwrite=overwrite, cache_dir=None if no_cache else home() / "cache")
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_plan(report["plan"])
    if dry_run:
        click.echo("dry run: nothing written")
        return
    checks = report.get("checks", {})
    rt = ", ".join(f"{k} {'ok' if v['lossless'] else 'FAILED'}" for k, v in checks.get("roundtrip", {}).items())
    click.echo(f"wrote {report['out']}: round trip {rt}"
               + (f"; chat template rendered on {checks['chat_template']['conversations']} conversations"
                  if "chat_template" in checks else ""))
    click.echo("  seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
