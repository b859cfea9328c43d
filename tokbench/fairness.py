"""Cross-language parity on parallel text, shared by every capability that counts units per language
(`tokbench metrics` counts tokens, `tokbench boundaries` counts learned segments).

Parallel units:
- Tatoeba: each line of `tatoeba.XXX-eng.XXX` with the same line of `tatoeba.XXX-eng.eng` (every
  language has its own English side).
- UDHR: article-aligned: the title, the preamble and articles 1..30 of each language's record with
  the same section of the English record (code `eng`); a section is a unit when both sides have
  text. Paragraphs of a section are joined by a newline.

Per language L (English excluded), for any count (tokens, segments):
- premium_sum  = sum over units of count(L) / sum over units of count(English)   (Petrov et al. 2023)
- premium_mean = mean over units with count(English) > 0 of count(L) / count(English)   (TokSuite)
Across languages (`spread`): mean, max, Gini coefficient, coefficient of variation (population std /
mean) and mean |log2 premium| (scale-free and symmetric in over- and under-segmentation: MAGNET's
parity target is premium 1, i.e. log2 0). Without an English side every value is missing, with the reason.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from tokbench.assets import resolve
from tokbench.assets.corpus import iter_jsonl, iter_tatoeba
from tokbench.errors import TokbenchError
from tokbench.text import clean

__all__ = ["gini", "spread", "tatoeba_units", "udhr_units", "distinct_texts", "premium_table"]


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative values (0 = all equal); nan for none or an all-zero list."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0 or x.sum() == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * np.sum(x)))


def spread(premiums: Sequence[float]) -> dict:
    """mean, max, min, cv, gini and mean |log2| of premiums (one per language)."""
    p = np.asarray(premiums, dtype=float)
    if p.size == 0:
        return {k: None for k in ("mean", "max", "min", "cv", "gini", "mean_abs_log2")}
    return {"mean": float(p.mean()), "max": float(p.max()), "min": float(p.min()),
            "cv": float(p.std() / p.mean()) if p.mean() > 0 else None, "gini": gini(p),
            "mean_abs_log2": float(np.mean(np.abs(np.log2(p)))) if (p > 0).all() else None}


def tatoeba_units(name_or_path: str | os.PathLike = "tatoeba") -> dict[str, list[tuple[str, str]]]:
    """language -> [(sentence, english sentence)]."""
    return {t.lang: list(zip(t.lines, t.english_lines)) for t in iter_tatoeba(name_or_path)}


def udhr_units(name_or_path: str | os.PathLike = "udhr", english: str = "eng") -> dict[str, list[tuple[str, str]]]:
    """language code -> [(section text, English section text)] over the sections both have (an
    empty list for a language sharing none); {} when the file has no English record."""
    return {code: [(a, b) for _, a, b in units] for code, units in udhr_sections(name_or_path, english).items()}


def udhr_sections(name_or_path: str | os.PathLike = "udhr",
                  english: str = "eng") -> dict[str, list[tuple[str, str, str]]]:
    """As udhr_units, with each unit's section key first: (key, text, English text)."""
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
        out[code] = [(k, text(v), eng[k]) for k, v in sections.items() if k in eng and eng[k] and text(v)]
    return out


def distinct_texts(units: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Every distinct text of the units, in first-seen order: what a premium table counts (once each:
    English sides repeat across Tatoeba languages)."""
    return list(dict.fromkeys(t for pairs in units.values() for pair in pairs for t in pair))


def premium_table(units: dict[str, list[tuple[str, str]]], count_of: Callable[[str], int], *,
                  what: str = "tokens", dataset: str = "the units") -> dict:
    """Premiums per language and their spread, counting with `count_of(text)` (called once per distinct
    text). Keys: languages, missing, n_languages, premium_sum_mean, premium_sum_max, gini, cv,
    mean_abs_log2. `what` names the count in the per-language rows (`tokens`, `english_tokens`)."""
    result: dict = {"languages": {}, "missing": {}}
    if not units:
        reason = f"no English side in {dataset}: parity needs English as the reference"
        for k in ("premium_sum_mean", "gini", "cv"):
            result[k] = None
            result["missing"][k] = reason
        return result
    texts = distinct_texts(units)
    index = {t: i for i, t in enumerate(texts)}
    lengths = np.asarray([count_of(t) for t in texts], dtype=np.int64)
    premiums = []
    for lang, pairs in sorted(units.items()):
        if not pairs:
            result["languages"][lang] = {"units": 0, "premium_sum": None, "premium_mean": None,
                                         "missing": "no section shared with English"}
            continue
        a = lengths[[index[x] for x, _ in pairs]]
        b = lengths[[index[y] for _, y in pairs]]
        row = {"units": len(pairs), what: int(a.sum()), f"english_{what}": int(b.sum())}
        if b.sum() == 0:
            row.update(premium_sum=None, premium_mean=None, missing="English side has no " + what)
        else:
            ok = b > 0
            row["premium_sum"] = float(a.sum() / b.sum())
            row["premium_mean"] = float(np.mean(a[ok] / b[ok]))
            premiums.append(row["premium_sum"])
        result["languages"][lang] = row
    result["n_languages"] = len(premiums)
    if len(premiums) >= 2:
        s = spread(premiums)
        result.update(premium_sum_mean=s["mean"], premium_sum_max=s["max"], gini=s["gini"], cv=s["cv"],
                      mean_abs_log2=s["mean_abs_log2"])
    else:
        for k in ("premium_sum_mean", "premium_sum_max", "gini", "cv", "mean_abs_log2"):
            result[k] = None
            result["missing"][k] = "fewer than two languages with a premium"
    return result
