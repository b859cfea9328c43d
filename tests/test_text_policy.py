"""The text policy (tokbench.text: lone surrogates -> U+FFFD, as tiktoken) everywhere text enters, the
bounded thread pools of the Rust core, and the seeded differential fuzz share of the test suite
(100,000 string comparisons against tiktoken and HF tokenizers; benchmarks/fuzz_encode.py runs >= 1M)."""
from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path

import pytest

from tokbench import _core
from tokbench.bpe import BPE
from tokbench.errors import TokbenchError
from tokbench.limits import LimitError
from tokbench.text import clean, has_surrogates
from tokbench.vocab.patterns import PATTERNS

from fuzz_strings import random_strings

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")

SURROGATE_TEXTS = ["\ud800", "hello \ud800 world", "a\ud83d\ude00b", "\udc00\ud800", "x\ud800\ud800\udc00y",
                   "\udfff", "\ud83d", " \ud800\ud800\ud800 ", "123\udc00456", "<|endoftext|>\ud800", "\u0819\u08d1\ud800",
                   "\ud800" * 3000 + "long"]


@functools.lru_cache(maxsize=None)
def _ours(path: str, pattern: str | None = None) -> BPE:
    if pattern is None:
        return BPE.from_file(path)
    from tiktoken.load import load_tiktoken_bpe

    return BPE.from_ranks(load_tiktoken_bpe(path), pattern, {}, name=f"{Path(path).name}+{pattern}")


@functools.lru_cache(maxsize=None)
def _tiktoken(path: str, pattern: str):
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(f"ref-{pattern}", pat_str=PATTERNS[pattern], mergeable_ranks=load_tiktoken_bpe(path),
                             special_tokens={})


@functools.lru_cache(maxsize=None)
def _hf(path: str):
    p = Path(path)
    return tokenizers.Tokenizer.from_file(str(p / "tokenizer.json" if p.is_dir() else p))


# ---- the policy itself ---------------------------------------------------------------------------
def test_clean_is_tiktokens_rule():
    assert clean("\ud800") == "\ufffd"
    assert clean("a\ud83d\ude00b") == "a😀b"  # a pair written as two code points is its character
    assert clean("\udc00\ud800") == "\ufffd\ufffd"
    assert clean("x\ud800\ud800\udc00y") == "x\ufffd\U00010000y"
    text = "plain text, é 中 😀"
    assert clean(text) is text and not has_surrogates(text)
    for t in SURROGATE_TEXTS:
        assert not has_surrogates(clean(t))
        clean(t).encode("utf-8")  # valid UTF-8 now


# ---- BPE: every entry point agrees with tiktoken on surrogate strings ------------------------------
@pytest.mark.assets
@pytest.mark.parametrize("asset,pattern", [("gpt2-tiktoken", "gpt2"), ("llama3", "llama3")])
def test_bpe_surrogates_like_tiktoken(asset, pattern, require_asset):
    path = str(require_asset(asset))
    ours, ref = _ours(path), _tiktoken(path, pattern)
    if asset == "gpt2-tiktoken":
        assert ours.encode("\ud800") == ref.encode("\ud800") == [4210]
    for t in SURROGATE_TEXTS:
        want = ref.encode_ordinary(t)
        assert ours.encode_ordinary(t) == want, repr(t)
        assert ours.encode(t, disallowed_special=()) == ref.encode(t, disallowed_special=()) == want
        assert ours.pre_tokenize(t) == ours.pre_tokenize(clean(t))
    assert ours.encode_batch(SURROGATE_TEXTS, disallowed_special=()) == ref.encode_batch(SURROGATE_TEXTS)
    assert ours.encode_ordinary_batch(SURROGATE_TEXTS) == ref.encode_ordinary_batch(SURROGATE_TEXTS)


@pytest.mark.assets
@pytest.mark.parametrize("asset", ["gpt2", "qwen3"])
def test_bpe_surrogates_like_tokenizers_on_the_clean_text(asset, require_asset):
    """`tokenizers` refuses such strings outright; tokbench gives its ids of the cleaned text."""
    path = str(require_asset(asset))
    ours, hf = _ours(path), _hf(path)
    with pytest.raises(TypeError):
        hf.encode_batch(["\ud800"])
    want = [e.ids for e in hf.encode_batch([clean(t) for t in SURROGATE_TEXTS], add_special_tokens=False)]
    assert ours.encode_batch(SURROGATE_TEXTS, allowed_special="all", disallowed_special=()) == want
    assert [ours.encode(t, allowed_special="all", disallowed_special=()) for t in SURROGATE_TEXTS] == want


def test_rust_str_arguments_follow_the_policy():
    enc = _core.BpeEncoder([(bytes([i]), i) for i in range(256)], None, pattern=PATTERNS["gpt2"])
    fffd = list("\ufffd".encode("utf-8"))
    assert enc.encode_ordinary("\ud800") == fffd
    assert enc.encode("a\ud800", []) == [97] + fffd
    assert enc.encode_batch(["\udc00", "ok"], [], 1) == [fffd, [111, 107]]
    assert enc.split("a \ud800") == ["a", " \ufffd"]
    counter = _core.BpeCounter(PATTERNS["gpt2"])
    counter.count(["hi \ud800", "hi"], 1)
    assert dict(counter.items()) == {b"hi": 2, " \ufffd".encode(): 1}
    assert _core.token_bytes(["\ud800x"], "utf8") == ["\ufffdx".encode()]


# ---- readers and encoders of every library ----------------------------------------------------------
def test_corpus_readers_replace_lone_surrogates(tmp_path):
    from tokbench.assets import iter_documents, record_text

    p = tmp_path / "s.jsonl"
    p.write_text('{"text": "hello \\ud800 world"}\n{"question": "q\\udc00", "answer": "\\ud83d\\ude00"}\n',
                 encoding="utf-8")
    assert list(iter_documents(p)) == ["hello \ufffd world", "q\ufffd\n😀"]
    assert record_text({"text": ["\ud800", "b"]}, "text") == "\ufffd\nb"


@pytest.mark.assets
@pytest.mark.parametrize("name", ["gpt2", "gpt2-tiktoken", "llama2", "bert"])
@pytest.mark.parametrize("fast", [True, False])
def test_metrics_encoders_replace_lone_surrogates(name, fast, require_asset):
    """Every library path (tokenizers, tiktoken, sentencepiece, and the fast path) sees the clean text."""
    from tokbench.metrics import load_encoder

    e = load_encoder(require_asset(name), fast=fast)
    assert e.encode(SURROGATE_TEXTS) == e.encode([clean(t) for t in SURROGATE_TEXTS])


# ---- threads ------------------------------------------------------------------------------------
def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.assets
def test_thread_pools_are_shared_and_bounded(require_asset):
    bpe = _ours(str(require_asset("gpt2-tiktoken")))
    texts = ["hello world, again and again"] * 2000
    want = bpe.encode_batch(texts[:3])
    cores = os.cpu_count() or 1
    bpe.encode_batch(texts, num_threads=0)  # the global pool exists from here on
    before = _threads()
    for n in list(range(1, 21)) * 2 + [10 ** 6, 10 ** 9]:
        assert bpe.encode_batch(texts, num_threads=n)[:3] == want
        assert bpe.encode_ordinary_batch(texts[:50], num_threads=n)[:3] == want
    # at most 4 pools of fewer threads than the cores stay alive; counts >= cores share the global pool
    assert _threads() - before <= 4 * max(cores - 1, 0), (before, _threads())


def test_thread_counts_are_validated():
    enc = _core.BpeEncoder([(bytes([i]), i) for i in range(256)], None)
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        enc.encode_batch(["a"], [], -1)
    bpe = BPE(enc, name="bytes", pattern=None)
    for bad in (-1, 1.5, "4", True):
        with pytest.raises(LimitError, match="num_threads"):
            bpe.encode_batch(["a"], num_threads=bad)
        with pytest.raises(LimitError, match="num_threads"):
            bpe.encode_ordinary_batch(["a"], num_threads=bad)
    assert issubclass(LimitError, ValueError) and issubclass(LimitError, TokbenchError)
    seg = _core.Segmenter.bpe_ranks([bytes([i]) for i in range(256)], list(range(256)), "bytes")
    with pytest.raises(ValueError, match="num_threads"):
        seg.segment_batch([b"a"], None, -1)
    assert seg.segment_batch([b"ab"] * 10, None, 10 ** 6) == [[97, 98]] * 10


# ---- the fuzz share of the suite: 5 references x 20,000 seeded strings = 100,000 comparisons ------------
FUZZ_N = 20_000


@pytest.mark.assets
@pytest.mark.parametrize("asset,pattern", [("gpt2-tiktoken", "gpt2"), ("llama3", "llama3"), ("llama3", "qwen2")])
def test_fuzz_like_tiktoken(asset, pattern, require_asset):
    """qwen2 (Qwen 2/3's split) over the Llama 3 ranks; o200k runs in benchmarks/fuzz_encode.py."""
    path = str(require_asset(asset))
    ours = _ours(path) if (asset, pattern) != ("llama3", "qwen2") else _ours(path, pattern)
    texts = random_strings(zlib.crc32(f"{asset}/{pattern}".encode()), FUZZ_N)
    got, want = ours.encode_ordinary_batch(texts), _tiktoken(path, pattern).encode_ordinary_batch(texts)
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first {bad[0]!r}"


@pytest.mark.assets
@pytest.mark.parametrize("asset", ["gpt2", "qwen3"])
def test_fuzz_like_tokenizers(asset, require_asset):
    path = str(require_asset(asset))
    texts = random_strings(zlib.crc32(asset.encode()), FUZZ_N)
    got = _ours(path).encode_batch(texts, allowed_special="all", disallowed_special=())
    want = [e.ids for e in _hf(path).encode_batch([clean(t) for t in texts], add_special_tokens=False)]
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first {bad[0]!r}"
