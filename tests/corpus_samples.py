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


def exactness_texts(require_asset) -> list[tuple[str, str]]:
    """(where, text): UDHR paragraphs (N_LANGUAGES languages), 12 files each of Python, Rust and C++
    code, 300 GSM8K problems: the texts of the vocabulary exactness tests."""
    out = [(f"udhr:{code}", p) for code, p in udhr_texts(str(require_asset("udhr")))]
    for corpus in ("code-python", "code-rust", "code-cpp"):
        out += [(corpus, d) for d in documents(str(require_asset(corpus)), 12)]
    out += [("gsm8k-train", d) for d in documents(str(require_asset("gsm8k-train")), 300)]
    return out
