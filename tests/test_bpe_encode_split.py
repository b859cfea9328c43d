"""tokbench.bpe: one long text on several threads (cut at known pre-token boundaries) and ids as a
numpy array give exactly the ids of the plain one-thread call, and of tiktoken."""
from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tokbench.bpe import BPE

from bpe_corpora import documents

tiktoken = pytest.importorskip("tiktoken")
ASSETS = ["gpt2-tiktoken", "llama3", "qwen3"]


@functools.lru_cache(maxsize=None)
def _ours(path: str) -> BPE:
    return BPE.from_file(path)


@functools.lru_cache(maxsize=None)
def _long_text(name: str, path: str) -> str:
    return "\n".join(documents(name, Path(path)))


@pytest.mark.assets
@pytest.mark.parametrize("corpus", ["wikitext2-test", "udhr", "code-python"])
@pytest.mark.parametrize("asset", ASSETS)
def test_split_threads_and_array_equal_one_thread(asset, corpus, require_asset):
    enc = _ours(str(require_asset(asset)))
    text = _long_text(corpus, str(require_asset(corpus)))[:600_000]
    want = enc.encode_ordinary(text)
    for n in (2, 3, 0):
        assert enc.encode_ordinary(text, num_threads=n) == want, n
    arr = enc.encode_ordinary(text, num_threads=2, as_array=True)
    assert arr.dtype == np.uint32 and not arr.flags.writeable
    assert arr.tolist() == want
    assert enc.encode_ordinary(text, as_array=True).tolist() == want


@pytest.mark.assets
def test_split_threads_like_tiktoken(require_asset):
    from tiktoken.load import load_tiktoken_bpe
    from tokbench.vocab.patterns import PATTERNS

    path = str(require_asset("gpt2-tiktoken"))
    ref = tiktoken.Encoding("ref", pat_str=PATTERNS["gpt2"], mergeable_ranks=load_tiktoken_bpe(path),
                            special_tokens={})
    text = _long_text("wikitext2-valid", str(require_asset("wikitext2-valid")))[:300_000]
    assert _ours(path).encode_ordinary(text, num_threads=2) == ref.encode_ordinary(text)


@functools.lru_cache(maxsize=None)
def _o200k_pair(path: str):
    """The Llama 3 ranks under the o200k pattern: tokbench (hand scanner) and tiktoken."""
    from tiktoken.load import load_tiktoken_bpe
    from tokbench.vocab.patterns import PATTERNS

    ranks = load_tiktoken_bpe(path)
    ours = BPE.from_ranks(ranks, "o200k", {})
    assert ours.engine == "hand"
    return ours, tiktoken.Encoding("ref-o200k", pat_str=PATTERNS["o200k"], mergeable_ranks=ranks, special_tokens={})


@pytest.mark.assets
def test_split_threads_o200k_like_tiktoken(require_asset):
    ours, ref = _o200k_pair(str(require_asset("llama3")))
    text = (_long_text("udhr", str(require_asset("udhr")))[:300_000]
            + _long_text("wikitext2-valid", str(require_asset("wikitext2-valid")))[:200_000])
    want = ref.encode_ordinary(text)
    for n in (2, 3):
        assert ours.encode_ordinary(text, num_threads=n) == want, n


WORDS = ["a", "it's", "don't", "'ll", "Zz", "é", "中文", " ", "  ", "\n", "\r\n", "12345", "½", "!!", "'", "x",
         "HELLO", "ABc", "DON'T", "x\u0301", "ʰA", "/"]


@pytest.mark.assets
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), n=st.integers(2000, 6000))
def test_split_threads_on_generated_text(seed, n, require_asset):
    # at least 4 KB per thread: the text really is cut
    rng = random.Random(seed)
    text = rng.choice(["", " ", "'"]).join(rng.choice(WORDS) for _ in range(n))
    for asset in ("gpt2-tiktoken", "llama3"):
        enc = _ours(str(require_asset(asset)))
        assert enc.encode_ordinary(text, num_threads=2) == enc.encode_ordinary(text)
    o200k, _ = _o200k_pair(str(require_asset("llama3")))
    assert o200k.encode_ordinary(text, num_threads=2) == o200k.encode_ordinary(text)


@pytest.mark.assets
def test_bad_thread_count(require_asset):
    enc = _ours(str(require_asset("gpt2-tiktoken")))
    with pytest.raises(ValueError):
        enc.encode_ordinary("x", num_threads=-1)  # ValueError (LimitError on the NFC path)
