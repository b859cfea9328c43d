"""LZ-aware BPE (``--mode lz``): each merge chosen by the compressed size of the token stream.

The seed paper's compression-aware variant (Erdogan et al., arXiv 2601.09039, as summarised by third
parties: "each merge is chosen greedily to minimise the gzip-compressed length of the token
stream"; its body was not read, so the details below are tokbench's own choices):

- Pair statistics are classic BPE's: every distinct pre-token of the whole training corpus with its
  count; the pairs are counted and updated incrementally exactly as the Rust trainer does
  (``rust_ext/src/bpe/train.rs``), with the same tie-break (count, then smallest left bytes, then
  smallest right bytes), ``min_frequency`` and ``max_token_length``.
- The scored stream: the first ``sample_bytes`` bytes of the training text (inputs in order, the
  last text cut at a character), split by the same pattern (special tokens removed), each
  pre-token segmented by the merges so far. It is serialised as fixed-width little-endian token
  ids, ``id_width(vocab_size)`` bytes each (the fewest whole bytes holding vocab_size - 1: 2 bytes
  for 257..65536 tokens), the serialisation tokbench.metrics uses to measure compressed size.
- Each round takes the ``candidates`` most frequent allowed pairs (the classic order) and, for each,
  compresses the stream as it would be after that merge alone: gzip = zlib's deflate at level 6
  (``zlib.compress(data, 6)``; the gzip container adds a constant 12 bytes), zstd = level 3
  (needs ``zstandard``), lzma = preset 1; ``lz_level`` sets another level (gzip 1..9: level 1 is
  ~7x faster than 6 on token streams and a cheaper proxy of it). The smallest size wins; equal sizes go to the more
  frequent pair. ``candidates=1`` is classic BPE (same merges as ``tokbench.bpe.train``).
- ``every=1`` is the exact greedy rule (one compression per candidate per merge). ``every=k > 1`` is
  the cheap proxy: one scoring round merges the k best-scored candidates (each scored alone against
  the same stream), in order of size, skipping one whose pair count has fallen below
  ``min_frequency`` after the earlier merges of the round; cost per merge ~ candidates / k
  compressions of the sample.

Cost: a compression of the serialised sample (~2 bytes per token) per candidate per round; 1 MiB
of English is ~0.25 M tokens at 8k, so at gzip's ~30-60 MB/s a round of 16 candidates takes about
0.3-1 s on one core. `Trained.meta` records the seconds per merge, the rounds and the compressed
size of the sample before and after.
"""
from __future__ import annotations

import heapq
import lzma
import math
import os
import re
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence

from tokbench import _core, limits
from tokbench.bpe.train import CountStats, ShortVocabWarning, Trained, check_vocab_size, count_inputs, iter_texts, \
    new_counter, shortfall, _resolve
from tokbench.errors import TokbenchError
from tokbench.vocab.patterns import resolve_pattern

COMPRESSORS = ("gzip", "zstd", "lzma")
DEFAULT_CANDIDATES = 16
DEFAULT_SAMPLE_BYTES = 1 << 20
MAX_SAMPLE_BYTES = 64 << 20
MIN_SAMPLE_BYTES = 1 << 10
MAX_CANDIDATES = 1024
LEVELS = {"gzip": 6, "zstd": 3, "lzma": 1}  # defaults (tokbench.metrics measures with these)
LEVEL_RANGE = {"gzip": (1, 9), "zstd": (1, 19), "lzma": (0, 9)}


def id_width(k: int) -> int:
    """Bytes per id: the fewest whole bytes holding k - 1 (as tokbench.metrics serialises)."""
    return max(1, math.ceil(max(1, (k - 1).bit_length()) / 8))


def compressor(name: str, level: int | None = None):
    """bytes -> compressed size, for one of COMPRESSORS at `level` (None: LEVELS[name])."""
    level = LEVELS.get(name) if level is None else level
    if name == "gzip":
        return lambda data: len(zlib.compress(data, level))
    if name == "lzma":
        return lambda data: len(lzma.compress(data, preset=level))
    if name == "zstd":
        try:
            import zstandard
        except ImportError:
            raise TokbenchError("--lz-compressor zstd needs the zstandard package",
                                fix="pip install zstandard, or use gzip or lzma") from None
        z = zstandard.ZstdCompressor(level=level)
        return lambda data: len(z.compress(data))
    raise TokbenchError(f"unknown --lz-compressor {name!r}", fix=f"use one of {', '.join(COMPRESSORS)}")


def check_lz(candidates: int, sample_bytes: int, every: int, compressor_name: str,
             level: int | None = None) -> int:
    """One-line TokbenchErrors (named after the CLI options) for bad LZ-aware settings; the level."""
    limits.at_least("--candidates", candidates, 1, MAX_CANDIDATES, what="1 = classic BPE")
    limits.at_least("--sample-bytes", sample_bytes, MIN_SAMPLE_BYTES, MAX_SAMPLE_BYTES,
                    what="bytes of training text in the scored stream")
    limits.at_least("--every", every, 1, MAX_CANDIDATES, what="merges per scoring round; 1 = exact")
    if every > candidates:
        raise TokbenchError(f"--every {every} is above --candidates {candidates} (a round merges at most "
                            "the candidates it scored)", fix=f"pass --every {candidates} or less")
    if compressor_name not in COMPRESSORS:
        raise TokbenchError(f"unknown --lz-compressor {compressor_name!r}", fix=f"use one of {', '.join(COMPRESSORS)}")
    if level is None:
        return LEVELS[compressor_name]
    return limits.at_least("--lz-level", level, *LEVEL_RANGE[compressor_name], what=compressor_name)


def take_sample(texts: Iterable[str], sample_bytes: int) -> str:
    """The first sample_bytes bytes (UTF-8) of the texts in order, the last one cut at a character."""
    out, left = [], sample_bytes
    for t in texts:
        b = t.encode("utf-8")
        if len(b) >= left:
            out.append(b[:left].decode("utf-8", errors="ignore"))
            break
        out.append(t)
        left -= len(b)
    return "".join(out)


def split_sample(text: str, pattern: str | None, special_tokens: Sequence[str] = ()) -> list[bytes]:
    """The pre-tokens of text (the pattern's split as the encoder does it; special tokens removed)."""
    enc = _core.BpeEncoder([(bytes([i]), i) for i in range(256)], [], ignore_merges=False,
                           pattern=resolve_pattern(pattern), keep_unmatched=True)
    specials = sorted(set(special_tokens), key=len, reverse=True)
    parts = re.split("|".join(map(re.escape, specials)), text) if specials else [text]
    return [p.encode("utf-8") for part in parts if part for p in enc.split(part)]


def merge_word(w: list[int], a: int, b: int, new: int) -> list[int]:
    """w with every (a, b) replaced by `new`, left to right."""
    out, r, n = [], 0, len(w)
    while r < n:
        if r + 1 < n and w[r] == a and w[r + 1] == b:
            out.append(new)
            r += 2
        else:
            out.append(w[r])
            r += 1
    return out


class _State:
    """Classic BPE's incremental pair statistics over the distinct pre-tokens (the Rust loop's rules)."""

    def __init__(self, items: Iterable[tuple[bytes, int]], sample_words: Sequence[bytes], max_token_length):
        self.tokens: list[bytes] = [bytes([i]) for i in range(256)]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        word_id: dict[bytes, int] = {}
        self.segs: list[list[int]] = []
        self.counts: list[int] = []
        for b, c in sorted(items):
            if c > 0:
                word_id[b] = len(self.segs)
                self.segs.append(list(b))
                self.counts.append(c)
        self.stream = []
        self.extra: list[int] = []  # count-0 words (no pair statistics; merged directly)
        for b in sample_words:  # sample pre-tokens the counts lack (a cut last word): count 0
            wi = word_id.get(b)
            if wi is None:
                wi = word_id[b] = len(self.segs)
                self.segs.append(list(b))
                self.counts.append(0)
                self.extra.append(wi)
            self.stream.append(wi)
        self.in_sample = bytearray(len(self.segs))
        for wi in self.stream:
            self.in_sample[wi] = 1
        self.max_len = max_token_length or 1 << 62
        self.pairs: dict[tuple[int, int], int] = {}
        self.where: dict[tuple[int, int], list[int]] = {}
        for wi, (w, c) in enumerate(zip(self.segs, self.counts)):
            if c == 0:
                continue
            for p in zip(w, w[1:]):
                self.pairs[p] = self.pairs.get(p, 0) + c
                lst = self.where.setdefault(p, [])
                if not lst or lst[-1] != wi:
                    lst.append(wi)
        self.heap = [self._entry(p, c) for p, c in self.pairs.items() if self._allowed(p)]
        heapq.heapify(self.heap)

    def _allowed(self, p) -> bool:
        return len(self.tokens[p[0]]) + len(self.tokens[p[1]]) <= self.max_len

    def _entry(self, p, c):
        return (-c, self.tokens[p[0]], self.tokens[p[1]], p)

    def shortlist(self, n: int, min_frequency: int) -> list[tuple[int, int]]:
        """The n most frequent valid pairs in the classic order (popped; give back with restore)."""
        out, seen = [], set()
        while len(out) < n and self.heap:
            top = self.heap[0]
            c = self.pairs.get(top[3])
            if c is None or c > -top[0] or top[3] in seen:
                heapq.heappop(self.heap)  # merged, gone, superseded by a newer entry, or a duplicate
                continue
            if c < -top[0]:
                heapq.heapreplace(self.heap, self._entry(top[3], c))
                continue
            if c < min_frequency:
                break
            heapq.heappop(self.heap)
            out.append(top[3])
            seen.add(top[3])
        return out

    def restore(self, pairs: Iterable[tuple[int, int]]) -> None:
        for p in pairs:
            c = self.pairs.get(p)
            if c is not None:
                heapq.heappush(self.heap, self._entry(p, c))

    def new_id(self, p) -> tuple[int, bool]:
        b = self.tokens[p[0]] + self.tokens[p[1]]
        i = self.index.get(b)
        return (len(self.tokens), True) if i is None else (i, False)

    def words_with(self, p) -> list[int]:
        return sorted(set(self.where.get(p, ())).union(self.extra))

    def merge(self, p) -> tuple[int, int]:
        """Apply merge p everywhere; returns (new id, pair count merged)."""
        a, b = p
        new, fresh = self.new_id(p)
        if fresh:
            self.tokens.append(self.tokens[a] + self.tokens[b])
            self.index[self.tokens[-1]] = new
        count = self.pairs[p]
        delta: dict[tuple[int, int], int] = {}
        changed = []
        for wi in sorted(set(self.where.pop(p, ())).union(self.extra)):
            w, c = self.segs[wi], self.counts[wi]
            out, r, n, hit = [], 0, len(w), False
            while r < n:
                if r + 1 < n and w[r] == a and w[r + 1] == b:
                    hit = True
                    delta[p] = delta.get(p, 0) - c
                    if out:
                        prev = out[-1]
                        delta[(prev, a)] = delta.get((prev, a), 0) - c
                        delta[(prev, new)] = delta.get((prev, new), 0) + c
                    if r + 2 < n:
                        nxt = w[r + 2]
                        delta[(b, nxt)] = delta.get((b, nxt), 0) - c
                        delta[(new, nxt)] = delta.get((new, nxt), 0) + c
                    out.append(new)
                    r += 2
                else:
                    out.append(w[r])
                    r += 1
            if not hit:
                continue
            self.segs[wi] = out
            changed.append(wi)
            if c:  # count-0 words add nothing to the pair statistics
                for q in zip(out, out[1:]):
                    if new in q:
                        lst = self.where.setdefault(q, [])
                        if not lst or lst[-1] != wi:
                            lst.append(wi)
        for q, d in delta.items():
            if d == 0:
                continue
            nc = self.pairs.get(q, 0) + d
            if nc == 0:
                self.pairs.pop(q, None)
                self.where.pop(q, None)
            else:
                self.pairs[q] = nc
                if d > 0 and self._allowed(q):
                    heapq.heappush(self.heap, self._entry(q, nc))
        self.changed = changed
        return new, count


def _pack(width: int):
    if width == 1:
        return bytes
    if width == 2:
        import array
        import sys

        def pack2(w):
            arr = array.array("H", w)
            if sys.byteorder == "big":
                arr.byteswap()
            return arr.tobytes()
        return pack2
    return lambda w: b"".join(x.to_bytes(width, "little") for x in w)


class _Scorer:
    """Compressed size of the serialised sample stream, after one candidate merge."""

    def __init__(self, state: _State, width: int, size):
        self.st, self.pack, self.size = state, _pack(width), size
        self.blobs: list[bytes | None] = [None] * len(state.segs)
        for wi in set(state.stream):
            self.blobs[wi] = self.pack(state.segs[wi])
        self.get = self.blobs.__getitem__

    def current(self) -> int:
        return self.size(b"".join(map(self.get, self.st.stream)))

    def after(self, p) -> int:
        st = self.st
        new, _ = st.new_id(p)
        hit = [wi for wi in st.words_with(p) if st.in_sample[wi]]
        old = [self.blobs[wi] for wi in hit]
        for wi in hit:
            self.blobs[wi] = self.pack(merge_word(st.segs[wi], p[0], p[1], new))
        n = self.current()
        for wi, o in zip(hit, old):
            self.blobs[wi] = o
        return n

    def update(self) -> None:
        for wi in self.st.changed:
            if self.st.in_sample[wi]:
                self.blobs[wi] = self.pack(self.st.segs[wi])


def train_lz_counts(counter: "_core.BpeCounter", sample: str, vocab_size: int, *, pattern: str | None = "gpt2",
                    candidates: int = DEFAULT_CANDIDATES, every: int = 1, lz_compressor: str = "gzip",
                    lz_level: int | None = None, special_tokens: Sequence[str] = (), min_frequency: int = 2,
                    max_token_length: int | None = None, stats: CountStats | None = None,
                    progress: bool = True) -> Trained:
    """LZ-aware merges (module docstring) from a filled counter; `sample` is the scored training text
    (cut to the sample size by the caller, e.g. with take_sample)."""
    from tqdm.auto import tqdm

    level = check_lz(candidates, max(MIN_SAMPLE_BYTES, len(sample.encode("utf-8"))), every, lz_compressor,
                     lz_level)
    size = compressor(lz_compressor, level)
    specials = list(dict.fromkeys(special_tokens))
    target = check_vocab_size(vocab_size, specials)
    limits.at_least("min_frequency", min_frequency, 1)
    limits.optional("max_token_length", max_token_length, 1, what="bytes")
    if len(counter) == 0:
        raise TokbenchError("the corpus is empty (no text to count)", fix="pass files holding text")
    words = split_sample(sample, pattern, specials)
    if not words:
        raise TokbenchError("the LZ sample is empty (no text in the first --sample-bytes)",
                            fix="pass files holding text")
    t0 = time.perf_counter()
    st = _State(counter.items(), words, max_token_length)
    width = id_width(vocab_size)
    scorer = _Scorer(st, width, size)
    size0 = scorer.current()
    merges, merge_counts, rounds = [], [], 0
    t_score = 0.0
    with tqdm(total=target - 256, desc="merging (lz)", unit="merge", disable=not progress, leave=False) as bar:
        while len(st.tokens) < target:
            short = st.shortlist(candidates, min_frequency)
            if not short:
                break
            rounds += 1
            if len(short) > 1:
                t1 = time.perf_counter()
                sizes = [scorer.after(p) for p in short]
                t_score += time.perf_counter() - t1
                order = sorted(range(len(short)), key=lambda i: (sizes[i], i))
            else:
                order = [0]
            take = [short[i] for i in order[:every]]
            done = set()
            for p in take:
                if len(st.tokens) >= target or st.pairs.get(p, 0) < min_frequency:
                    continue
                _new, count = st.merge(p)
                scorer.update()
                merges.append(p)
                merge_counts.append(count)
                done.add(p)
                bar.update(1)
            st.restore(q for q in short if q not in done)
    t_all = time.perf_counter() - t0
    tokens = st.tokens
    trained = Trained(tokens=tokens, merges=merges, merge_counts=merge_counts,
                      special_tokens={s: len(tokens) + i for i, s in enumerate(specials)},
                      pattern=resolve_pattern(pattern), stats=stats or CountStats())
    trained.meta = {"mode": "lz", "candidates": candidates, "every": every, "lz_compressor": lz_compressor,
                    "lz_level": level, "id_bytes": width,
                    "sample_bytes": len(sample.encode("utf-8")), "sample_tokens": len(st.stream),
                    "sample_compressed_start": size0, "sample_compressed_end": scorer.current(),
                    "rounds": rounds, "merge_s": round(t_all, 3), "score_s": round(t_score, 3),
                    "s_per_merge": round(t_all / max(1, len(merges)), 5),
                    "objective": f"{lz_compressor} size of the serialised sample token stream"}
    for line in shortfall(trained, vocab_size, min_frequency, flag="vocab_size"):
        warnings.warn(line, ShortVocabWarning, stacklevel=2)
    return trained


def read_sample(inputs: str | os.PathLike | Sequence[str | os.PathLike], sample_bytes: int,
                text_field=None) -> str:
    """take_sample over the texts of files / folders / corpus names (tokbench.bpe.train.iter_texts)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return take_sample(iter_texts([_resolve(i) for i in inputs], text_field, CountStats()), sample_bytes)


def train_lz(inputs: str | os.PathLike | Sequence[str | os.PathLike], vocab_size: int, *,
             pattern: str | None = "gpt2", candidates: int = DEFAULT_CANDIDATES,
             sample_bytes: int = DEFAULT_SAMPLE_BYTES, every: int = 1, lz_compressor: str = "gzip",
             lz_level: int | None = None, special_tokens: Sequence[str] = (), min_frequency: int = 2, max_token_length: int | None = None,
             num_threads: int = 0, text_field: str | Sequence[str] | None = None,
             progress: bool = True) -> Trained:
    """LZ-aware BPE of vocab_size tokens (specials included) on files / folders / corpus names: pair
    counts from all of them, merges scored on their first sample_bytes (module docstring)."""
    check_lz(candidates, sample_bytes, every, lz_compressor, lz_level)
    check_vocab_size(vocab_size, special_tokens)
    counter = new_counter(pattern, special_tokens)
    stats = count_inputs(inputs, counter, text_field=text_field, num_threads=num_threads, progress=progress)
    sample = read_sample(inputs, sample_bytes, text_field)
    return train_lz_counts(counter, sample, vocab_size, pattern=pattern, candidates=candidates, every=every,
                           lz_compressor=lz_compressor, lz_level=lz_level, special_tokens=special_tokens,
                           min_frequency=min_frequency, max_token_length=max_token_length, stats=stats,
                           progress=progress)


__all__ = ["COMPRESSORS", "DEFAULT_CANDIDATES", "DEFAULT_SAMPLE_BYTES", "LEVELS", "check_lz", "compressor",
           "id_width", "merge_word", "read_sample", "split_sample", "take_sample", "train_lz", "train_lz_counts"]
