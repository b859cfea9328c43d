"""Batch-level BPE over token ids (the Rust kernel `_core.dynamic_merge`) and the boundary masks it obeys."""
from __future__ import annotations

import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tokbench import _core, limits
from tokbench.errors import TokbenchError

MODES = ("word", "pretokens")
_SPACE = frozenset(b" \t\n\r\x0b\x0c")
MAX_BATCH_TOKENS = 50_000_000


@dataclass
class DynamicTokenizer:
    """What merging needs from a tokenizer: the byte-level BPE encoder (ids, pre-tokens) and the Vocabulary
    (exact bytes and word-start flag per id)."""

    name: str
    bpe: object
    vocab: object
    _base_bytes: bytes | None = field(default=None, repr=False)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "DynamicTokenizer":
        from tokbench.bpe import BPE
        from tokbench.vocab import load_vocabulary

        vocab = load_vocabulary(name_or_path)
        try:
            bpe = BPE.from_file(name_or_path)
        except TokbenchError as exc:
            raise TokbenchError(f"dynamic merging encodes with tokbench.bpe, which cannot load {name_or_path}: {exc}",
                                fix="use a byte-level BPE tokenizer (gpt2, llama3, qwen3, smollm2, ...)") from None
        if bpe.n_vocab > len(vocab.token_bytes):
            raise TokbenchError(f"{name_or_path}: the encoder has {bpe.n_vocab} ids but the vocabulary "
                                f"{len(vocab.token_bytes)}", fix="load a complete tokenizer.json")
        return cls(str(name_or_path), bpe, vocab)

    @property
    def n_base(self) -> int:
        return len(self.vocab.token_bytes)

    def base_bytes(self) -> bytes:
        """Byte length per id as uint32 little-endian (what the kernel takes), computed once."""
        if self._base_bytes is None:
            self._base_bytes = _u32([len(b) if b is not None else 0 for b in self.vocab.token_bytes])
        return self._base_bytes


def boundary_mask(tok: DynamicTokenizer, ids: Sequence[Sequence[int]], mode: str,
                  texts: Sequence[str] | None = None) -> list[list[bool]]:
    """Per position: True where no merge may join the token with the one before it.

    word: a cut before every token flagged word-start in the Vocabulary, every token that starts with
        whitespace and every token after one that ends with whitespace (the reference repo's whitespace rule).
    pretokens: a cut at every pre-token start of the tokenizer's own pre-tokenizer (needs the texts).
    Both: tokens without bytes (specials, controls) are cut on both sides.
    """
    if mode not in MODES:
        hint = " (the reference repo's 'words' silently disabled merging; here it is 'word')" if mode == "words" else ""
        raise TokbenchError(f"unknown boundary mode {mode!r}{hint}", fix=f"use one of {', '.join(MODES)}")
    tb, ws = tok.vocab.token_bytes, tok.vocab.word_start
    n = len(tb)
    out = []
    for s, seq in enumerate(ids):
        bad = [t for t in seq if not 0 <= t < n]
        if bad:
            raise TokbenchError(f"sequence {s} holds id {bad[0]}, outside the vocabulary of {n:,} tokens "
                                f"of {tok.name}", fix="pass ids of this tokenizer")
        cut = [True] * len(seq)
        if mode == "word":
            for i in range(1, len(seq)):
                a, b = tb[seq[i - 1]], tb[seq[i]]
                cut[i] = a is None or b is None or ws[seq[i]] or b[0] in _SPACE or a[-1] in _SPACE
        else:
            if texts is None:
                raise TokbenchError("mode 'pretokens' needs the texts", fix="pass texts= beside the ids")
            starts, off = set(), 0
            for p in tok.bpe.pre_tokenize(texts[s]):
                starts.add(off)
                off += len(p.encode("utf-8"))
            off = 0
            for i, t in enumerate(seq):
                b = tb[t]
                if i:
                    cut[i] = b is None or tb[seq[i - 1]] is None or off in starts
                off += len(b or b"")
        out.append(cut)
    return out


@dataclass
class MergedBatch:
    """One merged batch.

    ids: the batch before merging; merged: after (ids >= n_base are dynamic tokens).
    tokens: constituent base ids of dynamic token n_base + k; token_bytes: the bytes each stands for.
    merges: (left, right, merged id, count) per step; lengths: total length after 0, 1, ... merges.
    word_level: the batch's length with every segment between cuts one token (the mode's maximum).
    """

    ids: list[list[int]]
    merged: list[list[int]]
    n_base: int
    tokens: list[list[int]]
    token_bytes: list[bytes]
    merges: list[tuple[int, int, int, int]]
    lengths: list[int]
    word_level: int
    mode: str
    base_token_bytes: list = field(default_factory=list, repr=False)
    seconds: float = 0.0
    params: dict = field(default_factory=dict)

    @property
    def tokens_before(self) -> int:
        return self.lengths[0]

    @property
    def tokens_after(self) -> int:
        return self.lengths[-1]

    @property
    def pct_shorter(self) -> float:
        return 100.0 * (self.tokens_before - self.tokens_after) / self.tokens_before if self.tokens_before else 0.0

    @property
    def pct_of_word_level(self) -> float:
        room = self.tokens_before - self.word_level
        return 100.0 * (self.tokens_before - self.tokens_after) / room if room else 100.0

    def constituents(self, t: int) -> list[int]:
        return [t] if t < self.n_base else self.tokens[t - self.n_base]

    def expand(self, seq: Sequence[int]) -> list[int]:
        """Base ids of a merged sequence."""
        return [c for t in seq for c in self.constituents(t)]

    def decode_bytes(self, s: int) -> bytes:
        """The bytes of merged sequence s (dynamic tokens by their own bytes); equal to the original text's."""
        tb, n = self.base_token_bytes, self.n_base
        return b"".join((tb[t] or b"") if t < n else self.token_bytes[t - n] for t in self.merged[s])


def _u32(values) -> bytes:
    a = array("I", values)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def merge_ids(ids: Sequence[Sequence[int]], cut: Sequence[Sequence[bool]], base_bytes: Sequence[int], *,
              merges: int | None = None, target_len: int | None = None, max_constituents: int | None = None,
              max_bytes: int | None = None, min_count: int = 1):
    """The kernel on raw ids: (merged, constituents per dynamic token, merges, lengths). ValueError on bad input.
    base_bytes: byte length per base id (a sequence, or uint32 little-endian bytes as DynamicTokenizer.base_bytes)."""
    if not isinstance(base_bytes, bytes):
        base_bytes = _u32(base_bytes)
    return _core.dynamic_merge(ids, cut, base_bytes, max_merges=merges, target_len=target_len,
                               max_constituents=max_constituents or 0, max_bytes=max_bytes or 0,
                               min_count=min_count)


def _check_budget(merges, shorter_pct, max_constituents, max_bytes):
    if merges is not None and shorter_pct is not None:
        raise TokbenchError("give either a number of merges or a % shorter, not both", fix="drop one of the two")
    limits.optional("merges", merges, 0, 10_000_000)
    if shorter_pct is not None:
        limits.real("shorter_pct", shorter_pct, 0, 100, lo_open=True, what="a percentage")
    limits.optional("max_constituents", max_constituents, 2, 1_000_000)
    limits.optional("max_bytes", max_bytes, 2, 1_000_000)


def merge_batch(tokenizer: str | Path | DynamicTokenizer, texts: Sequence[str], *, mode: str = "word",
                merges: int | None = None, shorter_pct: float | None = None, max_constituents: int | None = None,
                max_bytes: int | None = None, min_count: int = 1) -> MergedBatch:
    """Encode `texts` (one batch) with `tokenizer` and merge frequent adjacent pairs inside the batch.

    Budget: `merges` steps, or until the batch is `shorter_pct` % shorter (TokbenchError when the mode's word
    level cannot get there), or neither: to exhaustion. Caps: at most `max_constituents` base tokens and
    `max_bytes` bytes per merged token."""
    _check_budget(merges, shorter_pct, max_constituents, max_bytes)
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
    texts = list(texts)
    if not texts or not any(texts):
        raise TokbenchError("the batch is empty (no text to merge)", fix="pass at least one non-empty text")
    ids = tok.bpe.encode_ordinary_batch(texts)
    total = sum(map(len, ids))
    if total > MAX_BATCH_TOKENS:
        raise TokbenchError(f"the batch has {total:,} tokens, above the limit of {MAX_BATCH_TOKENS:,}",
                            fix="merge smaller batches")
    cut = boundary_mask(tok, ids, mode, texts)
    word_level = sum(sum(c) for c in cut)
    target = None
    if shorter_pct is not None:
        target = math.floor(total * (1 - shorter_pct / 100))
        if target < word_level:
            best = 100.0 * (total - word_level) / total
            raise TokbenchError(f"{shorter_pct}% shorter cannot be met: mode {mode!r} reaches at most {best:.2f}% "
                                f"on this batch ({total:,} -> {word_level:,} tokens)",
                                fix=f"ask for at most {best:.2f}% or use another mode")
    t0 = time.perf_counter()
    merged, cons, steps, lengths = merge_ids(ids, cut, tok.base_bytes(), merges=merges, target_len=target,
                                             max_constituents=max_constituents, max_bytes=max_bytes,
                                             min_count=min_count)
    seconds = time.perf_counter() - t0
    if target is not None and lengths[-1] > target:
        raise TokbenchError(f"{shorter_pct}% shorter cannot be met under the caps (max_constituents="
                            f"{max_constituents}, max_bytes={max_bytes}): stopped at {lengths[-1]:,} of "
                            f"{total:,} tokens", fix="raise the caps or ask for less")
    tb = tok.vocab.token_bytes
    token_bytes = [b"".join(tb[c] or b"" for c in con) for con in cons]
    return MergedBatch(ids=ids, merged=merged, n_base=tok.n_base, tokens=cons, token_bytes=token_bytes,
                       merges=[tuple(m) for m in steps], lengths=lengths, word_level=word_level, mode=mode, base_token_bytes=tb,
                       seconds=seconds, params={"tokenizer": tok.name, "merges": merges, "shorter_pct": shorter_pct,
                                                "max_constituents": max_constituents, "max_bytes": max_bytes,
                                                "min_count": min_count})
