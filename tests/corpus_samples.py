"""Real text samples for the exactness tests: UDHR in 120+ languages, code, GSM8K."""
from __future__ import annotations

import functools

N_LANGUAGES = 120


@functools.lru_cache(maxsize=None)
def udhr_texts(path: str) -> tuple[tuple[str, str], ...]:
    """(language code, paragraph) pairs: the first 12 paragraphs of N_LANGUAGES languages."""
    from tokbench.assets import iter_udhr

    out: list[tuple[str, str]] = []
    languages = 0
    for code, _name, paragraphs in iter_udhr(path):
        if len(paragraphs) < 12:
            continue
        out.extend((code, p) for p in paragraphs[:12])
        languages += 1
        if languages == N_LANGUAGES:
            break
    assert languages == N_LANGUAGES, f"only {languages} UDHR languages with 12 paragraphs"
    return tuple(out)


@functools.lru_cache(maxsize=None)
def documents(path: str, count: int) -> tuple[str, ...]:
    from tokbench.assets import iter_documents

    out = []
    for doc in iter_documents(path):
        out.append(doc)
        if len(out) == count:
            break
    return tuple(out)
