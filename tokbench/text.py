"""The one text policy of tokbench: what happens to a str that is not valid Unicode text.

A Python str can hold lone surrogates (U+D800..U+DFFF), e.g. from the JSON escape `"\\ud800"`, which is
valid JSON in a valid UTF-8 file. They have no UTF-8 encoding, so every tokenizer library chokes on
them in its own way. tokbench follows tiktoken (`Encoding.encode`): the text is re-read as UTF-16, so a
surrogate *pair* written as two code points becomes the character it stands for, and every lone
surrogate becomes U+FFFD (the replacement character). Everything else is left as it is.

This applies wherever text enters: `tokbench.bpe.BPE` (and the Rust core's str arguments, which follow
the same rule), the corpus readers (`tokbench.assets.iter_documents`, `record_text`), the metrics
encoders (also on the `tokenizers` / `sentencepiece` / `tiktoken` library paths), `train` and the
bits/byte evaluation text.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    """True when text holds a surrogate code point (paired or lone)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def clean(text: str) -> str:
    """text with surrogate pairs joined and lone surrogates replaced by U+FFFD (tiktoken's rule);
    the same object when there is nothing to change."""
    if not has_surrogates(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_all(texts: Iterable[str]) -> list[str]:
    """clean() of every text, as a list."""
    return [clean(t) for t in texts]


__all__ = ["clean", "clean_all", "has_surrogates"]
