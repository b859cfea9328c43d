"""Training modes beyond classic BPE: supertoken BPE (``super``) and compression-aware BPE (``compress``).

Supertoken BPE (SuperBPE curriculum, stage 2 trained the scalable way)
---------------------------------------------------------------------
Stage 1 is classic BPE on word-level pre-tokens (``pattern``, GPT-2 by default) up to the
transition vocabulary size ``transition``. Stage 2 lifts the whitespace boundary: the corpus is
split by a coarser *run pattern* whose pieces are runs of adjacent words, and merging continues
from the stage-1 vocabulary up to ``vocab_size``. Instead of keeping documents in memory, the
runs are counted like pre-tokens (one table run bytes -> count, filled in the same pass as the
stage-1 counts), so memory is bounded by the distinct runs. Every distinct run starts as its
stage-1 encoding (all stage-1 merges applied by priority over the whole run -- exactly what the
final encoder does), then merges go on by frequency, with two bounds:

- a merged token spans at most ``max_words`` words (maximal runs of non-whitespace bytes);
- no token crosses a run boundary. The built-in run patterns (both isolate whitespace that holds a
  newline or is two or more characters long, like the GPT-2 pattern does):
  ``super-punct`` (default): newlines and runs of punctuation bound runs; a single punctuation
  character between two letters/digits stays inside ("don't", "3.14", "foo_bar");
  ``super-lines``: only newlines (and whitespace runs) bound runs; punctuation joins words.
  Any other regex is taken as given.

The written ``tokenizer.json`` holds the run pattern as its Split pre-tokenizer followed by
``ByteLevel(use_regex=False)``, and the merges of both stages in order, so ``tokenizers``,
``transformers`` and ``tokbench.bpe.BPE`` all apply the merges by priority over whole runs.
Encoding long runs is near-linear (the encoder's bucket queue, ``rust_ext/src/bpe/model.rs``).

TokenAdapt-style supertokens (``strategy="chunks"``, lower-priority alternative): no curriculum.
Every distinct run is cut into chunks of k consecutive word-level pre-tokens, k drawn uniformly
from 1..max_words (a run seen c times is chunked min(c, 8) times with the count shared out; the
generator is seeded from the run's bytes and ``seed``, so training is deterministic), the chunks
are counted as pre-tokens and classic BPE trains on them from the bytes up. The boundaries the
tokenizer learns to cross are thus the ones the sampled chunks cross; the output is written and
encoded like the curriculum's (run pattern + all merges by priority). ``transition`` is unused.

Compression-aware BPE
---------------------
Objective: the empirical unigram code length of the training token stream,
``L = N * H = N log2 N - sum_x n_x log2 n_x`` (bits), where the stream is every pre-token
occurrence segmented by the current merges, ``N`` its length and ``n_x`` the occurrences of
token x. It is the size of the stream under an ideal order-0 entropy coder (the vocabulary's own
cost is not counted). Shortlist: the ``candidates`` most frequent allowed pairs, in the classic
order (count, then smallest bytes), each at least ``min_frequency``. Each step merges the
shortlisted pair whose merge gives the smallest L; the change is exact from counts:
``N -> N - m``, ``n_a, n_b -> n_a - m, n_b - m`` (``n_a - 2m`` for a pair (a, a)), ``n_ab -> n_ab + m``,
with m the occurrences a left-to-right merge replaces (the pair count, or for (a, a) the sum of
k // 2 over runs of k copies). Ties (within 1e-6 bits) go to the more frequent pair. With
``candidates=1`` this is classic BPE. The objective is a cheap proxy of a real compressor's
output size (gzip/zstd/lzma see context beyond one token), chosen because it is exact and O(1)
per candidate.

LZ-aware BPE (``lz``) scores the shortlist by a real compressor's output size instead; it lives in
tokbench.bpe.lz (its options are validated here, by check_cli).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from tokbench import _core
from tokbench.bpe.train import (CountStats, Trained, count_inputs, new_counter, run_cancellable,
                                train_counts)
from tokbench.errors import TokbenchError
from tokbench.vocab.patterns import resolve_pattern

_W = r"[\p{L}\p{N}]"
_P = r"[^\s\p{L}\p{N}]"
_WS_TAIL = r"|\s+(?!\S)|\s+"
RUN_PATTERNS: dict[str, str] = {
    "super-punct": rf"(?: ?{_W}+(?:{_P}{_W}+)*)+| ?{_P}+" + _WS_TAIL,
    "super-lines": r"(?: ?\S+)+" + _WS_TAIL,
}
MODES = ("classic", "super", "compress", "lz")  # lz: tokbench.bpe.lz
DEFAULT_MAX_WORDS = 4
DEFAULT_CANDIDATES = 16


def resolve_run_pattern(name_or_regex: str) -> str:
    if name_or_regex in RUN_PATTERNS:
        return RUN_PATTERNS[name_or_regex]
    if name_or_regex.isidentifier() or name_or_regex.replace("-", "_").isidentifier():
        raise TokbenchError(f"unknown run pattern name {name_or_regex!r} (--run-pattern)",
                            fix=f"use one of {', '.join(RUN_PATTERNS)} or a regex")
    return name_or_regex


STRATEGIES = ("curriculum", "chunks")


def check_super(vocab_size: int, transition: int | None, max_words: int, n_specials: int = 0,
                strategy: str = "curriculum") -> None:
    """One-line TokbenchErrors for bad supertoken settings (named after the CLI options)."""
    if strategy not in STRATEGIES:
        raise TokbenchError(f"unknown --strategy {strategy!r}", fix=f"use one of {', '.join(STRATEGIES)}")
    if max_words < 1:
        raise TokbenchError(f"--max-words {max_words} must be at least 1",
                            fix="pass --max-words 1 or more (SuperBPE uses 4)")
    if strategy == "chunks":
        if transition is not None:
            raise TokbenchError("--transition applies to --strategy curriculum only",
                                fix="drop --transition with --strategy chunks")
        return
    if transition is None:
        raise TokbenchError("--mode super needs --transition (the vocab size where stage 2 starts)",
                            fix=f"pass --transition T with {257 + n_specials} <= T < --vocab-size, "
                                f"e.g. {max(257 + n_specials, vocab_size * 3 // 4)}")
    if transition >= vocab_size:
        raise TokbenchError(f"--transition {transition} is not below --vocab-size {vocab_size}",
                            fix=f"pass --transition below {vocab_size}, e.g. {vocab_size * 3 // 4}")
    if transition - n_specials <= 256:
        raise TokbenchError(f"--transition {transition} leaves no stage-1 merges (256 bytes + "
                            f"{n_specials} specials)", fix=f"pass --transition >= {257 + n_specials}")


def check_compress(candidates: int) -> None:
    if candidates < 1:
        raise TokbenchError(f"--candidates {candidates} must be at least 1",
                            fix="pass --candidates 1 or more (1 = classic BPE)")


def check_cli(mode: str, vocab_size: int, specials: Sequence[str], *, transition: int | None,
              max_words: int | None, run_pattern: str | None, candidates: int | None,
              counts_files: bool, strategy: str | None = None, lz: dict | None = None,
              has_corpus: bool = True) -> "_core.BpeCounter | None":
    """Validate the mode options of `tokbench train` before any work; the run counter for super.
    lz: the --mode lz options by CLI name (None values: not given)."""
    lz = lz or {}
    if mode != "lz":
        for name, val in lz.items():
            if val is not None:
                raise TokbenchError(f"{name} applies to --mode lz only", fix=f"add --mode lz or drop {name}")
    else:
        from tokbench.bpe import lz as lzm

        if not has_corpus:
            raise TokbenchError("--mode lz scores merges on CORPUS text (its first --sample-bytes), and "
                                "--load-counts alone has none", fix="pass CORPUS files too")
        def given(name, default):
            return default if lz.get(name) is None else lz[name]

        lzm.check_lz(given("--candidates", lzm.DEFAULT_CANDIDATES) if candidates is None else candidates,
                     given("--sample-bytes", lzm.DEFAULT_SAMPLE_BYTES), given("--every", 1),
                     given("--lz-compressor", "gzip"), lz.get("--lz-level"))
    if mode != "super":
        for name, val in (("--transition", transition), ("--max-words", max_words), ("--run-pattern", run_pattern),
                          ("--strategy", strategy)):
            if val is not None:
                raise TokbenchError(f"{name} applies to --mode super only", fix=f"add --mode super or drop {name}")
    if mode not in ("compress", "lz") and candidates is not None:
        raise TokbenchError("--candidates applies to --mode compress and --mode lz only",
                            fix="add --mode compress (or lz) or drop --candidates")
    if mode == "compress":
        check_compress(DEFAULT_CANDIDATES if candidates is None else candidates)
    if mode != "super":
        return None
    check_super(vocab_size, transition, DEFAULT_MAX_WORDS if max_words is None else max_words,
                len(set(specials)), strategy or "curriculum")
    if counts_files:
        raise TokbenchError("--save-counts / --load-counts hold word counts only, not the run counts of "
                            "--mode super", fix="train --mode super from CORPUS files")
    return new_run_counter(run_pattern or "super-punct", specials)


def new_run_counter(run_pattern: str = "super-punct", special_tokens: Sequence[str] = ()) -> "_core.BpeCounter":
    regex = resolve_run_pattern(run_pattern)
    try:
        return _core.BpeCounter(regex, specials=list(special_tokens))
    except ValueError as exc:
        raise TokbenchError(f"bad run pattern ({exc}) (--run-pattern)",
                            fix="pass super-punct, super-lines or a valid regex") from None


def train_super_counts(words: "_core.BpeCounter", runs: "_core.BpeCounter", vocab_size: int,
                       transition: int | None, *, pattern: str | None = "gpt2", run_pattern: str = "super-punct",
                       max_words: int = DEFAULT_MAX_WORDS, special_tokens: Sequence[str] = (),
                       min_frequency: int = 2, max_token_length: int | None = None,
                       stats: CountStats | None = None, progress: bool = True, strategy: str = "curriculum",
                       seed: int = 0) -> Trained:
    """Both stages on filled counters: `words` (stage-1 pre-tokens) and `runs` (run pattern).
    strategy="chunks": TokenAdapt-style chunks of the runs instead (words and transition unused)."""
    specials = list(dict.fromkeys(special_tokens))
    check_super(vocab_size, transition, max_words, len(specials), strategy)
    if len(words) == 0 or len(runs) == 0:
        raise TokbenchError("the corpus is empty (no text to count)", fix="pass files holding text")
    if strategy == "chunks":
        chunks = _core.bpe_chunk_runs(runs, resolve_pattern(pattern), max_words, seed)
        trained = train_counts(chunks, vocab_size, pattern=resolve_run_pattern(run_pattern),
                               special_tokens=specials, min_frequency=min_frequency,
                               max_token_length=max_token_length, stats=stats, progress=progress)
        trained.meta = {"mode": "super", "strategy": "chunks", "max_words": max_words, "seed": seed,
                        "word_pattern": resolve_pattern(pattern), "run_pattern": resolve_run_pattern(run_pattern),
                        "distinct_runs": len(runs), "distinct_chunks": len(chunks)}
        return trained
    stage1 = train_counts(words, transition, pattern=resolve_pattern(pattern), special_tokens=specials,
                          min_frequency=min_frequency, max_token_length=max_token_length, stats=stats,
                          progress=progress)
    target = vocab_size - len(specials)
    n1 = len(stage1.tokens)
    vocab, merges2 = run_cancellable(
        lambda prog: _core.bpe_train_super(runs, stage1.tokens, stage1.merges, target, max_words,
                                           max(1, min_frequency), max_token_length, prog),
        target - n1, "merging (stage 2)", progress)
    tokens = list(vocab)
    return Trained(tokens=tokens, merges=stage1.merges + [(a, b) for a, b, _, _ in merges2],
                   merge_counts=stage1.merge_counts + [c for *_, c in merges2],
                   special_tokens={s: len(tokens) + i for i, s in enumerate(specials)},
                   pattern=resolve_run_pattern(run_pattern), stats=stats or CountStats(),
                   meta={"mode": "super", "strategy": "curriculum", "transition": transition, "stage1_tokens": n1,
                         "stage1_merges": len(stage1.merges), "stage2_merges": len(merges2),
                         "max_words": max_words, "word_pattern": resolve_pattern(pattern),
                         "run_pattern": resolve_run_pattern(run_pattern), "distinct_runs": len(runs)})


def train_super(inputs: str | os.PathLike | Sequence[str | os.PathLike], vocab_size: int,
                transition: int | None = None, *, pattern: str | None = "gpt2", run_pattern: str = "super-punct",
                max_words: int = DEFAULT_MAX_WORDS, special_tokens: Sequence[str] = (),
                min_frequency: int = 2, max_token_length: int | None = None, num_threads: int = 0,
                text_field: str | Sequence[str] | None = None, progress: bool = True,
                strategy: str = "curriculum", seed: int = 0) -> Trained:
    """Supertoken BPE of vocab_size tokens (specials included), stage 2 from `transition` (same units);
    strategy="chunks": TokenAdapt-style sampled chunks instead of the curriculum."""
    check_super(vocab_size, transition, max_words, len(set(special_tokens)), strategy)
    words = new_counter(pattern, special_tokens)
    runs = new_run_counter(run_pattern, special_tokens)
    stats = count_inputs(inputs, words, also=[runs], text_field=text_field, num_threads=num_threads,
                         progress=progress)
    return train_super_counts(words, runs, vocab_size, transition, pattern=pattern, run_pattern=run_pattern,
                              max_words=max_words, special_tokens=special_tokens,
                              min_frequency=min_frequency, max_token_length=max_token_length, stats=stats,
                              progress=progress, strategy=strategy, seed=seed)


def train_compress_counts(counter: "_core.BpeCounter", vocab_size: int, *, pattern: str | None = "gpt2",
                          candidates: int = DEFAULT_CANDIDATES, special_tokens: Sequence[str] = (),
                          min_frequency: int = 2, max_token_length: int | None = None,
                          stats: CountStats | None = None, progress: bool = True) -> Trained:
    check_compress(candidates)
    trained = train_counts(counter, vocab_size, pattern=resolve_pattern(pattern), special_tokens=special_tokens,
                           min_frequency=min_frequency, max_token_length=max_token_length, stats=stats,
                           progress=progress, candidates=candidates)
    trained.meta = {"mode": "compress", "candidates": candidates,
                    "objective": "unigram code length N*H of the training token stream"}
    return trained


def train_compress(inputs: str | os.PathLike | Sequence[str | os.PathLike], vocab_size: int, *,
                   pattern: str | None = "gpt2", candidates: int = DEFAULT_CANDIDATES,
                   special_tokens: Sequence[str] = (), min_frequency: int = 2,
                   max_token_length: int | None = None, num_threads: int = 0,
                   text_field: str | Sequence[str] | None = None, progress: bool = True) -> Trained:
    """Compression-aware BPE (objective and shortlist in the module docstring)."""
    check_compress(candidates)
    counter = new_counter(pattern, special_tokens)
    stats = count_inputs(inputs, counter, text_field=text_field, num_threads=num_threads, progress=progress)
    return train_compress_counts(counter, vocab_size, pattern=pattern, candidates=candidates,
                                 special_tokens=special_tokens, min_frequency=min_frequency,
                                 max_token_length=max_token_length, stats=stats, progress=progress)


__all__ = ["MODES", "RUN_PATTERNS", "STRATEGIES", "check_cli", "check_compress", "check_super", "new_run_counter", "resolve_run_pattern",
           "train_compress", "train_compress_counts", "train_super", "train_super_counts"]
