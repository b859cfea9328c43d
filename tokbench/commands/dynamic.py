"""`tokbench dynamic`: dynamic batch merging (BPE inside each batch at run time)."""
from __future__ import annotations

import json

import click


@click.group()
def dynamic():
    """Dynamic batch merging: shorter sequences at run time (first slice: length statistics)."""


@dynamic.command("stats")
@click.option("--tokenizer", "-t", required=True, help="Byte-level BPE tokenizer asset name or path.")
@click.option("--corpus", "-c", required=True, help="Corpus asset name or path (its non-blank lines are the texts).")
@click.option("--mode", type=click.Choice(["word", "pretokens"]), default="word", show_default=True,
              help="Boundaries no merge may cross.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1, 100_000), help="Lines per batch.")
@click.option("--merges", default=None, type=click.IntRange(0, 10_000_000), help="Merges per batch.")
@click.option("--shorter-pct", default=None, type=click.FloatRange(0, 100, min_open=True, max_open=True),
              help="Merge each batch until it is this % shorter (default without --merges: to exhaustion).")
@click.option("--max-constituents", default=None, type=click.IntRange(2, 1_000_000),
              help="At most this many base tokens per merged token.")
@click.option("--max-bytes", default=None, type=click.IntRange(2, 1_000_000), help="At most this many bytes per merged token.")
@click.option("--limit-lines", default=None, type=click.IntRange(1, 10_000_000), help="Read at most this many lines.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the merges -> length curve).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def stats(tokenizer, corpus, mode, batch, merges, shorter_pct, max_constituents, max_bytes, limit_lines, as_json, quiet):
    """Tokens before / after merging, % shorter (absolute and of the word level), merges, time."""
    from tokbench.dynamic import corpus_stats

    r = corpus_stats(tokenizer, corpus, mode=mode, batch=batch, merges=merges, shorter_pct=shorter_pct,
                     max_constituents=max_constituents, max_bytes=max_bytes, limit_lines=limit_lines,
                     progress=not quiet)
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    click.echo(f"{r['tokenizer']} on {r['corpus']}: {r['lines']:,} lines in {r['batches']:,} batches of {batch}, "
               f"mode {mode}")
    click.echo(f"tokens before      {r['tokens_before']:,}")
    click.echo(f"tokens after       {r['tokens_after']:,}")
    click.echo(f"shorter            {r['pct_shorter']:.2f}% absolute, {r['pct_of_word_level']:.1f}% of the word level "
               f"(word level: {r['word_level']:,} tokens, {r['word_level_pct_shorter']:.2f}% shorter)")
    click.echo(f"merges             {r['merges']:,} ({r['merges_per_batch']:.1f} per batch)")
    if r["batches_short_of_target"]:
        click.echo(f"short of target    {r['batches_short_of_target']:,} batches (merged to exhaustion)")
    tps = r["kernel_tokens_per_s"]
    click.echo(f"time               {r['seconds']:.2f} s total, {r['kernel_seconds']:.3f} s in the kernel"
               + (f" ({tps / 1e6:.2f}M tokens/s)" if tps else ""))
