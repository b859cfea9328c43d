"""Script groups for routing: the dominant Unicode script of a text decides which boundary predictor
segments it (MAGNET routes by script, not by language).

Groups: Latin, Cyrillic, Greek, Arabic/Hebrew (`arabic`), Indic (Devanagari, Bengali, Gurmukhi, Gujarati,
Oriya, Tamil, Telugu, Kannada, Malayalam, Sinhala), CJK (Han, Hiragana, Katakana, Bopomofo), Hangul, Thai,
and `other` (every other script, and text without letters). Only letters and combining marks vote;
digits, punctuation and spaces are script-neutral.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache

GROUPS = ("latin", "cyrillic", "greek", "arabic", "indic", "cjk", "hangul", "thai", "other")

_FIRST_WORD = {
    "LATIN": "latin", "CYRILLIC": "cyrillic", "GREEK": "greek", "COPTIC": "greek",
    "ARABIC": "arabic", "HEBREW": "arabic", "SYRIAC": "arabic", "THAANA": "arabic",
    "DEVANAGARI": "indic", "BENGALI": "indic", "GURMUKHI": "indic", "GUJARATI": "indic", "ORIYA": "indic",
    "TAMIL": "indic", "TELUGU": "indic", "KANNADA": "indic", "MALAYALAM": "indic", "SINHALA": "indic",
    "VEDIC": "indic",
    "CJK": "cjk", "HIRAGANA": "cjk", "KATAKANA": "cjk", "BOPOMOFO": "cjk", "IDEOGRAPHIC": "cjk",
    "KANGXI": "cjk", "HALFWIDTH": "cjk",
    "HANGUL": "hangul", "THAI": "thai",
}


@lru_cache(maxsize=65536)
def char_group(ch: str) -> str | None:
    """The script group of one character, None when it does not vote (not a letter or mark)."""
    cat = unicodedata.category(ch)
    if cat[0] not in "LM":
        return None
    cp = ord(ch)
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x3FFFF:
        return "cjk"
    if 0xAC00 <= cp <= 0xD7A3:
        return "hangul"
    name = unicodedata.name(ch, "")
    return _FIRST_WORD.get(name.split(" ", 1)[0], "other") if name else "other"


def script_counts(text: str) -> Counter:
    """Letters and marks per script group."""
    c: Counter = Counter()
    for ch in text:
        g = char_group(ch)
        if g is not None:
            c[g] += 1
    return c


def dominant_group(text: str, default: str = "other") -> str:
    """The group with the most letters (ties: the first in GROUPS); `default` for text with none."""
    c = script_counts(text)
    if not c:
        return default
    top = max(c.values())
    return next(g for g in GROUPS if c.get(g) == top)


__all__ = ["GROUPS", "char_group", "script_counts", "dominant_group"]
