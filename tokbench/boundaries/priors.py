"""Boundary-rate priors beta (the expected fraction of bytes that end a segment) per language and script.

- `parallel` (MAGNET / FLEXITOKENS rule): beta_L = beta_en / byte premium_L, the byte premium being
  bytes(L) / bytes(English) summed over parallel Tatoeba *train* pairs (ratio of sums). Hitting these priors
  gives every language about the same number of segments per parallel sentence. A script's beta pools the
  pairs of its languages; Latin with English present is beta_en itself (English is the reference: MAGNET's
  released 0.2 for Latin is the English value). With beta_en = 0.2 this reproduces MAGNET's released
  Latin / Cyrillic / Indic priors 0.2 / 0.1 / 0.08 to within the rounding they were released with
  (MAGNET_RELEASED, `check`).
- `words` (MAGNET Eq. 4): beta = words / bytes of the training text (one boundary per whitespace word).

Every prior is checked to lie strictly inside (0, 1).
"""
from __future__ import annotations

from typing import Mapping

from tokbench.boundaries.scripts import dominant_group
from tokbench.errors import TokbenchError

MAGNET_RELEASED = {"latin": 0.2, "cyrillic": 0.1, "indic": 0.08}
# MAGNET released one significant figure (0.08 is hi's 0.078 rounded): agreement means within this
RELEASED_TOLERANCE = 0.25  # relative


def check_prior(value: float, what: str = "prior") -> float:
    """value as a float when 0 < value < 1, else a one-line TokbenchError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TokbenchError(f"{what} {value!r} is not a number", fix="pass a boundary rate between 0 and 1, "
                            "e.g. 0.2 (one boundary every 5 bytes)") from None
    if not 0.0 < v < 1.0:
        raise TokbenchError(f"{what} {v} is outside (0, 1)", fix="pass a boundary rate strictly between 0 and 1, "
                            "e.g. 0.2 (one boundary every 5 bytes)")
    return v


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def parallel_priors(parallel: Mapping[str, list[tuple[str, str]]], beta_en: float = 0.2) -> dict:
    """Priors from parallel pairs (language -> [(sentence, English sentence)], e.g. Splits.parallel_train)."""
    beta_en = check_prior(beta_en, "beta_en")
    langs: dict = {}
    pooled: dict[str, list[int]] = {}
    for lang, pairs in sorted(parallel.items()):
        a = sum(_nbytes(x) for x, _ in pairs)
        b = sum(_nbytes(y) for _, y in pairs)
        if a == 0 or b == 0:
            continue
        group = dominant_group(" ".join(x for x, _ in pairs[:200]))
        premium = a / b
        langs[lang] = {"script": group, "bytes": a, "english_bytes": b, "byte_premium": premium,
                       "beta": check_prior(beta_en / premium, f"derived prior of {lang}")}
        acc = pooled.setdefault(group, [0, 0])
        acc[0] += a
        acc[1] += b
    langs["eng"] = {"script": "latin", "byte_premium": 1.0, "beta": beta_en}
    scripts = {g: check_prior(beta_en / (a / b), f"derived prior of {g}") for g, (a, b) in pooled.items()}
    scripts["latin"] = beta_en
    return {"method": "parallel", "beta_en": beta_en, "languages": langs, "scripts": dict(sorted(scripts.items())),
            "check": check_released(scripts)}


def words_priors(texts: Mapping[str, str]) -> dict:
    """Priors from whitespace words: beta = words / bytes per language (language -> training text)."""
    langs: dict = {}
    pooled: dict[str, list[int]] = {}
    for lang, text in sorted(texts.items()):
        n_bytes, n_words = _nbytes(text), len(text.split())
        if n_bytes == 0 or n_words == 0:
            continue
        group = dominant_group(text[:20000])
        langs[lang] = {"script": group, "bytes": n_bytes, "words": n_words,
                       "beta": check_prior(n_words / n_bytes, f"derived prior of {lang}")}
        acc = pooled.setdefault(group, [0, 0])
        acc[0] += n_words
        acc[1] += n_bytes
    scripts = {g: check_prior(w / b, f"derived prior of {g}") for g, (w, b) in pooled.items()}
    return {"method": "words", "languages": langs, "scripts": dict(sorted(scripts.items())),
            "check": check_released(scripts)}


def check_released(scripts: Mapping[str, float]) -> dict:
    """For each script MAGNET released a prior for: ours, theirs, relative difference, agreement."""
    out = {}
    for g, ref in MAGNET_RELEASED.items():
        if g in scripts:
            rel = scripts[g] / ref - 1.0
            out[g] = {"ours": round(scripts[g], 4), "magnet": ref, "relative": round(rel, 4),
                      "agrees": abs(rel) <= RELEASED_TOLERANCE}
    return out


def parse_priors(items) -> dict[str, float]:
    """`latin=0.2` strings (or a mapping) -> {name: prior}, each checked."""
    if isinstance(items, Mapping):
        return {str(k): check_prior(v, f"prior of {k}") for k, v in items.items()}
    out = {}
    for item in items:
        if "=" not in str(item):
            raise TokbenchError(f"prior {item!r} is not NAME=VALUE", fix="write e.g. --prior latin=0.2")
        k, v = str(item).split("=", 1)
        out[k.strip()] = check_prior(v, f"prior of {k.strip()}")
    return out


__all__ = ["MAGNET_RELEASED", "check_prior", "parallel_priors", "words_priors", "check_released", "parse_priors"]
