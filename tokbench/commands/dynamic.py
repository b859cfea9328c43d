"""`tokbench dynamic`: dynamic batch merging (BPE inside each batch at run time).

One function per subcommand (merge, curve, fidelity, stats), each a thin shell over tokbench.dynamic."""
from __future__ import annotations

import json

import click

from tokbench.dynamic.merge import MODES


@click.group()
def dynamic():
    """Dynamic batch merging: shorter sequences at run time, embeddings for the merged tokens."""


def _mode_option(f):
    return click.option("--mode", type=click.Choice(MODES), default="word", show_default=True,
                        help="Boundaries no merge may cross (word, word_hyphen, pretokens: the tokenizer's own "
                             "pre-tokenizer, pretokens-unicode: a mark-aware word regex, sentence).")(f)


def _keep_option(f):
    return click.option("--keep", default="none", show_default=True, metavar="POLICY",
                        help="Keep policy: extra cuts so what the model is likely to copy stays in its original "
                             "tokens. last-occurrence (the last occurrence of every word in each sequence stays "
                             "spelled out), last-word (the same for words holding a letter only), last-punct (for "
                             "punctuation runs only), recent:N (the last N tokens of each sequence never merge), "
                             "one last-* and recent:N joined by '+', or none. % budgets stay against the mode's word level without it.")(f)


def _parse_keep(spec):
    """The --keep value as a KeepPolicy; a bad one is a one-line error that names the option."""
    from tokbench.dynamic.keep import parse_keep
    from tokbench.errors import TokbenchError

    try:
        return parse_keep(spec)
    except TokbenchError as exc:
        raise TokbenchError(str(exc), path="--keep") from None


def _budget_options(f):
    f = click.option("--pct-of-word-level", default=None,
                     type=click.FloatRange(0, 100, min_open=True),
                     help="Merge each batch this % of the way to its word level (the paper's unit; 100: exhaustion).")(f)
    f = click.option("--shorter-pct", default=None, type=click.FloatRange(0, 100, min_open=True, max_open=True),
                     help="Merge each batch until it is this % shorter (absolute).")(f)
    f = click.option("--merges", default=None, type=click.IntRange(0, 10_000_000),
                     help="Merges per batch (none of the three budgets: to exhaustion).")(f)
    f = click.option("--max-bytes", default=None, type=click.IntRange(2, 1_000_000),
                     help="At most this many bytes per merged token.")(f)
    f = click.option("--max-constituents", default=None, type=click.IntRange(2, 1_000_000),
                     help="At most this many base tokens per merged token.")(f)
    return f


def _write(out, text: str) -> None:
    from tokbench.outputs import atomic_write

    if out is None or out == "-":
        click.echo(text, nl=not text.endswith("\n"))
    else:
        atomic_write(out, text)
        click.echo(f"wrote {out}", err=True)


def _reduction_line(before, after, word, pct, pct_word) -> str:
    return (f"{before:,} -> {after:,} tokens: {pct:.2f}% shorter absolute, {pct_word:.1f}% of the word level "
            f"(word level {word:,} tokens, {100.0 * (before - word) / before if before else 0.0:.2f}% shorter)")


@dynamic.command("merge")
@click.option("--tokenizer", "-t", required=True, help="Tokenizer asset name or path (tokenizer.json, tiktoken file).")
@click.option("--input", "-i", "input_path", required=True, type=click.Path(dir_okay=False),
              help="The batch: a text file (one sequence per non-blank line) or a .json list of id lists.")
@_mode_option
@_keep_option
@_budget_options
@click.option("--out", "-o", default=None, help="Write the JSON here (default: stdout).")
@click.option("--summary", is_flag=True, help="Print one line of figures instead of the JSON.")
def merge_cmd(tokenizer, input_path, mode, keep, merges, shorter_pct, pct_of_word_level, max_constituents, max_bytes,
              out, summary):
    """Merge one batch: merged sequences, the dynamic-token table (constituents, bytes), merges, length curve."""
    from tokbench.dynamic import DynamicTokenizer, merge_batch
    from tokbench.dynamic.merge import read_batch

    from tokbench.errors import TokbenchError

    keep = _parse_keep(keep)
    texts, ids = read_batch(input_path)
    tok = DynamicTokenizer.load(tokenizer)
    try:
        mb = merge_batch(tok, texts, ids=ids, mode=mode, merges=merges, shorter_pct=shorter_pct,
                         pct_of_word_level=pct_of_word_level, max_constituents=max_constituents,
                         max_bytes=max_bytes, keep=keep)
    except TokbenchError as exc:
        if exc.path is None:  # a fault of the batch: name its file
            raise TokbenchError(str(exc), path=input_path) from None
        raise
    if summary:
        click.echo(f"{len(mb.merged)} sequences, {len(mb.merges)} merges, {len(mb.tokens)} dynamic tokens, "
                   + _reduction_line(mb.tokens_before, mb.tokens_after, mb.word_level, mb.pct_shorter,
                                     mb.pct_of_word_level)
                   + (f"; keep {mb.keep} reaches at most {mb.keep_pct_of_word_level:.1f}% of the word level"
                      if keep.active else ""))
    if out or not summary:
        _write(out, json.dumps(mb.to_dict(), indent=1, ensure_ascii=False))


@dynamic.command("curve")
@click.option("--tokenizer", "-t", required=True, help="Tokenizer asset name or path.")
@click.option("--corpus", "-c", required=True, help="Corpus asset name or path (its non-blank lines are the texts).")
@_mode_option
@_keep_option
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1, 100_000), help="Lines per batch.")
@click.option("--merges", default=None, type=click.IntRange(0, 10_000_000),
              help="Stop each batch after this many merges (default: exhaustion).")
@click.option("--max-constituents", default=None, type=click.IntRange(2, 1_000_000))
@click.option("--max-bytes", default=None, type=click.IntRange(2, 1_000_000))
@click.option("--limit-lines", default=None, type=click.IntRange(1, 10_000_000), help="Read at most this many lines.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", "-o", default=None, help="Write here (default: stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def curve_cmd(tokenizer, corpus, mode, keep, batch, merges, max_constituents, max_bytes, limit_lines, fmt, out, quiet):
    """The merges -> length curve over a corpus, batch by batch. CSV columns: "Number of Merges" and
    "Avg Sequence Length" (tokens per line: the reference repo's sequence_length_to_merges CSV, so the curves
    overlay), then "Total Tokens", "% Shorter" (absolute) and "% of Word Level"."""
    from tokbench.dynamic import corpus_stats
    from tokbench.dynamic.stats import CURVE_COLUMNS, curve_rows, rows_csv

    keep = _parse_keep(keep)
    r = corpus_stats(tokenizer, corpus, mode=mode, batch=batch, merges=merges, max_constituents=max_constituents,
                     max_bytes=max_bytes, limit_lines=limit_lines, progress=not quiet, keep=keep)
    rows = curve_rows(r)
    if fmt == "csv":
        _write(out, rows_csv(rows, CURVE_COLUMNS))
    else:
        summary = {k: v for k, v in r.items() if k != "curve"}
        _write(out, json.dumps({**summary, "columns": list(CURVE_COLUMNS), "curve": rows}, indent=1))


@dynamic.command("fidelity")
@click.option("--model", "-m", default="smollm2-135m", show_default=True, help="Causal LM (asset name or HF folder).")
@click.option("--tokenizer", "-t", default="smollm2", show_default=True, help="The model's tokenizer.")
@click.option("--corpus", "-c", default="wikitext2-test", show_default=True)
@click.option("--windows", default=16, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--prefix", default=128, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Prefix tokens per window (merged).")
@click.option("--continuation", default=64, show_default=True, type=click.IntRange(2, 1_000_000),
              help="Continuation tokens per window (scored with the original head).")
@click.option("--budgets", default="10,50%,exhaustion", show_default=True,
              help="Comma-separated: merges, P% (of the word level) or exhaustion; the unmerged model always runs.")
@click.option("--methods", default="mean,position_mean,omp", show_default=True,
              help="Embeddings for dynamic tokens (comma-separated: mean, position_mean, norm_mean, omp).")
@click.option("--control", is_flag=True, help="Add the `original tokens + new embedding` control per method.")
@_mode_option
@_keep_option
@click.option("--merge-batch", default=None, type=click.IntRange(1, 100_000),
              help="Windows per merge batch (default: all windows in one); budgets apply per batch.")
@click.option("--cache", default=None, type=click.Path(file_okay=False),
              help="Folder keeping the unmerged run's bits per window, reused by later calls.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 1024), help="torch threads.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="json", show_default=True)
@click.option("--out", "-o", default=None, help="Write here (default: stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def fidelity_cmd(model, tokenizer, corpus, windows, prefix, continuation, budgets, methods, control, mode, keep,
                 merge_batch, cache, threads, fmt, out, quiet):
    """Prefill fidelity: bits/byte of a continuation after a merged prefix (through inputs_embeds)."""
    from tokbench.dynamic.fidelity import parse_budgets, prefill_fidelity
    from tokbench.dynamic.stats import rows_csv

    keep = _parse_keep(keep)
    r = prefill_fidelity(model, tokenizer, corpus, n_windows=windows, prefix=prefix, continuation=continuation,
                         budgets=[0] + parse_budgets(budgets), methods=tuple(m for m in methods.split(",") if m),
                         control=control, mode=mode, merge_batch=merge_batch, teacher_cache=cache,
                         threads=threads, progress=not quiet, keep=keep)
    _write(out, rows_csv(r["rows"]) if fmt == "csv" else json.dumps(r, indent=1))


@dynamic.command("stats")
@click.option("--tokenizer", "-t", required=True, help="Tokenizer asset name or path.")
@click.option("--corpus", "-c", required=True, help="Corpus asset name or path (its non-blank lines are the texts).")
@_mode_option
@_keep_option
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1, 100_000), help="Lines per batch.")
@_budget_options
@click.option("--limit-lines", default=None, type=click.IntRange(1, 10_000_000), help="Read at most this many lines.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the merges -> length curve).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def stats(tokenizer, corpus, mode, keep, batch, merges, shorter_pct, pct_of_word_level, max_constituents, max_bytes,
          limit_lines, as_json, quiet):
    """Tokens before / after merging, % shorter (absolute and of the word level), merges, time."""
    from tokbench.dynamic import corpus_stats

    keep = _parse_keep(keep)
    r = corpus_stats(tokenizer, corpus, mode=mode, batch=batch, merges=merges, shorter_pct=shorter_pct,
                     pct_of_word_level=pct_of_word_level, max_constituents=max_constituents, max_bytes=max_bytes,
                     limit_lines=limit_lines, progress=not quiet, keep=keep)
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    click.echo(f"{r['tokenizer']} on {r['corpus']}: {r['lines']:,} lines in {r['batches']:,} batches of {batch}, "
               f"mode {mode}")
    click.echo(f"tokens before      {r['tokens_before']:,}")
    click.echo(f"tokens after       {r['tokens_after']:,}")
    click.echo(f"shorter            {r['pct_shorter']:.2f}% absolute, {r['pct_of_word_level']:.1f}% of the word level "
               f"(word level: {r['word_level']:,} tokens, {r['word_level_pct_shorter']:.2f}% shorter)")
    if keep.active:
        click.echo(f"keep               {r['keep']}: reaches at most {r['keep_pct_of_word_level']:.1f}% of the word level")
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
@click.option("--index", "kind", type=click.Choice(["ivf", "hnsw", "flat", "factored"]), default="ivf", show_default=True,
              help="factored: exact, from the merged rows' coefficients over the head (mean/position_mean rows).")
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
    if "vs_fp16_rows" in ix:
        click.echo(f"factored max |logit diff| {ix['max_abs_logit_diff']:.2g} against the float32 rows; against the "
                   f"fp16-stored rows: @{k} {ix['vs_fp16_rows'][f'recall@{k}']:.3f}, top-1 {ix['vs_fp16_rows']['top1']:.3f}")
    click.echo(f"latency  batch 1 {ix['latency_b1_s'] * 1e3:.2f} ms, batch 32 {ix['latency_b32_s'] * 1e3:.2f} ms"
               + (f"; exact {r['exact']['latency_b1_s'] * 1e3:.2f} / {r['exact']['latency_b32_s'] * 1e3:.2f} ms "
                  f"({r['speedup_b1']:.1f}x at batch 1)" if "exact" in r else ""))
    click.echo(f"build    {ix['build_s']:.1f} s, index {ix['index_bytes'] / 2**20:.0f} MiB, RSS {r['rss_bytes'] / 2**20:.0f} MiB "
               f"(peak {r['peak_rss_bytes'] / 2**20:.0f} MiB)")
