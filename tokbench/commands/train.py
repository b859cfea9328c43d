"""`tokbench train`: train a byte-level BPE tokenizer (the API is tokbench.bpe.train)."""
from __future__ import annotations

import json
import time
import warnings

import click


@click.command("train")
@click.argument("corpus", nargs=-1)
@click.option("--vocab-size", required=True, type=int, help="Tokens in all: 256 bytes + merges + specials.")
@click.option("--pattern", default="gpt2", show_default=True,
              help="Split pattern: gpt2, llama3, qwen2, o200k, whitespace, none, or a regex.")
@click.option("--special", "specials", multiple=True, help="A special token (repeatable); ids after the merges.")
@click.option("--min-frequency", default=2, show_default=True, type=click.IntRange(min=1), help="Stop when the best pair is rarer.")
@click.option("--max-token-length", default=None, type=click.IntRange(min=1), help="Longest token, in bytes.")
@click.option("--threads", default=0, type=click.IntRange(min=0), help="Counting threads (0: all cores) of --engine inline (and of process with a one-shard input).")
@click.option("--text-field", default=None, help="JSONL field(s) holding the text ('question,answer').")
@click.option("--engine", default="process", show_default=True, type=click.Choice(["inline", "process", "ray"]),
              help="Where the counting runs: inline (this process, --threads), process (a process pool), "
                   "ray (Ray tasks; pip install 'tokbench[ray]'). The counts are the same.")
@click.option("--workers", default=None, type=click.IntRange(min=1, max=4096),
              help="process / ray: tasks at once [all cores; ray: the local cluster's CPUs].")
@click.option("--ray-address", default=None,
              help="ray: auto or HOST:PORT of a running cluster [none: start a local one and shut it down].")
@click.option("--shard-size", default=None, type=click.IntRange(min=1024),
              help="Bytes of input per map task, cut at document boundaries [64 MiB].")
@click.option("--partitions", default=None, type=click.IntRange(min=1, max=65536),
              help="Hash partitions of the count tables (one reduce task each) [16].")
@click.option("--save-counts", type=click.Path(dir_okay=False), help="Also write the pre-token counts here.")
@click.option("--load-counts", multiple=True, type=click.Path(dir_okay=False),
              help="Start from saved counts (repeatable: the tables are summed).")
@click.option("--tiktoken", "tiktoken_file", is_flag=True, help="Also write tokenizer.tiktoken (rank file).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (new or empty; see --overwrite), written all at once.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a folder tokbench wrote earlier.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--mode", default="classic", show_default=True, type=click.Choice(["classic", "super", "compress", "lz"]),
              help="classic BPE; super: supertokens across words from --transition on; compress: "
                   "compression-aware merges (tokbench.bpe.modes); lz: LZ-aware merges, each chosen by the "
                   "compressed size of the token stream of a sample (tokbench.bpe.lz).")
@click.option("--transition", default=None, type=int,
              help="super: vocab size (same units as --vocab-size) where stage 2 (cross-word merges) starts.")
@click.option("--max-words", default=None, type=int, help="super: most words one token may span [4].")
@click.option("--run-pattern", default=None,
              help="super: stage-2 split, super-punct (newlines and punctuation runs bound tokens), "
                   "super-lines (newlines only) or a regex [super-punct].")
@click.option("--strategy", default=None, type=click.Choice(["curriculum", "chunks"]),
              help="super: curriculum (SuperBPE, needs --transition) or chunks (TokenAdapt-style sampled "
                   "chunks of 1..--max-words words) [curriculum].")
@click.option("--candidates", default=None, type=int,
              help="compress / lz: most frequent pairs compared by the objective [16].")
@click.option("--sample-bytes", default=None, type=int,
              help="lz: bytes of CORPUS text (from its start) whose token stream is compressed [1 MiB; 1 KiB..64 MiB].")
@click.option("--every", default=None, type=int,
              help="lz: merges per scoring round, the best-scored candidates (1: exact greedy; k: cheaper proxy) [1].")
@click.option("--lz-compressor", default=None, type=str, help="lz: gzip, zstd or lzma [gzip].")
@click.option("--lz-level", default=None, type=int, help="lz: compressor level [gzip 6, zstd 3, lzma 1].")
def train(corpus, vocab_size, pattern, specials, min_frequency, max_token_length, threads, text_field,
          engine, workers, ray_address, shard_size, partitions, save_counts, load_counts, tiktoken_file, out_dir, overwrite, quiet, mode, transition, max_words, run_pattern,
          strategy, candidates, sample_bytes, every, lz_compressor, lz_level) -> None:
    """Train a byte-level BPE on CORPUS (files, folders, corpus asset names; text or JSONL) and write
    OUT/tokenizer.json (loads in tokenizers and transformers)."""
    from pathlib import Path

    import importlib

    bpe = importlib.import_module("tokbench.bpe.train")  # the module (tokbench.bpe.train is also the function)
    from tokbench.errors import TokbenchError

    if not corpus and not load_counts:
        raise TokbenchError("nothing to train on", fix="pass CORPUS files or --load-counts FILE")
    from tokbench.outputs import check_output

    inputs = [p for p in (*corpus, *load_counts) if Path(p).exists()]
    check_output(out_dir, overwrite, inputs)  # before the counting
    from tokbench.bpe import modes

    bpe.check_vocab_size(vocab_size, specials)
    runs = modes.check_cli(mode, vocab_size, specials, transition=transition, max_words=max_words,
                           run_pattern=run_pattern, candidates=candidates,
                           counts_files=bool(save_counts or load_counts), strategy=strategy,
                           lz={"--sample-bytes": sample_bytes, "--every": every, "--lz-compressor": lz_compressor,
                               "--lz-level": lz_level}, has_corpus=bool(corpus))
    t0 = time.perf_counter()
    counter = bpe.new_counter(pattern, specials)
    for f in load_counts:
        bpe.load_counts(f, counter)
    record = None
    if corpus:
        with warnings.catch_warnings():  # said below, as one line
            warnings.simplefilter("ignore", bpe.NonUtf8Warning)
            stats, record = bpe.count_engine(
                list(corpus), counter, special_tokens=specials, also=[runs] if runs is not None else [],
                text_field=text_field, engine=engine, workers=workers, ray_address=ray_address,
                shard_bytes=shard_size, partitions=partitions, num_threads=threads, progress=not quiet)
        if stats.non_utf8_lines:
            click.echo(f"warning: {stats.non_utf8_lines} non-UTF-8 lines ({stats.non_utf8_bytes} bytes) not "
                       f"counted, in {', '.join(list(stats.non_utf8_files)[:3])}", err=True)
    else:
        stats = bpe.CountStats()
    if len(counter) == 0:
        raise TokbenchError("the corpus is empty (no UTF-8 text to count)", fix="pass files holding text")
    if save_counts:
        bpe.save_counts(counter, save_counts, pattern)
    t1 = time.perf_counter()
    from tokbench.vocab.patterns import resolve_pattern

    common = dict(special_tokens=specials, min_frequency=min_frequency, max_token_length=max_token_length,
                  stats=stats, progress=not quiet)
    with warnings.catch_warnings():  # said once below, for every mode
        warnings.simplefilter("ignore", bpe.ShortVocabWarning)
        if mode == "super":
            trained = modes.train_super_counts(counter, runs, vocab_size, transition, pattern=pattern,
                                               run_pattern=run_pattern or "super-punct",
                                               max_words=modes.DEFAULT_MAX_WORDS if max_words is None else max_words,
                                               strategy=strategy or "curriculum", **common)
        elif mode == "lz":
            from tokbench.bpe import lz

            sample = lz.read_sample(list(corpus), lz.DEFAULT_SAMPLE_BYTES if sample_bytes is None else sample_bytes,
                                    text_field)
            trained = lz.train_lz_counts(counter, sample, vocab_size, pattern=pattern,
                                         candidates=lz.DEFAULT_CANDIDATES if candidates is None else candidates,
                                         every=1 if every is None else every, lz_compressor=lz_compressor or "gzip",
                                         lz_level=lz_level, **common)
        elif mode == "compress":
            trained = modes.train_compress_counts(counter, vocab_size, pattern=pattern,
                                                  candidates=modes.DEFAULT_CANDIDATES if candidates is None
                                                  else candidates, **common)
        else:
            trained = bpe.train_counts(counter, vocab_size, pattern=resolve_pattern(pattern), **common)
    short = bpe.shortfall(trained, vocab_size, min_frequency)
    for line in short:
        click.echo(f"warning: {line}", err=True)
    t2 = time.perf_counter()
    info = {k: v for k, v in trained.meta.items() if k not in ("word_pattern", "run_pattern")}
    summary = {"mode": mode, **info, "vocab_size": trained.vocab_size, "vocab_size_requested": vocab_size,
               "warnings": short, "merges": len(trained.merges),
               "distinct_pretokens": len(counter), "bytes_counted": stats.bytes,
               "non_utf8_lines": stats.non_utf8_lines, "count_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3)}
    if record is not None:
        shards = record["shards"]
        summary["engine"] = {k: v for k, v in record.items() if k not in ("shards", "non_utf8_files")}
        summary["engine"]["shards"] = len(shards)
    report = summary if record is None else {**summary, "shards_counted": record["shards"]}
    written = trained.save_folder(out_dir, overwrite=overwrite, inputs=inputs, tiktoken=tiktoken_file,
                                  report=report)
    click.echo(json.dumps({**summary, "written": [str(p) for p in written]}, indent=1))
