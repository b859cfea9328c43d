"""Encoders: each tokenizer driven by its own library, exactly as users run it.

Metrics measure tokenizers as they are, so text is encoded with the tokenizer's original
library, not with tokbench's own segmenter:

| vocabulary format (`tokbench.vocab.load_vocabulary`) | library | call |
|---|---|---|
| `tokenizer.json` (HF; also a model folder holding one) | `tokenizers` | `Tokenizer.encode_batch(texts, add_special_tokens=False)`, padding and truncation off |
| `tiktoken` rank file | `tiktoken` | `Encoding(pat_str=vocab.pattern, special_tokens={}).encode_ordinary_batch(texts)` |
| Mistral `tekken.json` | `tiktoken` | the same over its ranks and pattern, ids = rank + number of special ids (as `mistral_common`) |
| `sentencepiece` `.model` | `sentencepiece` | `SentencePieceProcessor.encode(texts)` (no bos/eos) |

No special tokens are added; special-token text inside a corpus is encoded as ordinary text. Texts
first follow tokbench.text's rule (lone surrogates become U+FFFD), on every path, so every library
sees the same valid text.
The vocabulary (kinds, unk id, byte fallback ids, true size K) comes from `load_vocabulary`.

Fast path (`fast=True`, the default): a tiktoken rank file, and a `tokenizer.json` that is plain
byte-level BPE (what `tokbench.bpe.BPE.from_file` accepts: BPE model without byte fallback, dropout
or subword prefixes, byte-level pre-tokenizer, no normaliser or NFC only, added tokens without
lstrip/rstrip/single_word), are encoded by tokbench's Rust BPE encoder, whose ids are identical to
those of the library (`tiktoken.encode_ordinary`; `tokenizers` with its added tokens matched, as
`Tokenizer.encode` does): tested on the shared corpora in tests/test_metrics.py. It is 1.4x (tiktoken)
to 8x (`tokenizers`) cheaper in CPU and encodes a batch on all cores. `encoder` in `describe()` says
which ran; everything else (WordPiece, Unigram, SentencePiece, other normalisers) uses the library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

from tokbench.errors import TokbenchError
from tokbench.text import clean_all
from tokbench.vocab import load_vocabulary
from tokbench.vocab.vocabulary import Kind, Vocabulary

ENCODE_THREADS = 0  # tokbench.bpe batch encoding: 0 = all cores

_LIBRARY_OF_FORMAT = {"tokenizer.json": "tokenizers", "tiktoken": "tiktoken", "tekken": "tiktoken",
                      "sentencepiece": "sentencepiece"}


@dataclass
class Encoder:
    """`encode(texts) -> list[list[int]]` with the tokenizer's own library."""

    name: str
    vocab: Vocabulary
    library: str
    _tok: object = field(repr=False)
    # tokbench.bpe.BPE with the library's ids (fast path), or None
    fast: object = field(default=None, repr=False)
    # token count of each word encoded alone (continued_words' isolated-word fallback), reused across corpora
    word_lengths: dict = field(default_factory=dict, repr=False)

    @property
    def vocab_size(self) -> int:
        """The true vocabulary size K (every id, specials included)."""
        return self.vocab.size

    @property
    def library_version(self) -> str:
        return metadata.version(self.library)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        texts = clean_all(texts)
        if not texts:
            return []
        if self.fast is not None:
            if self.library == "tiktoken":
                return self.fast.encode_ordinary_batch(texts, num_threads=ENCODE_THREADS)
            # tokenizers matches its added tokens anywhere in the text
            return self.fast.encode_batch(texts, num_threads=ENCODE_THREADS, allowed_special="all",
                                          disallowed_special=())
        if self.library == "tokenizers":
            fast = getattr(self._tok, "encode_batch_fast", None)  # tokenizers >= 0.20: no offsets
            run = fast or self._tok.encode_batch
            return [e.ids for e in run(texts, add_special_tokens=False)]
        if self.library == "tiktoken":
            return self._tok.encode_ordinary_batch(texts, num_threads=4)
        return self._tok.encode(texts)

    def describe(self) -> dict:
        v = self.vocab
        return {"name": self.name, "source": v.source, "format": v.format, "family": v.family,
                "style": v.style.value, "K": v.size, "library": self.library,
                "library_version": self.library_version,
                "encoder": "tokbench.bpe (ids identical to the library's)" if self.fast is not None else self.library}

    # ids that are unk / byte fallback (for rates)
    @property
    def unk_ids(self) -> set[int]:
        return {self.vocab.unk_id} if self.vocab.unk_id is not None else set()

    @property
    def byte_ids(self) -> set[int]:
        return set(self.vocab.ids_of_kind(Kind.BYTE))


def _fast_tokenizer_json(file: Path):
    """tokbench.bpe.BPE for a plain byte-level BPE tokenizer.json (ids identical to `tokenizers`),
    else None."""
    from tokbench.bpe import BPE
    from tokbench.vocab.hf_json import read_tokenizer_json

    data = read_tokenizer_json(file)
    for t in data.get("added_tokens") or []:
        if t.get("lstrip") or t.get("rstrip") or t.get("single_word"):
            return None  # matched with surrounding whitespace rules BPE does not implement
    try:
        return BPE.from_file(file)
    except TokbenchError:
        return None  # not byte-level BPE (WordPiece, Unigram, other normalisers, ...)


def load_encoder(name_or_path: str | Path, pattern: str | None = None, *, fast: bool = True) -> Encoder:
    """An Encoder for a tokenizer asset name, file or folder (TokbenchError when it cannot load).
    fast=False: always the tokenizer's own library (see the module docs)."""
    try:
        vocab = load_vocabulary(name_or_path, pattern=pattern)
    except TokbenchError:
        raise
    except Exception as exc:  # a library's own parse error
        raise TokbenchError(f"cannot load tokenizer ({type(exc).__name__}: {exc})", path=name_or_path,
                            fix="pass a tokenizer.json, SentencePiece .model, tiktoken file or asset name") from None
    library = _LIBRARY_OF_FORMAT.get(vocab.format)
    try:
        return _library_encoder(name_or_path, vocab, library, fast)
    except TokbenchError:
        raise
    except Exception as exc:  # the library refuses a file tokbench's own loader read
        raise TokbenchError(f"{library or 'the library'} cannot load this tokenizer ({type(exc).__name__}: {exc})",
                            path=vocab.source, fix="pass a tokenizer file its own library loads") from None


def _library_encoder(name_or_path, vocab: Vocabulary, library: str | None, fast: bool) -> Encoder:
    fast_bpe = None
    source = Path(vocab.source)
    if library is None:
        # vocab.json+merges.txt or vocab.txt: use a tokenizer.json beside it when there is one
        cand = source.parent / "tokenizer.json" if source.is_file() else source / "tokenizer.json"
        if not cand.exists():
            raise TokbenchError(f"no encoder for format {vocab.format!r}", path=source,
                                fix="pass the tokenizer.json of this tokenizer")
        library, source = "tokenizers", cand
    if library == "tokenizers":
        from tokbench.vocab.hf_json import open_hf_tokenizer

        file = source / "tokenizer.json" if source.is_dir() else source
        fast_bpe = _fast_tokenizer_json(file) if fast else None
        try:
            tok = open_hf_tokenizer(file)  # padding and truncation off, tokenizers 0.x or 1.0
        except Exception as exc:  # tokenizers 1.0 refuses a byte-level vocabulary missing some bytes (SmolLM2)
            if fast_bpe is None:
                raise TokbenchError(f"tokenizers {metadata.version('tokenizers')} cannot load this file ({exc})",
                                    path=file, fix="use a tokenizers version that loads it") from None
            tok = None  # the fast path alone: its ids are those of tokenizers 0.x (tests/test_metrics.py)
    elif library == "tiktoken":
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        if not vocab.pattern:
            raise TokbenchError("tiktoken file without a known split pattern", path=source,
                                fix="pass --pattern REGEX")
        if vocab.format == "tekken":  # tiktoken over its ranks, ids shifted by its special ids (as mistral_common)
            from tokbench.vocab.hf_json import read_tokenizer_json
            from tokbench.vocab.tekken import read_tekken

            ranks = dict(read_tekken(source, read_tokenizer_json(source)).id_ranks)
        else:
            ranks = load_tiktoken_bpe(str(source))
        tok = tiktoken.Encoding(str(name_or_path), pat_str=vocab.pattern, mergeable_ranks=ranks, special_tokens={})
        if fast:
            from tokbench.bpe import BPE

            fast_bpe = BPE.from_ranks(ranks, vocab.pattern, {}, name=str(name_or_path))
    else:
        import sentencepiece as spm

        tok = spm.SentencePieceProcessor(model_file=str(source))
    return Encoder(str(name_or_path), vocab, library, tok, fast=fast_bpe)
