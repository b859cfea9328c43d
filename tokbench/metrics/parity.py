"""Cross-language parity on parallel text: how many more tokens a language needs than English.

Parallel units:
- Tatoeba: each line of `tatoeba.XXX-eng.XXX` with the same line of `tatoeba.XXX-eng.eng` (every
  language has its own English side).
- UDHR: article-aligned: the title, the preamble and articles 1..30 of each language's record with
  the same section of the English record (code `eng`); a section is a unit when both sides have
  text. Paragraphs of a section are joined by a newline.

Per language L (English excluded) and tokenizer:
- premium_sum  = sum over units of tokens(L) / sum over units of tokens(English)   (Petrov et al. 2023)
- premium_mean = mean over units with tokens(English) > 0 of tokens(L) / tokens(English)   (TokSuite)
Across languages: mean, Gini coefficient and coefficient of variation (population std / mean) of
premium_sum. Without an English side every value is missing, with the reason.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tokbench.assets import resolve
from tokbench.assets.corpus import iter_jsonl, iter_tatoeba
from tokbench.errors import TokbenchError
from tokbench.metrics.core import gini
from tokbench.metrics.encoders import Encoder
from tokbench.text import clean

ENCODE_CHUNK = 5000


def tatoeba_units(name_or_path: str | os.PathLike = "tatoeba") -> dict[str, list[tuple[str, str]]]:
    """language -> [(sentence, english sentence)]."""
    return {t.lang: list(zip(t.lines, t.english_lines)) for t in iter_tatoeba(name_or_path)}


def udhr_units(name_or_path: str | os.PathLike = "udhr", english: str = "eng") -> dict[str, list[tuple[str, str]]]:
    """language code -> [(section text, English section text)] over the sections both have (an
    empty list for a language sharing none); {} when the file has no English record."""
    path = resolve(name_or_path, kind="corpus")
    records = {}
    for lineno, rec in iter_jsonl(path):
        if not isinstance(rec.get("sections"), dict) or "code" not in rec:
            raise TokbenchError(f"record {lineno} is not a UDHR record", path=path,
                                fix="pass udhr.jsonl (code, name, sections)")
        records[str(rec["code"])] = rec["sections"]
    if english not in records:
        return {}

    def text(v):
        if v is None:
            return ""
        vals = v if isinstance(v, list) else [v]
        return clean("\n".join(str(x) for x in vals if x is not None).strip())

    eng = {k: text(v) for k, v in records[english].items()}
    out = {}
    for code, sections in records.items():
        if code == english:
            continue
        units = [(text(v), eng[k]) for k, v in sections.items() if k in eng and eng[k] and text(v)]
        out[code] = units
    return out


def _encode_lengths(encoder: Encoder, texts: Sequence[str], progress=None) -> np.ndarray:
    out = np.zeros(len(texts), dtype=np.int64)
    for i in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[i:i + ENCODE_CHUNK]
        out[i:i + len(chunk)] = [len(x) for x in encoder.encode(chunk)]
        if progress is not None:
            progress.update(sum(len(t) for t in chunk))
    return out


def distinct_texts(units: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Every distinct text of the units, in first-seen order: what parity() encodes (once each: English
    sides repeat across Tatoeba languages)."""
    return list(dict.fromkeys(t for pairs in units.values() for pair in pairs for t in pair))


def parity(encoder: Encoder, units: dict[str, list[tuple[str, str]]], *, dataset: str,
           progress=None) -> dict:
    """Premiums per language and their spread. `units` from tatoeba_units / udhr_units."""
    result: dict = {"tokenizer": encoder.name, "dataset": dataset, "languages": {}, "missing": {}}
    if not units:
        reason = f"no English side in {dataset}: parity needs English as the reference"
        for k in ("premium_sum_mean", "gini", "cv"):
            result[k] = None
            result["missing"][k] = reason
        return result
    texts = distinct_texts(units)
    index = {t: i for i, t in enumerate(texts)}
    lengths = _encode_lengths(encoder, texts, progress)
    premiums = []
    for lang, pairs in sorted(units.items()):
        if not pairs:
            result["languages"][lang] = {"units": 0, "premium_sum": None, "premium_mean": None,
                                         "missing": "no section shared with English"}
            continue
        a = lengths[[index[x] for x, _ in pairs]]
        b = lengths[[index[y] for _, y in pairs]]
        row = {"units": len(pairs), "tokens": int(a.sum()), "english_tokens": int(b.sum())}
        if b.sum() == 0:
            row.update(premium_sum=None, premium_mean=None, missing="English side has no tokens")
        else:
            ok = b > 0
            row["premium_sum"] = float(a.sum() / b.sum())
            row["premium_mean"] = float(np.mean(a[ok] / b[ok]))
            premiums.append(row["premium_sum"])
        result["languages"][lang] = row
    result["n_languages"] = len(premiums)
    if len(premiums) >= 2:
        p = np.asarray(premiums)
        result["premium_sum_mean"] = float(p.mean())
        result["premium_sum_max"] = float(p.max())
        result["gini"] = gini(p)
        result["cv"] = float(p.std() / p.mean())
    else:
        for k in ("premium_sum_mean", "premium_sum_max", "gini", "cv"):
            result[k] = None
            result["missing"][k] = "fewer than two languages with a premium"
    return result
