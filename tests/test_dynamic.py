"""Dynamic batch merging: the Rust kernel against the pure-Python reference (random and real batches), byte-exact
round trips on real text, the boundary modes, budgets, embeddings for dynamic tokens, the CLI, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamic_reference import reference_merge
from tokbench.cli import main
from tokbench.dynamic import (MODES, DynamicTokenizer, boundary_mask, dynamic_rows, embed_batch, merge_batch, merge_ids)
from tokbench.dynamic.stats import corpus_lines
from tokbench.errors import TokbenchError


def _kernel(seqs, cut, base_bytes, **kw):
    merged, toks, merges, lengths = merge_ids(seqs, cut, base_bytes, **kw)
    return merged, toks, [tuple(m) for m in merges], lengths


@st.composite
def batches(draw):
    n_base = draw(st.integers(2, 12))
    base_bytes = draw(st.lists(st.integers(0, 4), min_size=n_base, max_size=n_base))
    seqs = draw(st.lists(st.lists(st.integers(0, n_base - 1), max_size=30), min_size=1, max_size=6))
    cut = [[draw(st.booleans()) if draw(st.integers(0, 3)) == 0 else False for _ in s] for s in seqs]
    kw = {}
    budget = draw(st.sampled_from(["none", "merges", "target"]))
    if budget == "merges":
        kw["merges"] = draw(st.integers(0, 40))
    elif budget == "target":
        kw["target_len"] = draw(st.integers(0, sum(map(len, seqs))))
    if draw(st.booleans()):
        kw["max_constituents"] = draw(st.integers(2, 6))
    if draw(st.booleans()):
        kw["max_bytes"] = draw(st.integers(2, 10))
    if draw(st.booleans()):
        kw["min_count"] = draw(st.integers(1, 3))
    return seqs, cut, base_bytes, kw


@settings(max_examples=400, deadline=None)
@given(batches())
def test_kernel_equals_reference_on_random_batches(case):
    seqs, cut, base_bytes, kw = case
    ref_kw = dict(kw)
    if "merges" in ref_kw:
        ref_kw["max_merges"] = ref_kw.pop("merges")
    assert _kernel(seqs, cut, base_bytes, **kw) == reference_merge(seqs, cut, base_bytes, **ref_kw)


def test_kernel_equals_reference_on_repetitive_runs():
    # long runs of one id and of two alternating ids: overlapping occurrences and re-made tokens
    seqs = [[1] * 37, [1, 2] * 20, [2, 1, 1, 2, 1, 1, 1] * 5, [3] * 5 + [1] * 9]
    cut = [[False] * len(s) for s in seqs]
    for budget in (1, 3, 10, None):
        assert _kernel(seqs, cut, [1] * 4, merges=budget) == reference_merge(seqs, cut, [1] * 4, max_merges=budget)


@pytest.fixture(scope="module")
def smollm2(request):
    from conftest import require_asset

    require_asset("smollm2")
    return DynamicTokenizer.load("smollm2")


@pytest.fixture(scope="module")
def wiki_lines():
    from conftest import require_asset

    require_asset("wikitext2-test")
    return corpus_lines("wikitext2-test", limit_lines=96)


@pytest.mark.parametrize("mode", MODES)
def test_real_batches_equal_reference_and_round_trip(smollm2, wiki_lines, mode):
    batch = wiki_lines[32:64]
    ids = smollm2.bpe.encode_ordinary_batch(batch)
    cut = boundary_mask(smollm2, ids, mode, batch)
    bb = smollm2.base_bytes()
    for budget in (1, 10, 100, None):
        got = _kernel(ids, cut, bb, merges=budget)
        assert got == reference_merge(ids, cut, bb, max_merges=budget)
        mb = merge_batch(smollm2, batch, mode=mode, merges=budget)
        assert mb.merged == got[0] and mb.lengths == got[3]
        for s, text in enumerate(batch):
            assert mb.decode_bytes(s) == text.encode("utf-8")
            assert mb.expand(mb.merged[s]) == ids[s]
    # exhaustion: one token per segment, i.e. 100 % of the mode's word level
    assert mb.tokens_after == mb.word_level and mb.pct_of_word_level == 100.0
    assert (5 if mode == "word" else 1) < mb.pct_shorter < (100 if mode == "sentence" else 40)
    # no dynamic token crosses a cut
    for s in range(len(batch)):
        pos = 0
        for t in mb.merged[s]:
            n = len(mb.constituents(t))
            assert not any(cut[s][pos + 1:pos + n])
            pos += n


def test_word_mode_keeps_words_and_pretokens_split_punctuation(smollm2):
    texts = ["the cat's hat, the cat's hat, the cat's hat."] * 4
    word = merge_batch(smollm2, texts, mode="word")
    pre = merge_batch(smollm2, texts, mode="pretokens")
    assert b" cat's" in word.token_bytes and b" hat," in word.token_bytes
    assert all(not b[1:].count(b" ") for b in word.token_bytes)
    assert b" cat's" not in pre.token_bytes and b" hat," not in pre.token_bytes
    assert pre.word_level > word.word_level


def test_shorter_pct_budget_stops_at_the_first_merge_that_reaches_it(smollm2, wiki_lines):
    batch = wiki_lines[:32]
    mb = merge_batch(smollm2, batch, shorter_pct=5)
    target = int(mb.tokens_before * 0.95)
    assert mb.lengths[-1] <= target < mb.lengths[-2]
    assert mb.pct_shorter >= 5
    full = merge_batch(smollm2, batch)
    assert full.lengths[:len(mb.lengths)] == mb.lengths  # greedy: a budget is a prefix of exhaustion


def test_caps_bound_every_dynamic_token(smollm2, wiki_lines):
    mb = merge_batch(smollm2, wiki_lines[:32], max_constituents=3, max_bytes=8)
    assert mb.tokens
    assert all(len(c) <= 3 for c in mb.tokens) and all(len(b) <= 8 for b in mb.token_bytes)
    assert mb.tokens_after > mb.word_level


def test_bad_inputs_are_one_clear_error(smollm2):
    with pytest.raises(TokbenchError, match="batch is empty"):
        merge_batch(smollm2, [])
    with pytest.raises(TokbenchError, match="cannot be met"):
        merge_batch(smollm2, ["a plain English sentence."], shorter_pct=90)
    with pytest.raises(TokbenchError, match="'words' silently disabled"):
        merge_batch(smollm2, ["x y"], mode="words")
    with pytest.raises(TokbenchError, match="not both"):
        merge_batch(smollm2, ["x y"], merges=3, shorter_pct=3)
    with pytest.raises(TokbenchError, match="outside the vocabulary"):
        boundary_mask(smollm2, [[1, 10**6]], "word")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        merge_ids([[1, 70_000]], [[True, False]], smollm2.base_bytes())
    with pytest.raises(ValueError, match="cut mask"):
        merge_ids([[1, 2]], [[True]], smollm2.base_bytes())
    with pytest.raises((OverflowError, TypeError)):
        merge_ids([[1, -2]], [[True, False]], [1, 1, 1])


def test_dynamic_rows_from_the_shared_initialisers(smollm2):
    mb = merge_batch(smollm2, ["new york new york new york city"] * 3)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((smollm2.n_base, 16)).astype(np.float32)
    mean = dynamic_rows(mb, rows, "mean")
    for k, cons in enumerate(mb.tokens):
        np.testing.assert_allclose(mean.rows[k], rows[cons].mean(0), rtol=1e-5, atol=1e-6)
    pos = dynamic_rows(mb, rows, "position_mean")
    for k, cons in enumerate(mb.tokens):
        w = np.arange(len(cons), 0, -1, dtype=np.float64)
        np.testing.assert_allclose(pos.rows[k], (w[:, None] * rows[cons]).sum(0) / w.sum(), rtol=1e-5, atol=1e-5)
    anchors = np.arange(3000)
    omp = dynamic_rows(mb, rows, "omp", k=4, anchors=(anchors, anchors))
    assert omp.rows.shape == (len(mb.tokens), 16) and np.isfinite(omp.rows).all()
    assert all(r["method"] == "omp" and len(r["anchors"]) == 4 for r in omp.records)
    embeds = embed_batch(mb, rows, mean.rows)
    assert [e.shape[0] for e in embeds] == [len(s) for s in mb.merged]
    with pytest.raises(TokbenchError, match="embedding matrix"):
        dynamic_rows(mb, rows[:100], "mean")
    with pytest.raises(TokbenchError, match="unknown dynamic embedding"):
        dynamic_rows(mb, rows, "fvt")


def test_cli_stats_text_json_and_errors(smollm2, wiki_lines, tmp_path):
    r = CliRunner().invoke(main, ["dynamic", "stats", "-t", "smollm2", "-c", "wikitext2-test", "--limit-lines", "64",
                                  "--json", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["batches"] == 2 and data["tokens_after"] == data["word_level"]
    assert data["curve"][0] == data["tokens_before"] and data["curve"][-1] == data["tokens_after"]
    ids = smollm2.bpe.encode_ordinary_batch(wiki_lines[:64])
    assert data["tokens_before"] == sum(map(len, ids))
    r = CliRunner().invoke(main, ["dynamic", "stats", "-t", "smollm2", "-c", "wikitext2-test", "--limit-lines", "64",
                                  "--shorter-pct", "5", "-q"])
    assert r.exit_code == 0, r.output
    assert "absolute" in r.output and "of the word level" in r.output
    junk = tmp_path / "tokenizer.json"
    junk.write_text("{not json")
    r = CliRunner().invoke(main, ["dynamic", "stats", "-t", str(junk), "-c", "wikitext2-test", "-q"])
    assert r.exit_code == 2 and "tokenizer.json" in r.stderr and "Traceback" not in r.output


def test_prefill_fidelity_through_inputs_embeds_matches_ids_and_scores_merged_prefixes():
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import require_asset
    from tokbench.dynamic.fidelity import prefill_fidelity, windows_from_corpus

    model = require_asset("tbd-gpt2-d128")
    require_asset("gpt2")
    require_asset("qwen3")
    tok = DynamicTokenizer.load("gpt2")
    r = prefill_fidelity(model, tok, n_windows=4, prefix=32, continuation=16, budgets=(0, None),
                         methods=("mean",), threads=1)
    plain, merged = r["rows"]
    # unmerged: the inputs_embeds path gives the same bits as feeding ids
    lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    bits = 0.0
    with torch.inference_mode():
        for p, c in windows_from_corpus(tok, "wikitext2-test", 4, 32, 16):
            logp = torch.log_softmax(lm(input_ids=torch.tensor([p + c[:-1]])).logits[0].float(), -1)
            bits -= float(logp[len(p) - 1:].gather(1, torch.tensor(c)[:, None]).sum()) / np.log(2)
    assert plain["bits_per_byte"] == pytest.approx(bits / r["continuation_bytes"], rel=1e-4)
    assert merged["pct_of_word_level"] == 100.0 and merged["prefix_tokens_merged"] < merged["prefix_tokens"]
    assert np.isfinite(merged["bits_per_byte"]) and merged["bits_per_byte"] != plain["bits_per_byte"]
    with pytest.raises(TokbenchError, match="embedding rows"):
        prefill_fidelity(model, "qwen3", n_windows=1, prefix=8, continuation=4, budgets=(0,))


def test_fidelity_merge_batches_paired_interval_and_cached_unmerged_run(tmp_path):
    from conftest import require_asset
    from tokbench.dynamic.fidelity import paired_ci, prefill_fidelity, repeat_split
    from tokbench.embeddings import geometric

    model = require_asset("tbd-gpt2-d128")
    require_asset("gpt2")
    tok = DynamicTokenizer.load("gpt2")
    kw = dict(n_windows=4, prefix=32, continuation=16, threads=1, teacher_cache=tmp_path / "cache")
    methods = ("mean", ("last", "norm_mean", {"weights": geometric(4.0)}))
    r = prefill_fidelity(model, tok, budgets=(0, "50%"), methods=methods, control=True, mode="pretokens",
                         merge_batch=2, **kw)
    plain, *rest = r["rows"]
    assert r["merge_batches"] == 2 and not plain["cached"] and len(list((tmp_path / "cache").iterdir())) == 1
    assert [x["method"] for x in rest] == ["mean", "last", "mean", "last"]
    # each batch of 2 windows is merged on its own to 50 % of its own word level
    from tokbench.dynamic.fidelity import windows_from_corpus
    from tokbench.dynamic.merge import budget_target

    prefixes = [p for p, _ in windows_from_corpus(tok, "wikitext2-test", 4, 32, 16)]
    merged_len = 0
    halves = (prefixes[:2], prefixes[2:])
    for g in halves:
        cut = boundary_mask(tok, g, "pretokens")
        target = budget_target(sum(map(len, g)), sum(map(sum, cut)), "pretokens", pct_of_word_level=50)
        merged_len += sum(map(len, merge_ids(g, cut, tok.base_bytes(), target_len=target)[0]))
    assert rest[0]["prefix_tokens_merged"] == rest[1]["prefix_tokens_merged"] == merged_len
    assert r["word_level"] == sum(sum(map(sum, boundary_mask(tok, g, "pretokens"))) for g in halves)
    assert r["word_mode_level"] == sum(map(sum, boundary_mask(tok, prefixes, "word")))
    for row in rest[:2]:
        assert row["pct_of_word_level"] >= 50.0 and 0 < row["pct_shorter_prefix"]
        saved = row["prefix_tokens"] - row["prefix_tokens_merged"]
        want = 100.0 * saved / (row["prefix_tokens"] - r["word_mode_level"])
        assert row["pct_of_word_mode_level"] == pytest.approx(want)
        assert row["delta_ci95_lo"] <= row["delta_pct"] <= row["delta_ci95_hi"]
    # one-constituent rows of both methods are the tokens' own rows: the control is the unmerged model
    for row, bits in zip(rest[2:], r["window_bits"][3:]):
        assert row["control"] and row["delta_pct"] == pytest.approx(0.0, abs=1e-4)
        assert bits == pytest.approx(r["window_bits"][0], rel=1e-5)
    # where the extra bits go: windows whose continuation repeats a word merged in their prefix vs the rest
    split = repeat_split(tok, r)
    assert [x["method"] for x in split] == ["mean", "last"]
    for x, row, bits in zip(split, rest, r["window_bits"][1:]):
        assert x["windows_repeat"] + x["windows_other"] == 4
        if x["windows_repeat"] and x["windows_other"]:
            lo, hi = sorted([x["delta_pct_repeat"], x["delta_pct_other"]])
            assert lo - 1e-9 <= row["delta_pct"] <= hi + 1e-9  # the whole is a mix of the two groups
    again = prefill_fidelity(model, tok, budgets=(0,), methods=(), mode="pretokens", **kw)
    assert again["rows"][0]["cached"] and again["window_bits"][0] == r["window_bits"][0]
    assert paired_ci([2.0, 4.0], [2.0, 4.0]) == (0.0, 0.0)
    lo, hi = paired_ci([1.1, 2.2, 3.3, 1.1], [1.0, 2.0, 3.0, 1.0])
    assert lo == pytest.approx(10.0) and hi == pytest.approx(10.0)
    with pytest.raises(TokbenchError, match="merge_batch"):
        prefill_fidelity(model, tok, budgets=(0,), merge_batch=0, **kw)
    with pytest.raises(TokbenchError, match="unknown dynamic embedding"):
        prefill_fidelity(model, tok, budgets=(0,), methods=("fvt",), **kw)


def test_kernel_equals_reference_on_every_tatoeba_language(smollm2):
    from conftest import require_asset
    from tokbench.assets.corpus import iter_tatoeba

    require_asset("tatoeba")
    bb = smollm2.base_bytes()
    bb_list = [int.from_bytes(bb[k:k + 4], "little") for k in range(0, len(bb), 4)]  # once, not per call
    langs = 0
    for lang in iter_tatoeba("tatoeba"):
        texts = [t for t in lang.lines[:8] if t]
        ids = smollm2.bpe.encode_ordinary_batch(texts)
        for mode in MODES:
            cut = boundary_mask(smollm2, ids, mode)
            full = reference_merge(ids, cut, bb_list)
            for budget in (1, 10, 100, None):
                got = _kernel(ids, cut, bb, merges=budget)
                k = len(got[2])
                assert got[3] == full[3][:k + 1], (lang.lang, mode, budget)
                assert got[2] == full[2][:k], (lang.lang, mode, budget)
                assert k == (len(full[2]) if budget is None else min(budget, len(full[2])))
            assert got == full, (lang.lang, mode)
        langs += 1
    assert langs == 112


def test_resource_arguments_are_bounded(smollm2):
    for kw in ({"merges": -1}, {"shorter_pct": 0}, {"shorter_pct": float("nan")}, {"max_constituents": 1},
               {"max_bytes": 1}, {"merges": 1.5}):
        with pytest.raises(TokbenchError):
            merge_batch(smollm2, ["x y"], **kw)
    from tokbench.dynamic import corpus_stats

    with pytest.raises(TokbenchError, match="batch"):
        corpus_stats(smollm2, "wikitext2-test", batch=0)
