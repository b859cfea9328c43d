"""The Rust segmenter splits a word exactly as each family's original library does."""
from __future__ import annotations

import regex
import pytest

from corpus_samples import udhr_texts
from reference_tokenizers import FAMILIES, Reference
from tokbench.vocab import load_vocabulary

_LETTERS = regex.compile(r"^\p{L}+$")


def _words(require_asset, limit=4000) -> list[str]:
    seen: dict[str, None] = {}
    for _code, p in udhr_texts(str(require_asset("udhr"))):
        for w in p.split():
            if _LETTERS.match(w):
                seen.setdefault(w, None)
    words = list(seen)
    return words[:: max(1, len(words) // limit)][:limit]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_segment_word_like_library(name, require_asset):
    path = require_asset(name)
    vocab = load_vocabulary(path)
    ref = Reference(name, path, vocab)
    words = _words(require_asset)
    if ref.library == "tokenizers" and ref.tok.normalizer is not None:
        # compare only where the tokenizer's normaliser leaves the word as it is
        words = [w for w in words if ref.tok.normalizer.normalize_str(w) == w]
    space = vocab.style.value != "wordpiece"
    # spaced form: " word" for byte-level/metaspace (sentencepiece adds the dummy prefix itself)
    lib_inputs = [(" " + w if space and ref.library != "sentencepiece" and not vocab.strip_leading_space
                   else w) for w in words]
    expected = ref.encode(lib_inputs)
    got = vocab.segment_batch([(" " + w if space else w).encode() for w in words])
    bad = [(w, e, g) for w, e, g in zip(words, expected, got) if e != g]
    assert len(words) > 1000
    assert not bad, f"{len(bad)}/{len(words)} words differ, first: {bad[:3]}"


@pytest.mark.parametrize("name", ["llama3", "gpt2-tiktoken", "whisper"])
def test_every_tiktoken_token_segments_to_itself(name, require_asset):
    # tiktoken returns a piece that is itself a token as that id, even when the token's own
    # merges would not reach it (588 Llama 3 tokens)
    vocab = load_vocabulary(require_asset(name))
    ids = [i for i, b in enumerate(vocab.token_bytes) if b is not None]
    got = vocab.segment_batch([vocab.token_bytes[i] for i in ids], [False] * len(ids))
    assert [g for g in got if len(g) != 1] == []
    assert [g[0] for g in got] == ids
