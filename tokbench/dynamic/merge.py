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

MODES = ("word", "word_hyphen", "pretokens", "pretokens-unicode", "sentence")
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
        """Byte-level BPE (gpt2, llama3, qwen3, smollm2, ...) encodes with tokbench.bpe; any other
        tokenizer.json (Unigram such as xlm-r, WordPiece) with the `tokenizers` library."""
        from tokbench.bpe import BPE
        from tokbench.vocab import load_vocabulary

        vocab = load_vocabulary(name_or_path)
        try:
            bpe = BPE.from_file(name_or_path)
        except TokbenchError as exc:
            bpe = _HFEncoder.load(name_or_path, exc)
        if bpe.n_vocab > len(vocab.token_bytes):
            raise TokbenchError(f"{name_or_path}: the encoder has {bpe.n_vocab} ids but the vocabulary "
                                f"{len(vocab.token_bytes)}", fix="load a complete tokenizer.json")
        return cls(str(name_or_path), bpe, vocab)

    def stream_text(self, seq: Sequence[int]) -> str:
        """The text a sequence of ids stands for (its tokens' bytes joined; invalid UTF-8 kept as surrogate
        escapes, so byte offsets survive). For byte-level BPE this is the encoded text itself."""
        tb = self.vocab.token_bytes
        return b"".join(tb[t] or b"" for t in seq).decode("utf-8", "surrogateescape")

    @property
    def n_base(self) -> int:
        return len(self.vocab.token_bytes)

    def base_bytes(self) -> bytes:
        """Byte length per id as uint32 little-endian (what the kernel takes), computed once."""
        if self._base_bytes is None:
            self._base_bytes = _u32([len(b) if b is not None else 0 for b in self.vocab.token_bytes])
        return self._base_bytes


class _HFEncoder:
    """A non-byte-level tokenizer.json (Unigram, WordPiece) through the `tokenizers` library, with the few
    calls merging needs (no special tokens added)."""

    def __init__(self, tok):
        self.tok = tok
        self.n_vocab = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def load(cls, name_or_path, why):
        from tokenizers import Tokenizer

        from tokbench.assets import resolve

        path = Path(name_or_path)
        if not path.exists():
            try:
                path = Path(resolve(str(name_or_path), kind="tokenizer"))
            except TokbenchError:
                path = None
        if path is not None and path.is_dir():
            path = path / "tokenizer.json"
        if path is None or path.suffix != ".json" or not path.is_file():
            raise TokbenchError(f"dynamic merging cannot encode with {name_or_path}: {why}",
                                fix="use a tokenizer.json (byte-level BPE such as gpt2, llama3, qwen3, smollm2; "
                                    "or Unigram / WordPiece such as xlm-r)") from None
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises its own exception type
            raise TokbenchError(f"the tokenizers library cannot load it ({exc})", path=path,
                                fix="pass a valid tokenizer.json") from None

    def encode_ordinary(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_ordinary_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def pretoken_starts(self, text: str) -> set[int]:
        pre = self.tok.pre_tokenizer
        if pre is None:
            return {0}
        return {_byte_offset(text, start) for _, (start, _end) in pre.pre_tokenize_str(text)}


def _byte_offset(text: str, char: int) -> int:
    return len(text[:char].encode("utf-8", "surrogateescape"))


def _starts(pieces) -> set[int]:
    starts, off = set(), 0
    for p in pieces:
        starts.add(off)
        off += len(p.encode("utf-8", "surrogateescape"))
    return starts


def _unicode_words():
    import regex

    global _UNICODE_RE
    if _UNICODE_RE is None:
        # letters and combining marks together (the GPT-2 / Llama-3 patterns use \p{L}+ alone and so cut
        # Devanagari, Bengali, Tamil, ... words before every vowel sign and virama)
        _UNICODE_RE = regex.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+"
                                    r"|\s+(?!\S)|\s+")
    return _UNICODE_RE


_UNICODE_RE = None


def _punct_starts(text: str) -> set[int]:
    """Byte offsets where punctuation or a symbol other than '-' meets anything else (word_hyphen's cuts)."""
    import unicodedata

    out, off, prev = set(), 0, None
    for ch in text:
        cur = ch != "-" and unicodedata.category(ch)[0] in "PS"
        if prev is not None and cur != prev:
            out.add(off)
        prev = cur
        off += len(ch.encode("utf-8", "surrogateescape"))
    return out


def boundary_mask(tok: DynamicTokenizer, ids: Sequence[Sequence[int]], mode: str,
                  texts: Sequence[str] | None = None) -> list[list[bool]]:
    """Per position: True where no merge may join the token with the one before it.

    word: a cut before every token flagged word-start in the Vocabulary, every token that starts with
        whitespace and every token after one that ends with whitespace but is not a lone space (the reference
        repo's whitespace rule: whitespace only at a merged token's first byte).
    word_hyphen: word, plus a cut wherever punctuation or a symbol other than '-' meets anything else
        (only hyphens join words: "well-known" merges, "cat's" and "hat," do not).
    pretokens: a cut at every pre-token start of the tokenizer's own pre-tokenizer.
    pretokens-unicode: a cut at every pre-token start of a mark-aware word regex (letters and combining
        marks stay together, so Indic words are not cut at vowel signs as by the GPT-2 / Llama-3 patterns).
    sentence: no cut but around tokens without bytes (whole sequences may merge, across words).
    Every mode: tokens without bytes (specials, controls, unk) are cut on both sides. Text-level cuts are
    taken on the text the ids stand for (their bytes joined, `DynamicTokenizer.stream_text`), which is the
    input text for byte-level BPE; `texts` is accepted for compatibility and not needed.
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
        starts = None
        if mode in ("pretokens", "pretokens-unicode", "word_hyphen"):
            text = tok.stream_text(seq)
            if mode == "word_hyphen":
                starts = _punct_starts(text)
            elif mode == "pretokens-unicode":
                starts = _starts(_unicode_words().findall(text))
            elif hasattr(tok.bpe, "pretoken_starts"):
                starts = tok.bpe.pretoken_starts(text)
            else:
                starts = _starts(tok.bpe.pre_tokenize(text))
        off = 0
        for i, t in enumerate(seq):
            b = tb[t]
            if i:
                a = tb[seq[i - 1]]
                if a is None or b is None:
                    cut[i] = True
                elif mode == "sentence":
                    cut[i] = False
                elif mode in ("word", "word_hyphen"):
                    # a lone space token may start a word (SentencePiece's "▁" before a piece without one):
                    # the space then stays at the merged token's first byte, as the reference repo allows
                    cut[i] = (ws[t] or b[0] in _SPACE or (a[-1] in _SPACE and a != b" ")
                              or (starts is not None and off in starts))
                else:
                    cut[i] = off in starts
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
    keep, keep_level: the keep policy and the length at its exhaustion point (= word_level without one).
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
    keep: str = "none"
    keep_level: int | None = None

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

    @property
    def keep_pct_of_word_level(self) -> float:
        """How far the keep policy lets merging go: its exhaustion point as a % of the mode's word level."""
        level = self.word_level if self.keep_level is None else self.keep_level
        room = self.tokens_before - self.word_level
        return 100.0 * (self.tokens_before - level) / room if room else 100.0

    def constituents(self, t: int) -> list[int]:
        return [t] if t < self.n_base else self.tokens[t - self.n_base]

    def expand(self, seq: Sequence[int]) -> list[int]:
        """Base ids of a merged sequence."""
        return [c for t in seq for c in self.constituents(t)]

    def to_dict(self) -> dict:
        """JSON-ready: the merged batch, the dynamic-token table (id, constituents, bytes as text and hex), the
        merges, the merges -> length curve, and the reduction in both units."""
        return {
            "mode": self.mode, "params": self.params, "n_base": self.n_base,
            "tokens_before": self.tokens_before, "tokens_after": self.tokens_after, "word_level": self.word_level,
            "pct_shorter": self.pct_shorter, "pct_of_word_level": self.pct_of_word_level,
            "word_level_pct_shorter": 100.0 * (self.tokens_before - self.word_level) / self.tokens_before
            if self.tokens_before else 0.0,
            "keep": self.keep, "keep_level": self.keep_level, "keep_pct_of_word_level": self.keep_pct_of_word_level,
            "merged": self.merged,
            "dynamic_tokens": [{"id": self.n_base + k, "constituents": c,
                                "text": b.decode("utf-8", "backslashreplace"), "bytes_hex": b.hex()}
                               for k, (c, b) in enumerate(zip(self.tokens, self.token_bytes))],
            "merges": [{"left": a, "right": b, "merged": x, "count": n} for a, b, x, n in self.merges],
            "lengths": self.lengths, "seconds": self.seconds,
        }

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


def read_batch(path: str | Path) -> tuple[list[str] | None, list[list[int]] | None]:
    """A batch file: JSON (a list of id lists, or {"ids": [...]}) gives ids; anything else is text, one
    sequence per non-blank line. Returns (texts, None) or (None, ids)."""
    import json

    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokbenchError(f"cannot read the batch ({exc.__class__.__name__}: {exc})", path=path,
                            fix="pass a readable UTF-8 text file (one sequence per line) or a JSON list of id lists")
    if path.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TokbenchError(f"not valid JSON ({exc})", path=path, fix="write a JSON list of id lists") from None
        if isinstance(data, dict):
            data = data.get("ids")
        if not isinstance(data, list) or not all(isinstance(s, list) and all(isinstance(t, int) and
                                                                            not isinstance(t, bool) for t in s)
                                                 for s in data):
            raise TokbenchError("the JSON is not a list of id lists", path=path,
                                fix='write [[id, id, ...], ...] or {"ids": [[...], ...]}')
        return None, data
    return [line for line in raw.splitlines() if line.strip()], None


def _check_budget(merges, shorter_pct, max_constituents, max_bytes, pct_of_word_level=None):
    if sum(x is not None for x in (merges, shorter_pct, pct_of_word_level)) > 1:
        raise TokbenchError("give one budget: a number of merges, a % shorter or a % of the word level, not both",
                            fix="drop all but one of the three")
    limits.optional("merges", merges, 0, 10_000_000)
    if shorter_pct is not None:
        limits.real("shorter_pct", shorter_pct, 0, 100, lo_open=True, what="a percentage")
    if pct_of_word_level is not None:
        limits.real("pct_of_word_level", pct_of_word_level, 0, 100, lo_open=True, what="a percentage")
    limits.optional("max_constituents", max_constituents, 2, 1_000_000)
    limits.optional("max_bytes", max_bytes, 2, 1_000_000)


def budget_target(total: int, word_level: int, mode: str, shorter_pct: float | None = None,
                  pct_of_word_level: float | None = None, keep_level: int | None = None, keep=None) -> int | None:
    """The length a % budget asks for (None for none); TokbenchError when the mode's word level cannot get there,
    or when a keep policy's exhaustion point `keep_level` (the number of cuts once the policy `keep` has added
    its own) stops short of it. Both % stay against the mode's own word level, without the policy."""
    if pct_of_word_level is not None:
        target = total - math.ceil((total - word_level) * pct_of_word_level / 100 - 1e-9)
        want = f"{pct_of_word_level:g}% of the word level"
    elif shorter_pct is None:
        return None
    else:
        target = math.floor(total * (1 - shorter_pct / 100))
        want = f"{shorter_pct}% shorter"
        if target < word_level:
            best = 100.0 * (total - word_level) / total
            raise TokbenchError(f"{want} cannot be met: mode {mode!r} reaches at most {best:.2f}% "
                                f"on this batch ({total:,} -> {word_level:,} tokens)",
                                fix=f"ask for at most {best:.2f}%, use --pct-of-word-level or another mode")
    if keep_level is not None and target < keep_level:
        room = total - word_level
        best = 100.0 * (total - keep_level) / room if room else 100.0
        raise TokbenchError(f"{want} cannot be met under keep policy {keep}: it reaches at most {best:.1f}% of "
                            f"the word level of mode {mode!r} ({100.0 * (total - keep_level) / total:.2f}% shorter; "
                            f"{total:,} -> {keep_level:,} tokens, target {target:,})",
                            fix=f"ask for at most {best:.1f}% of the word level or keep less")
    return target


def merge_batch(tokenizer: str | Path | DynamicTokenizer, texts: Sequence[str], *, mode: str = "word",
                merges: int | None = None, shorter_pct: float | None = None, pct_of_word_level: float | None = None,
                max_constituents: int | None = None, max_bytes: int | None = None, min_count: int = 1,
                ids: Sequence[Sequence[int]] | None = None, keep=None) -> MergedBatch:
    """Encode `texts` (one batch) with `tokenizer` and merge frequent adjacent pairs inside the batch.

    Budget (at most one): `merges` steps; until the batch is `shorter_pct` % shorter (TokbenchError when the
    mode's word level cannot get there); until it has gone `pct_of_word_level` % of the way from its length
    to its word level (the paper's unit; 100 = exhaustion); or none: to exhaustion. Caps: at most
    `max_constituents` base tokens and `max_bytes` bytes per merged token (a % budget the caps stop short of
    is a TokbenchError). `ids`: the batch already encoded (then `texts` may be None).
    `keep`: a keep policy (tokbench.dynamic.keep: "last-occurrence", "last-word", "last-punct", "recent:N",
    one last-* and recent:N joined by '+', or "none"), extra cuts that leave what the model is likely to copy in its original tokens. The word level and
    the % of it stay the mode's own, without the policy; `keep_level` is the policy's exhaustion point, and a %
    budget beyond it is a TokbenchError that says how far the policy reaches."""
    from tokbench.dynamic.keep import apply_keep, parse_keep

    _check_budget(merges, shorter_pct, max_constituents, max_bytes, pct_of_word_level)
    policy = parse_keep(keep)
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
    if ids is None:
        texts = list(texts or [])
        if not texts or not any(texts):
            raise TokbenchError("the batch is empty (no text to merge)", fix="pass at least one non-empty text")
        ids = tok.bpe.encode_ordinary_batch(texts)
    ids = [list(s) for s in ids]
    total = sum(map(len, ids))
    if not total:
        raise TokbenchError("the batch is empty (no tokens to merge)", fix="pass at least one non-empty sequence")
    if total > MAX_BATCH_TOKENS:
        raise TokbenchError(f"the batch has {total:,} tokens, above the limit of {MAX_BATCH_TOKENS:,}",
                            fix="merge smaller batches")
    cut = boundary_mask(tok, ids, mode)
    word_level = sum(sum(c) for c in cut)
    if policy.active:
        cut = apply_keep(ids, cut, policy, tok.vocab.token_bytes)
    keep_level = sum(sum(c) for c in cut)
    target = budget_target(total, word_level, mode, shorter_pct, pct_of_word_level, keep_level, policy)
    t0 = time.perf_counter()
    merged, cons, steps, lengths = merge_ids(ids, cut, tok.base_bytes(), merges=merges, target_len=target,
                                             max_constituents=max_constituents, max_bytes=max_bytes,
                                             min_count=min_count)
    seconds = time.perf_counter() - t0
    if target is not None and lengths[-1] > target:
        want = f"{shorter_pct}% shorter" if shorter_pct is not None else f"{pct_of_word_level}% of the word level"
        raise TokbenchError(f"{want} cannot be met under the caps (max_constituents={max_constituents}, "
                            f"max_bytes={max_bytes}, min_count={min_count}): stopped at {lengths[-1]:,} of "
                            f"{total:,} tokens (target {target:,})", fix="raise the caps or ask for less")
    tb = tok.vocab.token_bytes
    token_bytes = [b"".join(tb[c] or b"" for c in con) for con in cons]
    return MergedBatch(ids=ids, merged=merged, n_base=tok.n_base, tokens=cons, token_bytes=token_bytes,
                       merges=[tuple(m) for m in steps], lengths=lengths, word_level=word_level, mode=mode,
                       base_token_bytes=tb, seconds=seconds, keep=str(policy), keep_level=keep_level,
                       params={"tokenizer": tok.name, "merges": merges, "shorter_pct": shorter_pct,
                               "pct_of_word_level": pct_of_word_level, "max_constituents": max_constituents,
                               "max_bytes": max_bytes, "min_count": min_count, "keep": str(policy)})
