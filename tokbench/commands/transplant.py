"""`tokbench transplant`: move a pretrained causal LM onto a new tokenizer without training."""
from __future__ import annotations

import json

import click

from tokbench.embeddings.refine import LOSSES, PRECISIONS
from tokbench.transplant.core import METHODS, NUMBER_POLICIES


@click.command("transplant")
@click.argument("base")
@click.option("--tokenizer", "-t", "target", required=True, help="Target tokenizer: file, folder or asset name.")
@click.option("--donor", default=None, help="Donor model (its embedding space codes the new tokens, method omp).")
@click.option("--method", type=click.Choice(METHODS), default="omp", show_default=True)
@click.option("--aux-embedder", default=None, help="Sentence-embedding folder/asset for tokenadapt and donor-free omp "
              "[default: minilm].")
@click.option("--k", type=int, default=None, help="OMP sparsity (default: chosen by held-out reconstruction).")
@click.option("--ridge", type=float, default=None, help="OMP ridge (default: chosen by held-out reconstruction).")
@click.option("--blend", type=float, default=0.5, show_default=True, help="Weight of the subword mean in OMP rows.")
@click.option("--global-weight", type=float, default=0.3, show_default=True, help="TokenAdapt: weight of the global estimate.")
@click.option("--temperature", type=float, default=0.3, show_default=True, help="TokenAdapt: softmax temperature.")
@click.option("--top-k", type=int, default=8, show_default=True, help="TokenAdapt: FAISS neighbours.")
@click.option("--numbers", type=click.Choice(NUMBER_POLICIES), default="auto", show_default=True,
              help="New numeric tokens when digit splitting differs: decomposition mean, the method itself, or "
                   "auto (the method for omp with a donor, else the decomposition).")
@click.option("--eval", "eval_text", default=None, help="Text file or corpus asset: bits/byte before and after.")
@click.option("--max-chars", type=int, default=None, help="Evaluate on the first N characters of --eval.")
@click.option("--refine", "refine", type=float, default=None, metavar="SECONDS",
              help="Then optimise only the new rows for at most SECONDS by self-distillation from BASE on --refine-text.")
@click.option("--refine-steps", type=int, default=None, help="Bound the refinement by optimiser steps (with or "
              "without --refine).")
@click.option("--refine-text", default=None, help="Text file or corpus asset to refine on (last tenth held out for "
              "early stopping); several corpora separated by commas are one domain each, none may get worse.")
@click.option("--refine-max-chars", type=int, default=400_000, show_default=True,
              help="Refine on the first N characters of --refine-text.")
@click.option("--refine-lr", type=float, default=None, help="Adam learning rate of the row deltas [default: 5e-3].")
@click.option("--refine-loss", type=click.Choice(LOSSES), default=None, help="Refinement loss [default: ntp].")
@click.option("--refine-precision", type=click.Choice(PRECISIONS), default=None,
              help="Refinement steps under bf16 autocast, or not [default: auto: bf16 where the device has native "
                   "bf16 matrix units, e.g. AMX CPUs].")
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a folder tokbench wrote earlier.")
@click.option("--no-cache", is_flag=True, help="Do not cache base bits/byte and auxiliary embeddings.")
@click.option("-o", "--out", required=True, help="Output model folder (new or empty; see --overwrite).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def transplant(base, target, donor, method, aux_embedder, k, ridge, blend, global_weight, temperature, top_k,
               numbers, eval_text, max_chars, refine, refine_steps, refine_text, refine_max_chars, refine_lr,
               refine_loss, refine_precision, device, seed, overwrite, no_cache, out, as_json) -> None:
    """Write a copy of BASE (model folder or asset) that speaks the tokenizer TARGET into OUT."""
    from tokbench.assets import home
    from tokbench.transplant import transplant as run

    cache = None if no_cache else home() / "cache"
    report = run(base, target, out, donor=donor, method=method, aux_embedder=aux_embedder, k=k, ridge=ridge,
                 blend=blend, global_weight=global_weight, temperature=temperature, top_k=top_k, eval_text=eval_text,
                 eval_max_chars=max_chars, overwrite=overwrite, seed=seed, device=device, cache_dir=cache,
                 numbers=numbers, refine=refine, refine_steps=refine_steps, refine_text=refine_text,
                 refine_max_chars=refine_max_chars,
                 refine_options={k: v for k, v in (("lr", refine_lr), ("loss", refine_loss),
                                                   ("precision", refine_precision)) if v is not None})
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    c = report["counts"]
    click.echo(f"{report['out']}: method {method}, {c['shared']:,} shared, {c['new']:,} new, {c['special']} special, "
               f"{c['numeric_new']:,} numeric new tokens ({report['numbers']['note']})")
    for role, p in report["parameters"].items():
        if p:
            click.echo(f"  {role}: " + ", ".join(f"{k}={v}" for k, v in p.items() if k != "k_candidates"))
    for role, h in report["held_out_reconstruction"].items():
        val = h.get("chosen", h.get("global_estimate"))
        click.echo(f"  held-out reconstruction ({role}): {val} ({h['metric']}, {h['held_out']} tokens)")
    ev = report.get("eval")
    if ev:
        click.echo(f"  bits/byte on {ev['text']} ({ev['after']['bytes_covered']:,} bytes): before "
                   f"{ev['before']['bits_per_byte']:.4f}, after {ev['after']['bits_per_byte']:.4f}, "
                   f"ratio {ev['ratio']:.4f}")
    rf = report.get("refine")
    if rf:
        ho = rf["held_out"]
        click.echo(f"  refined {rf['rows']:,} rows on {rf['text']}: {rf['steps']} steps in {rf['seconds']} s "
                   f"(stopped: {rf['stopped']}), held-out bits/byte {ho['initial_bpb']:.4f} -> {ho['best_bpb']:.4f} "
                   f"({rf['returned']} rows, best step {rf['best_step']})")
    click.echo(f"  seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
