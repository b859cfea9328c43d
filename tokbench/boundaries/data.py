"""Train / test splits that keep test text out of training, from the registered assets.

- Tatoeba (`tatoeba`): per language, the first 80 % of lines train, the last 20 % test (the same cut on the
  English side, so the test lines stay parallel: that is where the segment premium is measured).
- UDHR (`udhr`): title, preamble and articles 1-24 train, articles 25-30 test, per language.
- English: Gutenberg (`gutenberg`) and WikiText-2 valid (`wikitext2-valid`, the domain of the held-out text)
  train, WikiText-2 test (`wikitext2-test`) is held out; the English sides of Tatoeba's train lines train too.

`load_splits(languages)` returns a Splits: per language, train text and test text (str, lines joined by
newlines), and the parallel Tatoeba test pairs. Any corpus argument may be an asset name or a path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from tokbench.assets import iter_documents
from tokbench.assets.corpus import iter_tatoeba
from tokbench.errors import TokbenchError
from tokbench.fairness import udhr_sections

ENGLISH = "eng"
# English plus the eight non-English MAGNET/FLEXITOKENS languages present in Tatoeba
DEFAULT_LANGUAGES = ("eng", "fra", "spa", "rus", "ukr", "bel", "hin", "ben", "tel")
TATOEBA_TRAIN_FRACTION = 0.8
UDHR_TRAIN_LAST_ARTICLE = 24


@dataclass
class Splits:
    train: dict[str, str] = field(default_factory=dict)
    test: dict[str, str] = field(default_factory=dict)
    # language -> [(sentence, English sentence)] of Tatoeba's test lines
    parallel_test: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # the same for the train lines (priors come from these: no test text)
    parallel_train: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    def train_bytes(self) -> dict[str, int]:
        return {k: len(v.encode("utf-8")) for k, v in self.train.items()}


def tatoeba_cut(n_lines: int) -> int:
    """Number of train lines of a Tatoeba file with n_lines (the first 80 %)."""
    return int(n_lines * TATOEBA_TRAIN_FRACTION)


def _udhr_is_train(key: str) -> bool:
    return not key.isdigit() or int(key) <= UDHR_TRAIN_LAST_ARTICLE


def load_splits(languages=DEFAULT_LANGUAGES, *, tatoeba: str | os.PathLike = "tatoeba",
                udhr: str | os.PathLike | None = "udhr",
                english_train: str | os.PathLike | Sequence[str | os.PathLike] | None = ("gutenberg", "wikitext2-valid"),
                english_test: str | os.PathLike | None = "wikitext2-test",
                english_train_bytes: int | None = 4_000_000) -> Splits:
    """The splits for `languages` (Tatoeba codes, e.g. eng, fra, hin; 'all' for every Tatoeba language).
    `english_train`: one corpus or several (each read up to english_train_bytes)."""
    langs = list(dict.fromkeys(languages))
    every = "all" in langs
    one = english_train is None or isinstance(english_train, (str, os.PathLike))
    english_corpora = [] if english_train is None else [english_train] if one else list(english_train)
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    s = Splits(sources={"tatoeba": str(tatoeba), "udhr": str(udhr),
                        "english_train": str(english_train) if one else [str(x) for x in english_corpora],
                        "english_test": str(english_test), "tatoeba_train_fraction": TATOEBA_TRAIN_FRACTION,
                        "udhr_train_articles": f"title, preamble, 1-{UDHR_TRAIN_LAST_ARTICLE}"})
    seen_eng_train: dict[str, None] = {}
    seen_eng_test: dict[str, None] = {}
    found = set()
    for t in iter_tatoeba(tatoeba):
        if not every and t.lang not in langs:
            continue
        found.add(t.lang)
        cut = tatoeba_cut(len(t.lines))
        pairs = list(zip(t.lines, t.english_lines))
        s.parallel_train[t.lang] = pairs[:cut]
        s.parallel_test[t.lang] = pairs[cut:]
        train.setdefault(t.lang, []).extend(t.lines[:cut])
        test.setdefault(t.lang, []).extend(t.lines[cut:])
        seen_eng_train.update(dict.fromkeys(t.english_lines[:cut]))
        seen_eng_test.update(dict.fromkeys(t.english_lines[cut:]))
    missing = [x for x in langs if x not in found and x not in (ENGLISH, "all")]
    if missing:
        raise TokbenchError(f"no Tatoeba file for {', '.join(missing)}", path=str(tatoeba),
                            fix="pass languages that have a tatoeba.XXX-eng.XXX file")
    if ENGLISH in langs or every:
        # an English line that is also a test line of another pair stays out of training
        train[ENGLISH] = [x for x in seen_eng_train if x not in seen_eng_test]
        test[ENGLISH] = list(seen_eng_test)
    if udhr is not None:
        sections = udhr_sections(udhr)
        if sections:
            eng_units = next(iter(sections.values()))
            for code in list(train):
                if code == ENGLISH:
                    units = [(k, b) for k, _, b in eng_units]
                elif code in sections:
                    units = [(k, a) for k, a, _ in sections[code]]
                else:
                    continue
                train[code].extend(txt for k, txt in units if _udhr_is_train(k))
                test[code].extend(txt for k, txt in units if not _udhr_is_train(k))
    if ENGLISH in train:
        for corpus in english_corpora:
            train[ENGLISH].extend(iter_documents(corpus, limit_bytes=english_train_bytes))
        if english_test is not None:
            test[ENGLISH].extend(iter_documents(english_test, limit_bytes=english_train_bytes))
    s.train = {k: "\n".join(v) for k, v in train.items() if v}
    s.test = {k: "\n".join(v) for k, v in test.items() if v}
    return s


__all__ = ["Splits", "load_splits", "DEFAULT_LANGUAGES", "ENGLISH", "tatoeba_cut"]
