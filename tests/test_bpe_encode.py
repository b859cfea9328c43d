"""tokbench.bpe: ids identical to tiktoken (rank files) and to HF tokenizers (tokenizer.json)."""
from __future__ import annotations

import functools
import json
import random
import threading
import time

import pytest

from tokbench.bpe import BPE, DisallowedSpecialError
from tokbench.errors import TokbenchError
from tokbench.vocab.patterns import PATTERNS

from bpe_corpora import lines

tiktoken = pytest.importorskip("tiktoken")
tokenizers = pytest.importorskip("tokenizers")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "gsm8k-train", "code-python",
           "code-rust", "code-cpp", "tatoeba", "udhr"]
RANK_FILES = {"gpt2-tiktoken": "gpt2", "llama3": "llama3"}
HF_FILES = ["gpt2", "llama3-hf", "qwen3", "smollm2"]


# ---- loaders (cached across tests) ----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _ours(path: str) -> BPE:
    return BPE.from_file(path)


@functools.lru_cache(maxsize=None)
def _tiktoken(path: str, pattern: str):
    from tiktoken.load import load_tiktoken_bpe

    ours = _ours(path)
    return tiktoken.Encoding(f"ref-{pattern}", pat_str=PATTERNS[pattern],
                             mergeable_ranks=load_tiktoken_bpe(path), special_tokens=ours.special_tokens)


@functools.lru_cache(maxsize=None)
def _hf(path: str):
    from pathlib import Path

    p = Path(path)
    return tokenizers.Tokenizer.from_file(str(p / "tokenizer.json" if p.is_dir() else p))


@functools.lru_cache(maxsize=None)
def _lines(name: str, path: str) -> tuple[str, ...]:
    from pathlib import Path

    return tuple(lines(name, Path(path)))


def _first_diff(texts, ours, ref) -> str:
    for t, a, b in zip(texts, ours, ref):
        if a != b:
            return f"{t!r}: ours {a} ref {b}"
    return ""


# ---- exactness on the shared corpora --------------------------------------------------------
@pytest.mark.assets
@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("asset", list(RANK_FILES))
def test_identical_to_tiktoken(asset, corpus, require_asset):
    path = str(require_asset(asset))
    texts = list(_lines(corpus, str(require_asset(corpus))))
    ours = _ours(path).encode_ordinary_batch(texts, num_threads=2)
    ref = _tiktoken(path, RANK_FILES[asset]).encode_ordinary_batch(texts, num_threads=2)
    assert len(ours) == len(ref) == len(texts)
    bad = sum(a != b for a, b in zip(ours, ref))
    assert bad == 0, f"{bad} of {len(texts)} lines differ; first: {_first_diff(texts, ours, ref)}"


@pytest.mark.assets
@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("asset", HF_FILES)
def test_identical_to_tokenizers(asset, corpus, require_asset):
    path = str(require_asset(asset))
    texts = list(_lines(corpus, str(require_asset(corpus))))
    ours = _ours(path).encode_batch(texts, num_threads=2, allowed_special="all")
    ref = [e.ids for e in _hf(path).encode_batch(texts, add_special_tokens=False)]
    bad = sum(a != b for a, b in zip(ours, ref))
    assert bad == 0, f"{bad} of {len(texts)} lines differ; first: {_first_diff(texts, ours, ref)}"


@pytest.mark.assets
@pytest.mark.parametrize("asset", list(RANK_FILES))
def test_whole_documents_and_specials_like_tiktoken(asset, require_asset):
    path = str(require_asset(asset))
    ours, ref = _ours(path), _tiktoken(path, RANK_FILES[asset])
    doc = (require_asset("wikitext2-test")).read_text(encoding="utf-8")[:300_000]
    assert ours.encode_ordinary(doc) == ref.encode_ordinary(doc)
    special = next(iter(ours.special_tokens))
    text = f"hello{special} world {special}{special}\n"
    assert ours.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    assert ours.encode(text, disallowed_special=()) == ref.encode(text, disallowed_special=())
    with pytest.raises(DisallowedSpecialError, match="allowed_special"):
        ours.encode(text)
    with pytest.raises(ValueError):  # tiktoken's exception type too
        ours.encode(text)
    assert ours.decode(ours.encode(text, allowed_special="all")) == text


@pytest.mark.assets
@pytest.mark.parametrize("asset", HF_FILES)
def test_tokenizer_json_profile(asset, require_asset):
    ours = _ours(str(require_asset(asset)))
    hf = _hf(str(require_asset(asset)))
    assert ours.n_vocab == hf.get_vocab_size(with_added_tokens=True)
    assert ours.engine == "hand"  # every shared tokenizer.json uses a built-in split pattern
    for tok, i in ours.special_tokens.items():
        assert hf.token_to_id(tok) == i


# ---- property tests -------------------------------------------------------------------------
WS_HEAVY = st.text(alphabet=st.sampled_from(list(" \t\n\r\u00a0\u3000\u2028ab'sLL12é,.!-\u0301")),
                   max_size=60)


@pytest.mark.assets
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_roundtrip_any_unicode(text, require_asset):
    for asset in ("llama3", "gpt2-tiktoken"):
        ours = _ours(str(require_asset(asset)))
        assert ours.decode(ours.encode_ordinary(text)) == text
        assert ours.decode_bytes(ours.encode_ordinary(text)) == text.encode("utf-8")


@pytest.mark.assets
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=120), WS_HEAVY))
def test_random_strings_like_tiktoken(text, require_asset):
    for asset, pattern in RANK_FILES.items():
        path = str(require_asset(asset))
        assert _ours(path).encode_ordinary(text) == _tiktoken(path, pattern).encode_ordinary(text)


@pytest.mark.assets
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=120), WS_HEAVY,
                      st.text(alphabet=st.sampled_from(list("0123 ٣½²a\u0301e\u0308")), max_size=40)))
def test_random_strings_like_tokenizers(text, require_asset):
    for asset in HF_FILES:
        path = str(require_asset(asset))
        ref = _hf(path).encode(text, add_special_tokens=False).ids
        assert _ours(path).encode(text, allowed_special="all") == ref, asset


@functools.lru_cache(maxsize=None)
def _splitter(name: str, engine: str) -> BPE:
    return BPE.from_ranks({bytes([i]): i for i in range(256)}, name, engine=engine)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=80), WS_HEAVY))
def test_fast_splitter_equals_fancy_regex(text):
    """The regex fast path with the `\\s+(?!\\S)` fix-up splits like the backtracking engine."""
    for name in ("gpt2", "llama3", "qwen2", "o200k", "whitespace"):
        fast, fancy = _splitter(name, "fast"), _splitter(name, "fancy")
        assert fast.engine == "fast+fixup" and fancy.engine == "fancy"
        assert fast.pre_tokenize(text) == fancy.pre_tokenize(text), name
        assert "".join(fast.pre_tokenize(text)) == text


# ---- long inputs: time linear in length -----------------------------------------------------
def _long_cases(n: int) -> dict[str, str]:
    rng = random.Random(n)
    return {
        "one letter": "a" * n,
        "digits": "".join(rng.choice("0123456789") for _ in range(n)),
        "no whitespace": "".join(rng.choice("abcXYZ.,;!?-_/()0123") for _ in range(n)),
    }


def _best_time(f, text: str, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f(text)
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.assets
@pytest.mark.parametrize("asset", ["gpt2-tiktoken", "llama3"])
def test_long_inputs_linear_time(asset, require_asset):
    ours = _ours(str(require_asset(asset)))
    small, big = _long_cases(100_000), _long_cases(1_000_000)
    for case in big:
        t_small = _best_time(ours.encode_ordinary, small[case])
        t_big = _best_time(ours.encode_ordinary, big[case])
        ratio = t_big / t_small
        print(f"{asset} {case}: 100 KB {t_small:.3f} s, 1 MB {t_big:.3f} s, ratio {ratio:.2f}")
        assert ours.decode(ours.encode_ordinary(big[case][:5000])) == big[case][:5000]
        # 10x the length: linear -> 10, quadratic -> 100; the bound leaves 3x room for cache
        # effects and a shared 2-core machine while still failing anything quadratic
        assert ratio < 30, f"{case}: 1 MB took {ratio:.1f}x the time of 100 KB"
        assert t_big < 5.0


# ---- threads --------------------------------------------------------------------------------
@pytest.mark.assets
def test_thread_safety(require_asset):
    path = str(require_asset("llama3"))
    ours = _ours(path)
    texts = list(_lines("tinyshakespeare", str(require_asset("tinyshakespeare"))))[:8000]
    expected = [ours.encode_ordinary(t) for t in texts]
    results: dict[int, object] = {}

    def work(k: int):
        if k % 2:
            results[k] = ours.encode_batch(texts, num_threads=2)
        else:
            results[k] = [ours.encode_ordinary(t) for t in texts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(6))


# ---- no assets needed -----------------------------------------------------------------------
def _toy() -> BPE:
    ranks = {bytes([i]): i for i in range(256)}
    for tok in (b"ab", b"bc", b"abc", b" a", b"aa"):
        ranks[tok] = len(ranks)
    return BPE.from_ranks(ranks, "gpt2", {"<|end|>": len(ranks)})


def test_toy_rank_bpe_and_specials():
    bpe = _toy()
    assert bpe.n_vocab == 262
    assert bpe.encode_ordinary("abc") == [258]
    assert bpe.encode_ordinary("aaa") == [260, 97]  # leftmost pair on ties
    assert bpe.encode("abc<|end|>", allowed_special="all") == [258, 261]
    assert bpe.encode("abc<|end|>", disallowed_special=()) == bpe.encode_ordinary("abc<|end|>")
    with pytest.raises(DisallowedSpecialError):
        bpe.encode("x<|end|>")
    with pytest.raises(TokbenchError, match="not a special token"):
        bpe.encode("x", allowed_special={"<|nope|>"})
    assert bpe.decode_bytes([258, 261]) == b"abc<|end|>"
    assert bpe.decode([0xC3]) == "\ufffd"
    with pytest.raises(TokbenchError, match="cannot decode"):
        bpe.decode([10**6])
    long = "abcaab" * 5000
    assert bpe.encode_ordinary(long) == bpe.encode_batch([long], num_threads=1)[0]
    assert bpe.decode(bpe.encode_ordinary(long)) == long


def test_unknown_pattern_name_is_one_line_error():
    with pytest.raises(TokbenchError) as info:
        BPE.from_ranks({bytes([i]): i for i in range(256)}, "gpt3")
    assert "unknown split pattern name 'gpt3'" in str(info.value) and "\n" not in str(info.value)


def test_non_byte_level_tokenizer_json_is_refused(tmp_path):
    wordpiece = {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]",
                           "continuing_subword_prefix": "##", "max_input_chars_per_word": 100},
                 "pre_tokenizer": {"type": "BertPreTokenizer"}, "added_tokens": []}
    metaspace = {"model": {"type": "BPE", "vocab": {"▁a": 0, "a": 1, "▁": 2}, "merges": ["▁ a"]},
                 "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}, "added_tokens": []}
    for i, data in enumerate((wordpiece, metaspace)):
        p = tmp_path / f"t{i}.json"
        p.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(TokbenchError, match="not a byte-level BPE") as info:
            BPE.from_file(p)
        assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_tiktoken_file_without_known_pattern(tmp_path):
    import base64

    p = tmp_path / "tiny.tiktoken"
    p.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    with pytest.raises(TokbenchError, match="pass pattern="):
        BPE.from_file(p)
    assert BPE.from_file(p, "whitespace").encode_ordinary("hi there") == list(b"hi there")
