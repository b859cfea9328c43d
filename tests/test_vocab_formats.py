"""Formats and conventions real models ship with, checked against the libraries that define them on
the shared corpora:

- Gemma-style tokenizer.json (metaspace from a `Replace(" ", "▁")` normalizer, no pre-tokenizer, no
  dummy prefix, whitespace-run tokens in the merges, byte fallback with a literal tab, `<unusedN>`):
  token bytes and segmentation against `tokenizers`; align and transplant on either side.
- Mistral's tekken.json (built here from the real Llama 3 and GPT-2 tiktoken ranks): ids of
  `tokbench.bpe.BPE` and of the written tokenizer.json against tiktoken over the same ranks and pattern;
  align and transplant on either side.
- Placeholder and control kinds (`<unusedN>`, `<|reserved_special_token_N|>`, `[control_N]`): never
  normal tokens, never shared (so never OMP anchors).
- The `tokenizers` call that differs in 1.0 (padding / truncation off) on both APIs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpe_corpora import lines
from corpus_samples import exactness_texts, udhr_texts
from format_tokenizers import GEMMA_CONTROL, GEMMA_UNUSED, TEKKEN_PATTERN, gemma_style, write_tekken
from tokbench.errors import TokbenchError
from tokbench.vocab import Kind, align, align_report, inspect_report, load_vocabulary

TEKKEN_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]


@pytest.fixture(scope="module")
def corpus_texts(require_asset) -> list[tuple[str, str]]:
    """UDHR (120 languages), code in three languages, GSM8K: as in tests/test_vocab_exactness.py."""
    return exactness_texts(require_asset)


# --- Gemma style ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma(tmp_path_factory, require_asset) -> Path:
    train = (lines("wikitext2-valid", require_asset("wikitext2-valid"))[:1500]
             + lines("code-python", require_asset("code-python"))[:6000])
    return gemma_style(tmp_path_factory.mktemp("gemma") / "tok", train).parent


@pytest.fixture(scope="module")
def gemma_lib(gemma):
    from tokbench.vocab.hf_json import open_hf_tokenizer

    return open_hf_tokenizer(gemma / "tokenizer.json")


def test_gemma_style_is_the_convention_of_the_issue(gemma, gemma_lib):
    data = json.loads((gemma / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["pre_tokenizer"] is None and data["normalizer"]["type"] == "Replace"
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["model"]["merges"]]
    assert ("\u2581\u2581", "\u2581\u2581") in merges  # whitespace runs are merged
    assert any(t["content"] == "\u2581" * 4 and not t["special"] for t in data["added_tokens"])
    assert "<0x09>" not in data["model"]["vocab"] and "\t" in data["model"]["vocab"]
    v = load_vocabulary(gemma)
    assert v.style.value == "metaspace" and not v.strip_leading_space
    ids = gemma_lib.token_to_id
    assert v.token_bytes[ids("\u2581" * 4)] == b"    " and v.kinds[ids("\u2581" * 4)] == Kind.NORMAL
    assert v.byte_fallback is not None and v.byte_fallback[9] == ids("\t") and v.kinds[ids("\t")] == Kind.NORMAL
    assert v.kind_counts["byte"] == 255
    assert {v.kinds[ids(t)] for t in GEMMA_UNUSED} == {Kind.UNUSED}
    assert {v.kinds[ids(t)] for t in GEMMA_CONTROL} == {Kind.CONTROL}
    assert {r: v.tokens[i] for r, i in v.specials.items()} == {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>",
                                                              "unk": "<unk>"}


def test_gemma_style_bytes_of_library_ids_give_library_text(gemma, gemma_lib, corpus_texts):
    v = load_vocabulary(gemma)
    encs = gemma_lib.encode_batch([t for _, t in corpus_texts], add_special_tokens=False)
    bad = [(w, t[:60]) for (w, t), e in zip(corpus_texts, encs)
           if v.decode(e.ids) != gemma_lib.decode(e.ids, skip_special_tokens=True)]
    assert not bad, f"{len(bad)}/{len(corpus_texts)} texts differ, first: {bad[0]}"
    # byte fallback was exercised (scripts the tokenizer was not trained on) and whitespace runs too
    used = {i for e in encs for i in e.ids}
    assert len(used & set(v.byte_fallback)) > 50 and gemma_lib.token_to_id("\u2581" * 4) in used


def test_gemma_style_segmentation_equals_library(gemma, gemma_lib, corpus_texts):
    # no pre-tokenizer: the model sees the whole text (spaces as "▁"), so the segmenter gets it whole
    v = load_vocabulary(gemma)
    texts = [t for _, t in corpus_texts]
    expected = [e.ids for e in gemma_lib.encode_batch(texts, add_special_tokens=False)]
    got = v.segment_batch([t.encode("utf-8") for t in texts])
    bad = [(w, e[:8], g[:8]) for (w, _), e, g in zip(corpus_texts, expected, got) if e != g]
    assert len(texts) > 1700
    assert not bad, f"{len(bad)}/{len(texts)} texts differ, first: {bad[0]}"


@pytest.mark.parametrize("other", ["gpt2", "llama2", "smollm2"])
def test_gemma_style_aligns_on_either_side(gemma, other, require_asset):
    g, o = load_vocabulary(gemma), load_vocabulary(require_asset(other))
    for old, new in ((g, o), (o, g)):
        a = align(old, new)
        assert len(a.shared) > 500
        for i in a.new_only:
            if i in a.uncovered:
                continue
            assert b"".join(old.token_bytes[j] for j in a.decompositions[i]) == old.surface(new.key(i))[0]
        # placeholders and control markup are never shared text (so never OMP anchors)
        textless = {i for i, k in enumerate(g.kinds) if k in (Kind.UNUSED, Kind.CONTROL)}
        side = a.shared if new is g else set(a.shared.values())
        assert not textless & set(side)
        align_report(a)


def test_placeholders_are_never_shared_between_two_gemma_style_vocabularies(gemma, tmp_path, require_asset):
    other = gemma_style(tmp_path / "other", lines("tinyshakespeare", require_asset("tinyshakespeare"))[:3000],
                        vocab_size=800)
    a = align(load_vocabulary(gemma), load_vocabulary(other))
    new = a.new
    unused = [i for i, k in enumerate(new.kinds) if k == Kind.UNUSED]
    assert [new.tokens[i] for i in unused] == GEMMA_UNUSED
    assert not set(unused) & (set(a.shared) | set(a.new_only) | set(a.special_map))
    # control markup keeps its row by content, like any special token
    assert all(a.special_map[new.tokens.index(t)] is not None for t in GEMMA_CONTROL)
    report = inspect_report(new)
    assert report["kinds"]["unused"] == 4 and report["kinds"]["control"] == 3


# --- tekken ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama3_ranks(require_asset) -> dict[bytes, int]:
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(require_asset("llama3")))


@pytest.fixture(scope="module")
def tekken(tmp_path_factory, llama3_ranks) -> Path:
    # 127,000 of the 128,000 Llama 3 ranks, 1,000 special ids (7 listed, then <SPECIAL_i> fillers)
    return write_tekken(tmp_path_factory.mktemp("tekken") / "tekken.json", llama3_ranks, inner=127000,
                        specials=TEKKEN_SPECIALS)


@pytest.fixture(scope="module")
def tekken_vocab(tekken):
    return load_vocabulary(tekken)


def _tiktoken(ranks: dict[bytes, int], inner: int):
    import tiktoken

    return tiktoken.Encoding("tekken-ref", pat_str=TEKKEN_PATTERN,
                             mergeable_ranks={b: r for b, r in ranks.items() if r < inner}, special_tokens={})


@pytest.fixture(scope="module")
def tekken_lines(require_asset) -> list[str]:
    out: list[str] = []
    for name, n in (("udhr", 6000), ("code-python", 2000), ("code-rust", 1000), ("wikitext2-test", 1000),
                    ("gsm8k-test", 500)):
        out += lines(name, require_asset(name))[:n]
    return out


def test_tekken_vocabulary(tekken_vocab, llama3_ranks):
    v = tekken_vocab
    assert (v.format, v.family, v.size) == ("tekken", "bpe", 128000)
    assert v.kind_counts == {"normal": 127000, "special": 3, "control": 4, "byte": 0, "unused": 993}
    assert [v.tokens[i] for i in range(7)] == TEKKEN_SPECIALS and v.tokens[999] == "<SPECIAL_999>"
    assert {r: v.tokens[i] for r, i in v.specials.items()} == {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}
    assert all(v.token_bytes[r + 1000] == b for b, r in llama3_ranks.items() if r < 127000)
    assert v.pattern == TEKKEN_PATTERN
    report = inspect_report(v)
    assert report["bytes"]["covers_all_bytes"] and report["kinds"]["unused"] == 993


def test_tekken_bpe_ids_equal_tiktoken(tekken, tekken_vocab, llama3_ranks, tekken_lines):
    from tokbench.bpe import BPE

    enc = BPE.from_file(tekken)
    assert enc.n_vocab == 128000 and enc.special_tokens["<s>"] == 1
    ref = _tiktoken(llama3_ranks, 127000)
    expected = [[i + 1000 for i in ids] for ids in ref.encode_ordinary_batch(tekken_lines)]
    got = enc.encode_ordinary_batch(tekken_lines)
    bad = [(t[:60], e[:6], g[:6]) for t, e, g in zip(tekken_lines, expected, got) if e != g]
    assert len(tekken_lines) > 10000
    assert not bad, f"{len(bad)}/{len(tekken_lines)} lines differ, first: {bad[0]}"
    assert all(tekken_vocab.decode(ids) == t for ids, t in zip(got[::20], tekken_lines[::20]))
    assert enc.encode("[INST]hi", allowed_special={"[INST]"})[0] == 3


def test_tekken_metrics_encoders_fast_and_library_agree(tekken, tekken_lines):
    from tokbench.metrics.encoders import load_encoder

    fast, lib = load_encoder(tekken), load_encoder(tekken, fast=False)
    assert (fast.library, fast.vocab_size) == ("tiktoken", 128000) and fast.fast is not None and lib.fast is None
    sample = tekken_lines[::5]
    assert fast.encode(sample) == lib.encode(sample)


def test_tekken_segmenter_equals_tiktoken_per_pretoken(tekken_vocab, llama3_ranks, tekken_lines):
    import regex

    v = tekken_vocab
    ref = _tiktoken(llama3_ranks, 127000)
    words = list(dict.fromkeys(w for t in tekken_lines[::10] for w in regex.findall(TEKKEN_PATTERN, t)))
    got = v.segment_batch([w.encode() for w in words], [False] * len(words))
    expected = [[i + 1000 for i in ids] for ids in ref.encode_ordinary_batch(words)]
    assert len(words) > 3000 and got == expected


def test_tekken_written_as_tokenizer_json_gives_the_same_ids(tmp_path, tekken_lines, require_asset):
    # what transplant writes beside a tekken target; 20,000 GPT-2 ranks keep the test fast
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import Tokenizer

    from tokbench.bpe import BPE
    from tokbench.vocab.tekken import tekken_tokenizer_json

    ranks = load_tiktoken_bpe(str(require_asset("gpt2-tiktoken")))
    tekken = write_tekken(tmp_path / "tekken.json", ranks, inner=20000, num_special=100, specials=TEKKEN_SPECIALS)
    tok = Tokenizer.from_str(json.dumps(tekken_tokenizer_json(tekken)))
    assert tok.token_to_id("[INST]") == 3 and tok.get_vocab_size() == 20100
    assert tok.encode("a[INST]b", add_special_tokens=False).ids[1] == 3  # specials matched in text, as HF does
    tok.encode_special_tokens = True  # ... and as text here, to compare with encode_ordinary
    sample = tekken_lines[::4]
    hf = [e.ids for e in tok.encode_batch(sample, add_special_tokens=False)]
    bad = [t[:60] for t, a, b in zip(sample, hf, BPE.from_file(tekken).encode_ordinary_batch(sample)) if a != b]
    assert not bad, f"{len(bad)}/{len(sample)} lines differ, first: {bad[0]!r}"


def test_legacy_tekken_without_special_tokens(tmp_path, require_asset):
    # files before v7 list no special tokens: mistral_common's 20 legacy ones are ids 0..19
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(require_asset("gpt2-tiktoken")))
    path = write_tekken(tmp_path / "tekken.json", ranks, inner=50000, num_special=100, version="v3")
    v = load_vocabulary(path)
    assert v.size == 50100 and v.tokens[:3] == ["<unk>", "<s>", "</s>"] and v.tokens[19] == "[TOOL_CONTENT]"
    assert v.kinds[20] == Kind.UNUSED and v.tokens[20] == "<SPECIAL_20>"


def test_tekken_aligns_on_either_side(tekken_vocab, require_asset):
    t, g = tekken_vocab, load_vocabulary(require_asset("gpt2"))
    for old, new in ((t, g), (g, t)):
        a = align(old, new)
        assert len(a.shared) > 30000
        for i in a.new_only[::25]:
            assert b"".join(old.token_bytes[j] for j in a.decompositions[i]) == old.surface(new.key(i))[0]
    a = align(g, t)
    assert a.roles["bos"] == (1, g.specials["bos"]) and a.roles["eos"] == (2, g.specials["eos"])
    assert not {i for i, k in enumerate(t.kinds) if k == Kind.UNUSED} & set(a.special_map)


@pytest.mark.parametrize("body", [
    {"config": {"pattern": "x"}, "vocab": []},
    {"config": {"pattern": "x", "default_vocab_size": 10, "default_num_special_tokens": 2}, "vocab": []},
    {"config": {"pattern": "x", "default_vocab_size": 4, "default_num_special_tokens": 2},
     "vocab": [{"rank": 0, "token_bytes": "not base64!", "token_str": None}, {"rank": 1, "token_bytes": "YQ=="}]},
    {"config": {"pattern": "x", "default_vocab_size": 4, "default_num_special_tokens": 1},
     "vocab": [{"rank": 0, "token_bytes": "YQ=="}] * 3},
    {"config": {"pattern": 3, "default_vocab_size": 4, "default_num_special_tokens": 1}, "vocab": []},
])
def test_bad_tekken_is_one_line_error(tmp_path, body):
    from tokbench.bpe import BPE

    path = tmp_path / "tekken.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    for load in (load_vocabulary, BPE.from_file):
        with pytest.raises(TokbenchError) as err:
            load(path)
        assert "tekken.json" in str(err.value) and "\n" not in str(err.value)


# --- placeholders and controls of the shared families ------------------------------------------------------
def test_reserved_and_control_placeholders_of_real_families(require_asset):
    llama3 = {name: load_vocabulary(require_asset(name)) for name in ("llama3", "llama3-hf")}
    for v in llama3.values():
        reserved = [i for i, t in enumerate(v.tokens) if t and t.startswith("<|reserved_special_token_")]
        assert len(reserved) == 247 and {v.kinds[i] for i in reserved} == {Kind.UNUSED}
        assert {v.tokens[i] for i, k in enumerate(v.kinds) if k == Kind.SPECIAL} >= {
            "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>"}
    m = load_vocabulary(require_asset("mistral-v3"))
    assert {m.kinds[m.tokens.index(t)] for t in ("[INST]", "[/INST]", "[TOOL_CALLS]")} == {Kind.CONTROL}
    assert m.kinds[m.tokens.index("[control_12]")] == Kind.UNUSED
    q = load_vocabulary(require_asset("qwen3"))
    # non-special <|fim_prefix|> is control markup; non-special <think> stays text
    assert q.kinds[q.tokens.index("<|fim_prefix|>")] == Kind.CONTROL
    assert q.kinds[q.tokens.index("<think>")] == Kind.NORMAL and q.token_bytes[q.tokens.index("<think>")] == b"<think>"
    a = align(llama3["llama3"], llama3["llama3-hf"])
    assert len(a.shared) == 128000 and a.new_only == []
    assert all(a.new.kinds[i] != Kind.UNUSED for i in a.special_map)


# --- tokenizers 0.x / 1.0 ----------------------------------------------------------------------------------
def test_open_hf_tokenizer_turns_padding_off_on_both_apis(require_asset, monkeypatch):
    import tokenizers

    from tokbench.vocab.hf_json import open_hf_tokenizer

    bert = require_asset("bert") / "tokenizer.json"  # the file pads to 128
    tok = open_hf_tokenizer(bert)
    assert tok.encode("hello world", add_special_tokens=False).ids == [7592, 2088]

    class OneZero:  # the 1.0 API: padding / truncation are properties, no no_padding()
        def __init__(self, path):
            self.padding, self.truncation = {"length": 128}, {"max_length": 128}

        @classmethod
        def from_file(cls, path):
            return cls(path)

    monkeypatch.setattr(tokenizers, "Tokenizer", OneZero)
    stub = open_hf_tokenizer(bert)
    assert stub.padding is None and stub.truncation is None


# --- vocab.json + merges.txt, vocab.txt (read without the library) ------------------------------------------
def test_vocab_json_merges_and_vocab_txt_equal_the_library(require_asset):
    from tokenizers import Tokenizer, models, pre_tokenizers

    gpt2 = require_asset("gpt2").parent
    v = load_vocabulary(gpt2 / "vocab.json")  # merges.txt beside it
    ref = load_vocabulary(gpt2 / "tokenizer.json")
    assert v.format == "vocab.json+merges.txt" and v.token_bytes[:50256] == ref.token_bytes[:50256]
    assert v.segmenter_spec.merges == ref.segmenter_spec.merges
    lib = Tokenizer(models.BPE.from_file(str(gpt2 / "vocab.json"), str(gpt2 / "merges.txt")))
    lib.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    words = [" " + w for _, p in udhr_texts(str(require_asset("udhr")))[::7] for w in p.split()[:20]]
    assert v.segment_batch([w.encode() for w in words]) == [e.ids for e in lib.encode_batch(words)]

    bert = require_asset("bert")
    w = load_vocabulary(bert / "vocab.txt")
    ref = load_vocabulary(bert / "tokenizer.json")
    assert w.format == "vocab.txt" and w.size == ref.size and w.unk_id == ref.unk_id == 100
    same = [i for i, k in enumerate(ref.kinds) if k == Kind.NORMAL]
    assert [w.token_bytes[i] for i in same] == [ref.token_bytes[i] for i in same]
    assert w.kind_counts["unused"] == 994
