"""The hand-written pre-tokenizer of the built-in patterns splits exactly like the regex.

Reference: fancy-regex (a backtracking engine, lookahead included) running the pattern text
itself. Checked on every line of every shared corpus and on generated Unicode strings.
"""
from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings, strategies as st

from tokbench.bpe import BPE
from tokbench.bpe.encoding import HF_BYTELEVEL_REGEX
from tokbench.errors import TokbenchError
from tokbench.vocab.patterns import PATTERNS

from bpe_corpora import lines
from fuzz_strings import random_strings

HAND_PATTERNS = {"gpt2": PATTERNS["gpt2"], "gpt2-hf": HF_BYTELEVEL_REGEX, "llama3": PATTERNS["llama3"],
                 "qwen2": PATTERNS["qwen2"], "o200k": PATTERNS["o200k"]}
CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "tinystories", "gsm8k-train",
           "gsm8k-test", "code-python", "code-rust", "code-cpp", "udhr", "tatoeba", "gutenberg",
           "bible-mark"]
BYTES = {bytes([i]): i for i in range(256)}


@functools.lru_cache(maxsize=None)
def _splitter(pattern: str, engine: str) -> BPE:
    return BPE.from_ranks(BYTES, pattern, engine=engine)


def test_builtin_patterns_pick_the_hand_engine():
    for name, regex in HAND_PATTERNS.items():
        assert _splitter(regex, "auto").engine == "hand", name
    # anything else keeps a regex engine, even a one-character change
    assert _splitter(PATTERNS["llama3"].replace("{1,3}", "{1,2}"), "auto").engine == "fast+fixup"
    assert _splitter(PATTERNS["o200k"].replace(r"[\r\n/]*", r"[\r\n]*"), "auto").engine == "fast+fixup"
    with pytest.raises(TokbenchError, match="built-in patterns"):
        _splitter(PATTERNS["whitespace"], "hand")


@pytest.mark.assets
@pytest.mark.parametrize("corpus", CORPORA)
def test_every_corpus_line_like_the_regex(corpus, require_asset):
    texts = lines(corpus, require_asset(corpus))
    assert texts
    for name, regex in HAND_PATTERNS.items():
        hand, fancy = _splitter(regex, "hand"), _splitter(regex, "fancy")
        bad = [t for t in texts if hand.pre_tokenize(t) != fancy.pre_tokenize(t)]
        assert not bad, f"{name}: {len(bad)} of {len(texts)} lines differ, first {bad[0]!r}: " \
                        f"{hand.pre_tokenize(bad[0])} vs {fancy.pre_tokenize(bad[0])}"


# Characters of every class the patterns tell apart: letters of many scripts and both cases
# (and the long s, which `(?i)` folds onto s), marks, numbers of several kinds, punctuation and
# symbols, apostrophes, whitespace of several kinds, \r and \n.
_SCRIPTS = "aZsStTrReEvVmMlLdDſKéßǅʰЖжΩω中日한ععहक่ก"
_NUMBERS = "0123456789٣४½²Ⅻ①"
_MARKS = "\u0301\u0308\u094d\u0e48\u200d"
_PUNCT = "''.,;:!?-_/\\\"()[]{}<>@#$%^&*+=~`|«»“”…—😀🎉\u00ad\ufeff\x00\x7f"
_SPACES = " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2009\u200b\u2028\u2029\u202f\u205f\u3000\u0085"
_CHARS = st.sampled_from(list(_SCRIPTS + _NUMBERS + _MARKS + _PUNCT + _SPACES))
_CONTRACTIONS = st.sampled_from(["'s", "'S", "'ſ", "'t", "'re", "'RE", "'rE", "'ve", "'m", "'ll", "'lL",
                                 "'d", "'D", "''", "'x", " '", "\r\n", "\n\n", "  ", "123456"])
MIXED = st.lists(st.one_of(_CHARS, _CONTRACTIONS), max_size=40).map("".join)


@settings(max_examples=1500, deadline=None)
@given(text=st.one_of(MIXED, st.text(max_size=60)))
def test_generated_strings_like_the_regex(text):
    for name, regex in HAND_PATTERNS.items():
        pieces = _splitter(regex, "hand").pre_tokenize(text)
        assert pieces == _splitter(regex, "fancy").pre_tokenize(text), name
        assert "".join(pieces) == text



def test_ascii_letter_runs_of_every_length_like_the_regex():
    """Letter runs are skipped eight ASCII bytes at a time: runs of 1-24 ASCII letters, ending at the
    text's end or before each kind of character (a non-ASCII letter continues the run), at every
    offset from the start."""
    rng = random.Random(24)
    after = ["", "é", "ж", "中", "\u0301", "1", "٣", " ", "\n", "'s", ".", "@", "[", "`", "{", "\x7f", "😀"]
    texts = []
    for n in range(1, 25):
        for a in after:
            word = "".join(rng.choice("azAZmqMQ") for _ in range(n))
            for lead in ("", " ", "x", "é", "1 ", "  "):
                texts.append(lead + word + a)
                texts.append(lead + word + a + word[::-1])
    for name in ("gpt2", "gpt2-hf", "llama3", "qwen2"):
        bad = _differ(name, texts)
        assert not bad, f"{name}: {len(bad)} differ, first {bad[0]!r}"


def _differ(name: str, texts: list[str]) -> list[str]:
    hand, fancy = _splitter(HAND_PATTERNS[name], "hand"), _splitter(HAND_PATTERNS[name], "fancy")
    return [t for t in texts if hand.pre_tokenize(t) != fancy.pre_tokenize(t)]


def test_o200k_fuzz_strings_like_the_regex():
    """o200k's case-split words backtrack (marks and Lm/Lo are in both case classes): the seeded
    strings of the differential fuzzer, plus words of random case over letters of every kind."""
    texts = random_strings(15, 4000)
    rng = random.Random(15)
    letters = "aZzQǅǄǆʰˆ中ا\u0301\u0308\u094d'sStT ./\n"
    texts += ["".join(rng.choice(letters) for _ in range(rng.randrange(1, 16))) for _ in range(4000)]
    bad = _differ("o200k", texts)
    assert not bad, f"{len(bad)} differ, first {bad[0]!r}"


@pytest.mark.assets
def test_o200k_multilingual_sample_like_the_regex(require_asset):
    """Every UDHR paragraph of every language (scripts with marks, titlecase, Lm/Lo letters)."""
    texts = lines("udhr", require_asset("udhr"))
    assert len(texts) > 1000
    bad = _differ("o200k", texts)
    assert not bad, f"{len(bad)} of {len(texts)} differ, first {bad[0]!r}"
