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


@dynamic.command("ann")
@click.option("--model", "-m", default="smollm2-135m", show_default=True, help="Causal LM asset name or folder.")
@click.option("--rows", "n_rows", default=1_000_000, show_default=True, type=click.IntRange(1, 20_000_000),
              help="Output rows: the model's head plus merged-token rows up to this many.")
@click.option("--index", "kind", type=click.Choice(["ivf", "hnsw", "flat"]), default="ivf", show_default=True)
@click.option("--storage", type=click.Choice(["fp16", "fp32", "sq8"]), default="fp16", show_default=True)
@click.option("--queries", default=256, show_default=True, type=click.IntRange(1, 100_000),
              help="Real final hidden states (WikiText-2 test positions).")
@click.option("--k", default=20, show_default=True, type=click.IntRange(1, 1024), help="Candidates per step.")
@click.option("--nlist", default=None, type=click.IntRange(1, 1_000_000), help="IVF cells (default 4 sqrt(rows)).")
@click.option("--nprobe", default=64, show_default=True, type=click.IntRange(1, 1_000_000), help="IVF cells searched.")
@click.option("--hnsw-m", default=32, show_default=True, type=click.IntRange(2, 256), help="HNSW links per node.")
@click.option("--ef-construction", default=64, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--ef-search", default=256, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--rerank", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Candidates fetched from the index and rescored exactly.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(0, 4096), help="BLAS / faiss threads.")
@click.option("--repeats", default=30, show_default=True, type=click.IntRange(1, 100_000),
              help="Timed searches at batch 1 (a quarter of them at batch 32).")
@click.option("--no-baseline", is_flag=True, help="Skip timing the exact fp32 matmul (saves a second copy in memory).")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the results here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def ann(model, n_rows, kind, storage, queries, k, nlist, nprobe, hnsw_m, ef_construction, ef_search, rerank, threads,
        repeats, no_baseline, json_out, quiet):
    """Build an ANN index over a huge output vocabulary and measure it against the exact matmul (with bias)."""
    from tokbench.dynamic.ann_data import run_ann
    from tokbench.outputs import atomic_write

    r = run_ann(model, n_rows, kind=kind, storage=storage, queries=queries, k=k, threads=threads, rerank=rerank,
                nlist=nlist, nprobe=nprobe, m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
                baseline=not no_baseline, repeats=repeats, progress=not quiet)
    if json_out:
        atomic_write(json_out, json.dumps(r, indent=1))
    ix = r["index"]
    click.echo(f"{r['rows']:,} rows x {r['dim']} ({r['n_base']:,} head, {r['n_dynamic']:,} dynamic, "
               f"{r['n_ngram']:,} n-gram; fp16), {r['queries']} queries, k={k}, {threads} threads")
    click.echo(f"index    {ix['params']}")
    click.echo(f"recall   @1 {ix['recall@1']:.3f}  @{k} {ix[f'recall@{k}']:.3f}  top-1 agreement {ix['top1']:.3f}  "
               f"mass outside {ix['mass_outside_mean']:.3f}")
    if "cosine" in r:
        click.echo(f"cosine   @{k} {r['cosine'][f'recall@{k}']:.3f}  top-1 agreement {r['cosine']['top1']:.3f} (exact cosine search)")
    click.echo(f"latency  batch 1 {ix['latency_b1_s'] * 1e3:.2f} ms, batch 32 {ix['latency_b32_s'] * 1e3:.2f} ms"
               + (f"; exact {r['exact']['latency_b1_s'] * 1e3:.2f} / {r['exact']['latency_b32_s'] * 1e3:.2f} ms "
                  f"({r['speedup_b1']:.1f}x at batch 1)" if "exact" in r else ""))
    click.echo(f"build    {ix['build_s']:.1f} s, index {ix['index_bytes'] / 2**20:.0f} MiB, RSS {r['rss_bytes'] / 2**20:.0f} MiB "
               f"(peak {r['peak_rss_bytes'] / 2**20:.0f} MiB)")
