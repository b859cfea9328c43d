"""Metrics of one tokenizer on one corpus. Every definition is in reports/metrics.md.

A metric that cannot be computed is `None` in the result and its reason is in `missing[name]`;
it is never reported as 0.
"""
from __future__ import annotations

import gzip
import lzma
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tokbench.errors import TokbenchError
from tokbench.fairness import gini  # re-exported: tokbench.metrics.core.gini is public
from tokbench.metrics.encoders import Encoder
from tokbench.vocab.vocabulary import Style

DEFAULT_ALPHA = 2.5
DEFAULT_MAX_ORDER = 5
HELDOUT_EVERY = 10  # every 10th document (index % 10 == 9) is held out ...
HELDOUT_MIN_DOCS = 1000  # ... when there are this many documents; else the last 10% of each document
COMPRESSORS = ("gzip", "zstd", "lzma")
ENCODE_BATCH_BYTES = 1 << 20

# Letters of scripts written without spaces between words: words are counted per character there.
_NO_SPACE_SCRIPTS = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]"


@dataclass
class EncodedCorpus:
    """Token ids of every document of a corpus, concatenated, with document offsets."""

    tokens: np.ndarray  # uint32
    offsets: np.ndarray  # uint64, len = documents + 1
    n_bytes: int
    n_chars: int
    doc_bytes: np.ndarray  # int64 per document

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    @property
    def n_docs(self) -> int:
        return int(self.offsets.size - 1)


def encode_documents(encoder: Encoder, docs: Sequence[str], progress=None) -> EncodedCorpus:
    """Encode docs in batches of about 1 MB (the library parallelises inside a batch)."""
    lengths: list[int] = []
    chunks: list[np.ndarray] = []
    batch: list[str] = []
    size = 0

    def flush():
        nonlocal batch, size
        if batch:
            for ids in encoder.encode(batch):
                arr = np.asarray(ids, dtype=np.uint32)
                chunks.append(arr)
                lengths.append(arr.size)
            if progress is not None:
                progress.update(size)
        batch, size = [], 0

    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= ENCODE_BATCH_BYTES:
            flush()
    flush()
    offsets = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
    doc_bytes = np.fromiter((len(d.encode("utf-8")) for d in docs), dtype=np.int64, count=len(docs))
    return EncodedCorpus(tokens, offsets, int(doc_bytes.sum()), sum(len(d) for d in docs), doc_bytes)


# --------------------------------------------------------------------------------------------
# words
# --------------------------------------------------------------------------------------------
def _no_space_script(doc: str) -> bool:
    import regex

    sample = doc[:20000]
    letters = len(regex.findall(r"\p{L}", sample))
    if not letters:
        return False
    return len(regex.findall(_NO_SPACE_SCRIPTS, sample)) > 0.5 * letters


@dataclass
class Words:
    """Word counts of a corpus: whitespace words, except characters in no-space-script documents."""

    n_words: int
    segmentation: str  # "whitespace" | "characters" | "mixed"
    whitespace_words: Counter  # distinct whitespace words -> count (whitespace documents only)
    n_char_docs: int
    char_docs: list  # per document: True when counted per character


def count_words(docs: Sequence[str]) -> Words:
    counter: Counter = Counter()
    n_words = 0
    char_docs = 0
    flags = []
    for d in docs:
        flags.append(_no_space_script(d))
        if flags[-1]:
            char_docs += 1
            n_words += sum(1 for ch in d if not ch.isspace())
        else:
            ws = d.split()
            counter.update(ws)
            n_words += len(ws)
    seg = "whitespace" if char_docs == 0 else ("characters" if char_docs == len(docs) else "mixed")
    return Words(n_words, seg, counter, char_docs, flags)


def continued_words(encoder: Encoder, words: Counter) -> tuple[float | None, str | None]:
    """Share of whitespace-word occurrences the tokenizer splits into 2+ tokens, each distinct word
    encoded on its own as it appears after a space (a leading space is added for byte-level and
    tiktoken vocabularies without a dummy prefix; sentencepiece-style tokenizers add their own).
    Used when the token stream does not map back onto the text byte for byte."""
    if not words:
        return None, "no whitespace-separated words (script without spaces)"
    v = encoder.vocab
    prefix = " " if v.style in (Style.BYTELEVEL, Style.RAW) and not v.strip_leading_space else ""
    cache = encoder.word_lengths  # word -> token count, kept across corpora of one run
    todo = [w for w in words if w not in cache]
    for i in range(0, len(todo), 20000):
        chunk = todo[i:i + 20000]
        cache.update(zip(chunk, (len(x) for x in encoder.encode([prefix + w for w in chunk]))))
    total = sum(words.values())
    cont = sum(c for w, c in words.items() if cache[w] > 1)
    return cont / total, None


# multi-byte characters str.split() treats as whitespace, mapped to as many ASCII spaces
_UNICODE_SPACES = [ch.encode("utf-8") for ch in
                   "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                   "\u2028\u2029\u202f\u205f\u3000"]
_ASCII_WS = np.zeros(256, dtype=bool)
_ASCII_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


def token_byte_lengths(encoder: Encoder) -> np.ndarray:
    return np.fromiter((len(b) if b is not None else 0 for b in encoder.vocab.token_bytes), dtype=np.int64,
                       count=encoder.vocab.size)


@dataclass
class StreamText:
    """The tokenizer-independent part of continued_words_from_stream for one corpus: documents joined
    by one newline (character-segmented documents blanked), its whitespace mask and word starts.
    Computed once per corpus and shared by every tokenizer (`stream_text`)."""

    n_bytes: int  # len of the joined buffer
    ws: np.ndarray  # bool per byte: whitespace
    word_start: np.ndarray  # bool per byte: first byte of a whitespace word
    word_id: np.ndarray  # int64 per byte: index of the word holding it (or the previous word)
    n_words: int


def stream_text(docs: Sequence[str], char_docs: Sequence[bool]) -> StreamText:
    parts = []
    for d, is_char in zip(docs, char_docs):
        b = d.encode("utf-8")
        parts.append(b" " * len(b) if is_char else b)  # character-segmented documents: no words
    data = b"\n".join(parts)
    for sp in _UNICODE_SPACES:
        if sp in data:
            data = data.replace(sp, b" " * len(sp))
    ws = _ASCII_WS[np.frombuffer(data, dtype=np.uint8)]
    word_start = ~ws & np.concatenate(([True], ws[:-1]))
    word_id = np.cumsum(word_start) - 1
    return StreamText(len(data), ws, word_start, word_id, int(word_id[-1] + 1) if word_id.size else 0)


def continued_words_from_stream(encoder: Encoder, docs: Sequence[str], enc: EncodedCorpus,
                                char_docs: Sequence[bool], text: StreamText | None = None) -> float | None:
    """Share of whitespace words (documents segmented by characters excluded) that contain a token
    boundary strictly inside them, read off the stream itself. Only possible when the tokens' bytes
    rebuild every document byte for byte (plus one leading space for dummy-prefix tokenizers);
    returns None otherwise. `text`: stream_text(docs, char_docs), when the caller keeps it."""
    tl = token_byte_lengths(encoder)
    if enc.n_tokens and int(enc.tokens.max()) >= tl.size:
        return None
    lens = tl[enc.tokens]
    off = enc.offsets.astype(np.int64)
    per_doc = np.add.reduceat(lens, off[:-1]) if enc.n_tokens else np.zeros(enc.n_docs, np.int64)
    per_doc = np.where(off[1:] > off[:-1], per_doc, 0)
    lead = 1 if encoder.vocab.strip_leading_space else 0
    # a dummy-prefix tokenizer puts one space before each non-empty document
    expected = enc.doc_bytes + lead * (enc.doc_bytes > 0)
    if not np.array_equal(per_doc, expected):
        return None
    # documents joined by one newline; byte position of each token start in that buffer
    if text is None:
        text = stream_text(docs, char_docs)
    if text.n_words == 0:
        return None
    ws, word_start = text.ws, text.word_start
    doc_start = np.concatenate(([0], np.cumsum(enc.doc_bytes[:-1] + 1)))
    ntok = np.diff(off)
    within = np.cumsum(lens) - lens  # start of each token, counted over all token bytes
    # minus the token bytes of the documents before, plus where the document starts in the buffer
    shift = doc_start - np.concatenate(([0], np.cumsum(per_doc)[:-1])) - lead
    pos = within + np.repeat(shift, ntok)
    # a boundary strictly inside a word: a token starting at a non-space byte that is not a word start
    pos = pos[(pos > 0) & (pos < text.n_bytes)]
    inside = pos[~ws[pos] & ~word_start[pos]]
    # positions only grow along the stream, so the words holding them form a sorted sequence
    ids = text.word_id[inside]
    distinct = int(np.count_nonzero(ids[1:] != ids[:-1])) + 1 if ids.size else 0
    return float(distinct / text.n_words)


# --------------------------------------------------------------------------------------------
# unigram entropies
# --------------------------------------------------------------------------------------------
def shannon_entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def renyi_entropy(counts: np.ndarray, alpha: float) -> float:
    """H_alpha = log2(sum p^alpha) / (1 - alpha), Shannon at alpha = 1.

    Summed over probabilities sorted by descending count, as tokenization-scorer does, so that the
    value matches it to the last bits."""
    if alpha == 1.0:
        return shannon_entropy(counts)
    c = np.sort(counts[counts > 0])[::-1]
    p = c / c.sum()
    return float((1.0 / (1.0 - alpha)) * np.log2(np.sum(p ** alpha)))


def renyi_efficiency(counts: np.ndarray, alpha: float, k: int) -> float:
    """H_alpha / log2 K (tokenization-scorer's `renyi` metric with vocab=K; K = observed types there
    by default)."""
    return renyi_entropy(counts, alpha) / math.log2(k)


# --------------------------------------------------------------------------------------------
# n-grams and compression
# --------------------------------------------------------------------------------------------
def heldout_cuts(enc: EncodedCorpus) -> tuple[np.ndarray, str]:
    """(cuts, rule): document d's tokens offsets[d]..cuts[d] are train, cuts[d]..offsets[d+1] held out."""
    off = enc.offsets.astype(np.int64)
    if enc.n_docs >= HELDOUT_MIN_DOCS:
        held = (np.arange(enc.n_docs) % HELDOUT_EVERY) == HELDOUT_EVERY - 1
        cuts = np.where(held, off[:-1], off[1:])
        rule = f"documents with index % {HELDOUT_EVERY} == {HELDOUT_EVERY - 1} held out"
    else:
        cuts = np.array([s + int(round((e - s) * 0.9)) for s, e in zip(off[:-1].tolist(), off[1:].tolist())],
                        dtype=np.int64)
        rule = f"fewer than {HELDOUT_MIN_DOCS} documents: last 10% of each document's tokens held out"
    return cuts.astype(np.uint64), rule


def heldout_split(enc: EncodedCorpus) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train, train_offsets, test, test_offsets, rule): the heldout_cuts split as two streams."""
    cuts, rule = heldout_cuts(enc)
    off, c = enc.offsets.astype(np.int64).tolist(), cuts.astype(np.int64).tolist()
    n = enc.n_docs
    if n >= HELDOUT_MIN_DOCS:  # whole documents
        held = [i % HELDOUT_EVERY == HELDOUT_EVERY - 1 for i in range(n)]
        train = [(off[i], off[i + 1]) for i in range(n) if not held[i]]
        test = [(off[i], off[i + 1]) for i in range(n) if held[i]]
    else:
        train = [(off[i], c[i]) for i in range(n)]
        test = [(c[i], off[i + 1]) for i in range(n)]

    def gather(spans):
        parts = [enc.tokens[s:e] for s, e in spans]
        o = np.zeros(len(spans) + 1, dtype=np.uint64)
        np.cumsum([e - s for s, e in spans], out=o[1:])
        return (np.concatenate(parts) if parts else np.zeros(0, np.uint32)), o

    tr, tro = gather(train)
    te, teo = gather(test)
    return tr, tro, te, teo, rule


def id_width(k: int) -> int:
    """Bytes per id in the compression serialisation: the fewest whole bytes holding K - 1."""
    return max(1, math.ceil(max(1, (k - 1).bit_length()) / 8))


def serialise(tokens: np.ndarray, k: int) -> bytes:
    w = id_width(k)
    return tokens.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :w].tobytes()


def compress_size(data: bytes, method: str) -> int:
    if method == "gzip":
        return len(gzip.compress(data, compresslevel=6, mtime=0))
    if method == "zstd":
        import zstandard

        return len(zstandard.ZstdCompressor(level=3).compress(data))
    if method == "lzma":
        return len(lzma.compress(data, preset=1))
    raise TokbenchError(f"unknown compressor {method!r}", fix=f"use one of {', '.join(COMPRESSORS)}")


# --------------------------------------------------------------------------------------------
# everything for one tokenizer x corpus
# --------------------------------------------------------------------------------------------
def corpus_metrics(encoder: Encoder, docs: Sequence[str], enc: EncodedCorpus | None = None, *,
                   words: Words | None = None, alpha: float = DEFAULT_ALPHA,
                   max_order: int = DEFAULT_MAX_ORDER, compressors: Sequence[str] = COMPRESSORS,
                   corpus: str = "<corpus>", text: StreamText | None = None) -> dict:
    """All per-corpus metrics (flat dict + `ngrams` list + `missing` reasons); see reports/metrics.md."""
    from tokbench import _core

    if not docs:
        raise TokbenchError("the corpus has no text (no non-empty documents)", path=corpus,
                            fix="pass a corpus with text")
    t0 = time.perf_counter()
    if enc is None:
        enc = encode_documents(encoder, docs)
    t_enc = time.perf_counter() - t0
    words = words or count_words(docs)
    k = encoder.vocab_size
    missing: dict[str, str] = {}
    out: dict = {"tokenizer": encoder.name, "corpus": corpus, "K": k, "documents": enc.n_docs,
                 "bytes": enc.n_bytes, "chars": enc.n_chars, "tokens": enc.n_tokens,
                 "words": words.n_words, "word_segmentation": words.segmentation}
    n = enc.n_tokens
    if n == 0:
        raise TokbenchError("the tokenizer produced no tokens for this corpus", path=corpus,
                            fix="check the corpus text and the tokenizer's normaliser")
    out["bytes_per_token"] = enc.n_bytes / n
    out["chars_per_token"] = enc.n_chars / n
    out["fertility"] = n / words.n_words if words.n_words else None
    if not words.n_words:
        missing["fertility"] = "no words in the corpus"
    cw = None
    if words.n_char_docs < len(docs):
        cw = continued_words_from_stream(encoder, docs, enc, words.char_docs, text)
    if cw is not None:
        out["continued_words"], out["continued_words_method"] = cw, "stream"
    else:
        cw, why = continued_words(encoder, words.whitespace_words)
        out["continued_words"], out["continued_words_method"] = cw, "isolated words"
        if why:
            missing["continued_words"] = why
            out["continued_words_method"] = None

    all_counts = np.bincount(enc.tokens, minlength=k)
    ids = np.flatnonzero(all_counts)
    counts = all_counts[ids]
    if encoder.unk_ids:
        out["unk_rate"] = float(counts[np.isin(ids, list(encoder.unk_ids))].sum() / n)
    else:
        out["unk_rate"] = None
        missing["unk_rate"] = "the tokenizer has no unk token"
    if encoder.byte_ids:
        out["byte_fallback_rate"] = float(counts[np.isin(ids, list(encoder.byte_ids))].sum() / n)
    else:
        out["byte_fallback_rate"] = None
        missing["byte_fallback_rate"] = "the tokenizer has no byte-fallback tokens"
    out["types"] = int(ids.size)
    out["utilisation"] = ids.size / k
    counts_f = counts.astype(np.float64)
    h1 = shannon_entropy(counts_f)
    out["shannon_entropy"] = h1
    out["shannon_efficiency"] = h1 / math.log2(k)
    out["renyi_alpha"] = alpha
    out["renyi_entropy"] = renyi_entropy(counts_f, alpha)
    out["renyi_efficiency"] = out["renyi_entropy"] / math.log2(k)
    if ids.size > 1:
        out["renyi_efficiency_observed"] = out["renyi_entropy"] / math.log2(ids.size)
    else:
        out["renyi_efficiency_observed"] = None
        missing["renyi_efficiency_observed"] = "one observed type: log2(1) = 0"
    out["unigram_bits_per_byte"] = n * h1 / enc.n_bytes

    t1 = time.perf_counter()
    # the whole stream's statistics and the held-out model in one pass (rust_ext/src/ngram.rs)
    cuts, rule = heldout_cuts(enc)
    out["heldout_split"] = rule
    n_test = int((enc.offsets[1:] - cuts).sum())
    out["heldout_tokens"] = n_test
    heldout = 0 < n_test < n
    if not heldout:
        missing["heldout_cross_entropy"] = "held-out or train part is empty"
    stats, xent = _core.ngram_metrics(enc.tokens.astype("<u4").tobytes(), enc.offsets.astype("<u8").tobytes(),
                                      cuts.astype("<u8").tobytes(), max_order, k, heldout)
    ngrams = []
    for s in stats:
        row = {"order": s["order"], "n": s["n"], "distinct": s["distinct"], "contexts": s["contexts"],
               "singleton_context_fraction": (s["singleton_contexts"] / s["contexts"]) if s["contexts"] else None,
               "singleton_fraction": (s["singletons"] / s["distinct"]) if s["distinct"] else None}
        for key in ("block_entropy", "block_entropy_mm", "conditional_entropy", "conditional_entropy_mm"):
            val = s[key]
            row[key] = None if math.isnan(val) else val
        if s["n"] == 0:
            row["missing"] = f"no {s['order']}-grams inside documents"
        if xent is not None:
            x = xent[s["order"] - 1]
            row["heldout_bits_per_token"] = x["bits_per_token"]
        ngrams.append(row)
    out["ngrams"] = ngrams
    if xent is not None:
        out["heldout_unseen_tokens"] = xent[0]["unseen"]
    t_ng = time.perf_counter() - t1

    out["missing"] = missing
    out["seconds"] = {"encode": round(t_enc, 3), "ngrams": round(t_ng, 3)}
    if compressors:
        compression_metrics(out, enc, k, compressors)
    return out


def compression_metrics(out: dict, enc: EncodedCorpus, k: int, compressors: Sequence[str]) -> dict:
    """Adds `serialisation` and `{method}_bits_per_byte` to a corpus_metrics row (thread-safe: the
    compressors release the GIL, so run_metrics overlaps this with the next encoding)."""
    t2 = time.perf_counter()
    data = serialise(enc.tokens, k)
    out["serialisation"] = f"ids as {id_width(k)}-byte little-endian unsigned integers, documents concatenated"
    for m in compressors:
        out[f"{m}_bits_per_byte"] = 8 * compress_size(data, m) / enc.n_bytes
    out["seconds"]["compress"] = round(time.perf_counter() - t2, 3)
    return out


def text_compression(docs: Sequence[str], compressors: Sequence[str] = COMPRESSORS) -> dict:
    """Tokenizer-independent reference: the UTF-8 text itself (documents concatenated) compressed."""
    data = "".join(docs).encode("utf-8")
    return {f"{m}_bits_per_byte": 8 * compress_size(data, m) / len(data) for m in compressors}
