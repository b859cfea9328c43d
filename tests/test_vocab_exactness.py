"""Exactness of Vocabulary over all shared tokenizer families: concatenating the bytes tokbench
assigns to the ids the original library produces gives the original library's decoded text,
byte for byte, on UDHR (120 languages), code and GSM8K.

Documented exceptions (where the tokenizer itself normalises or joins): BERT's decoder cleanup of
spaces before punctuation is switched off in the reference; specials/unk stand for no text."""
from __future__ import annotations

import pytest

from corpus_samples import exactness_texts
from reference_tokenizers import FAMILIES, Reference
from tokbench.vocab import load_vocabulary


@pytest.fixture(scope="module")
def texts(require_asset) -> list[tuple[str, str]]:
    return exactness_texts(require_asset)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bytes_of_library_ids_give_library_text(name, texts, require_asset):
    path = require_asset(name)
    vocab = load_vocabulary(path)
    ref = Reference(name, path, vocab)
    ids_per_text = ref.encode([t for _, t in texts])
    mismatches = []
    for (where, _text), ids in zip(texts, ids_per_text):
        expected = ref.decode(ids)
        got = vocab.decode(ids)
        if got != expected:
            mismatches.append((where, expected[:80], got[:80]))
    assert not mismatches, f"{len(mismatches)}/{len(texts)} texts differ, first: {mismatches[0]}"
    languages = {w for w, _ in texts if w.startswith("udhr:")}
    assert len(languages) >= 100
