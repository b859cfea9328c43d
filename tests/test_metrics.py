"""tokbench.metrics: definitions against independent computations, errors, CLI; real assets when present."""
from __future__ import annotations

import json
import math
import random
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from tokbench import _core
from tokbench.cli import main
from tokbench.errors import TokbenchError
from tokbench.metrics import load_encoder, run_metrics
from tokbench.metrics.core import (corpus_metrics, count_words, encode_documents, gini, heldout_split,
                                   renyi_efficiency, renyi_entropy, serialise, shannon_entropy)
from tokbench.metrics.parity import parity, udhr_units

from synthetic_tokenizers import generated_text, train_bytelevel_bpe, train_metaspace_bpe, train_wordpiece


def _b(a, dtype):
    return np.asarray(a, dtype=dtype).tobytes()


# ------------------------------------------------------------------------------------------------
# entropies
# ------------------------------------------------------------------------------------------------
def _scorer_text(lines: list[list[int]]) -> str:
    return "\n".join(" ".join(f"t{t}" for t in line) for line in lines)


@pytest.mark.parametrize("alpha", [2.5, 3.0, 0.5])
def test_renyi_equals_tokenization_scorer(alpha):
    ts = pytest.importorskip("tokenization_scorer")
    rng = np.random.default_rng(7)
    lines = [list(rng.zipf(1.3, size=rng.integers(1, 40)) % 3000) for _ in range(800)]
    counts = np.unique(np.concatenate(lines), return_counts=True)[1].astype(float)
    text = _scorer_text(lines)
    ours = renyi_efficiency(counts, alpha, int(counts.size))
    theirs = ts.score(text, metric="renyi", power=alpha)
    assert abs(ours - theirs) < 1e-9
    assert abs(renyi_entropy(counts, alpha) - ts.score(text, metric="renyi_entropy", power=alpha)) < 1e-9
    assert abs(shannon_entropy(counts) - ts.score(text, metric="shannon_entropy")) < 1e-9


def test_renyi_formula_without_the_package():
    counts = np.array([4.0, 2.0, 1.0, 1.0])
    p = counts / counts.sum()
    want = math.log2(np.sum(p ** 2.5)) / (1 - 2.5)
    assert abs(renyi_entropy(counts, 2.5) - want) < 1e-12
    assert abs(renyi_entropy(counts, 1.0) - shannon_entropy(counts)) < 1e-12
    assert abs(renyi_efficiency(counts, 2.5, 16) - want / 4) < 1e-12


def _plugin(counter: Counter) -> float:
    n = sum(counter.values())
    return -sum(c / n * math.log2(c / n) for c in counter.values())


def test_ngram_stats_against_python():
    rng = random.Random(3)
    docs = [[rng.choice([1, 2, 3, 50_000, 7]) for _ in range(rng.randint(0, 60))] for _ in range(40)]
    tokens = [t for d in docs for t in d]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    stats = _core.ngram_stats(_b(tokens, "<u4"), _b(offsets, "<u8"), 4)
    for k in range(1, 5):
        grams, ctx = Counter(), Counter()
        for d in docs:
            for i in range(len(d) - k + 1):
                grams[tuple(d[i:i + k])] += 1
                ctx[tuple(d[i:i + k - 1])] += 1
        s = stats[k - 1]
        n = sum(grams.values())
        assert s["n"] == n and s["distinct"] == len(grams) and s["contexts"] == len(ctx)
        assert s["singleton_contexts"] == sum(1 for c in ctx.values() if c == 1)
        assert abs(s["block_entropy"] - _plugin(grams)) < 1e-9
        assert abs(s["conditional_entropy"] - (_plugin(grams) - _plugin(ctx))) < 1e-9
        mm = (len(grams) - 1 - (len(ctx) - 1)) / (2 * n * math.log(2))
        assert abs(s["conditional_entropy_mm"] - s["conditional_entropy"] - mm) < 1e-9


def test_ngram_bad_input_is_value_error():
    with pytest.raises(ValueError, match="last offset"):
        _core.ngram_stats(_b([1, 2], "<u4"), _b([0, 1], "<u8"), 2)
    with pytest.raises(ValueError, match="uint32"):
        _core.ngram_stats(b"\x00\x01\x02", _b([0, 0], "<u8"), 2)


def test_witten_bell_heldout_is_a_distribution():
    """Summing p(w | context) over the whole vocabulary gives 1 at every order."""
    train = [random.Random(1).randrange(6) for _ in range(400)]
    vocab = 8
    for order in (1, 2, 3):
        total = 0.0
        for w in range(vocab):
            full = _core.ngram_cross_entropy(_b(train, "<u4"), _b([0, 400], "<u8"), _b([2, 4, w], "<u4"),
                                             _b([0, 3], "<u8"), order, vocab)
            ctx = _core.ngram_cross_entropy(_b(train, "<u4"), _b([0, 400], "<u8"), _b([2, 4], "<u4"),
                                            _b([0, 2], "<u8"), order, vocab)
            total += 2 ** -(full[order - 1]["total_bits"] - ctx[order - 1]["total_bits"])
        assert abs(total - 1) < 1e-9


@pytest.mark.parametrize("n_docs", [40, 1200])
def test_ngram_metrics_equals_stats_and_cross_entropy(n_docs):
    """The one-pass ngram_metrics (whole-stream statistics merged from the train, held-out and
    cut-spanning k-grams; held-out counts by merge join) equals ngram_stats on the whole stream
    and ngram_cross_entropy on heldout_split's two streams, for both split rules and both key widths."""
    from tokbench.metrics.core import EncodedCorpus, heldout_cuts

    rng = np.random.default_rng(n_docs)
    for types in (300, 40_000):  # 9 bits (u64 keys at every order) / 16 bits (u128 at order 5)
        lengths = rng.integers(0, 120 if n_docs > 1000 else 900, size=n_docs)
        toks = (rng.zipf(1.2, size=int(lengths.sum())) % types * 3).astype(np.uint32)
        off = np.concatenate(([0], np.cumsum(lengths))).astype(np.uint64)
        enc = EncodedCorpus(toks, off, 0, 0, np.zeros(n_docs, np.int64))
        cuts, _ = heldout_cuts(enc)
        stats, xent = _core.ngram_metrics(_b(toks, "<u4"), _b(off, "<u8"), _b(cuts, "<u8"), 5, 3 * types, True)
        assert stats == _core.ngram_stats(_b(toks, "<u4"), _b(off, "<u8"), 5)
        tr, tro, te, teo, _ = heldout_split(enc)
        want = _core.ngram_cross_entropy(_b(tr, "<u4"), _b(tro, "<u8"), _b(te, "<u4"), _b(teo, "<u8"), 5, 3 * types)
        for a, b in zip(xent, want):
            assert (a["order"], a["n"], a["unseen"]) == (b["order"], b["n"], b["unseen"])
            assert a["bits_per_token"] == pytest.approx(b["bits_per_token"], rel=1e-12)
        assert _core.ngram_metrics(_b(toks, "<u4"), _b(off, "<u8"), _b(cuts, "<u8"), 5, 3 * types, False)[1] is None
    with pytest.raises(ValueError, match="cut"):
        _core.ngram_metrics(_b([1, 2], "<u4"), _b([0, 2], "<u8"), _b([3], "<u8"), 2, 10, True)
    # ids too large for a flat rank table take the hash-map path
    big = [2**32 - 1, 7, 2**32 - 1, 7, 2**30, 7]
    stats, _ = _core.ngram_metrics(_b(big, "<u4"), _b([0, 6], "<u8"), _b([5], "<u8"), 3, 2**32, True)
    assert stats == _core.ngram_stats(_b(big, "<u4"), _b([0, 6], "<u8"), 3)


def test_gini_and_serialisation():
    assert gini([1, 1, 1, 1]) == 0
    assert abs(gini([0, 0, 0, 1]) - 0.75) < 1e-12
    assert len(serialise(np.array([1, 2, 3], np.uint32), 50_000)) == 6
    assert len(serialise(np.array([1, 2, 3], np.uint32), 150_000)) == 9
    assert serialise(np.array([0x010203], np.uint32), 150_000) == b"\x03\x02\x01"


# ------------------------------------------------------------------------------------------------
# corpus metrics with synthetic tokenizers
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {"bytelevel": train_bytelevel_bpe(root / "bl"), "metaspace": train_metaspace_bpe(root / "ms"),
            "wordpiece": train_wordpiece(root / "wp")}


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace", "wordpiece"])
def test_corpus_metrics_synthetic(synth, kind):
    enc = load_encoder(synth[kind])
    docs = generated_text(5, 3000)
    r = corpus_metrics(enc, docs, corpus="gen")
    n = r["tokens"]
    assert n == sum(len(x) for x in enc.encode(docs))
    assert r["bytes"] == sum(len(d.encode()) for d in docs)
    assert abs(r["bytes_per_token"] - r["bytes"] / n) < 1e-12
    flags = count_words(docs).char_docs  # a short line of mostly 日/本 is counted per character
    assert r["words"] == sum(len(d.replace(" ", "")) if f else len(d.split()) for d, f in zip(docs, flags))
    assert 0 < r["continued_words"] < 1
    assert r["ngrams"][0]["conditional_entropy"] == pytest.approx(r["shannon_entropy"], abs=1e-9)
    hs = [g["conditional_entropy"] for g in r["ngrams"]]
    assert all(a >= b - 1e-9 for a, b in zip(hs, hs[1:]))  # conditioning never increases plug-in entropy
    assert r["unigram_bits_per_byte"] == pytest.approx(n * r["shannon_entropy"] / r["bytes"])
    for m in ("gzip", "zstd", "lzma"):
        assert r[f"{m}_bits_per_byte"] > 0
    # missing values carry a reason, never 0
    for key, value in r.items():
        if value is None:
            assert key in r["missing"]
    if kind == "bytelevel":
        assert r["unk_rate"] is None and "unk" in r["missing"]["unk_rate"]
        assert r["continued_words_method"] == "stream"
    if kind == "wordpiece":
        assert r["unk_rate"] is not None


def test_continued_words_stream_matches_isolated_when_words_are_independent(synth):
    """For a byte-level BPE whose pre-tokenizer splits at spaces, a word's tokens do not depend on
    its neighbours, so reading splits off the stream equals encoding each word alone."""
    from tokbench.metrics.core import continued_words, continued_words_from_stream

    enc = load_encoder(synth["bytelevel"])
    # a leading space: the first word of a document is preceded by a space, as in isolation
    docs = [" " + " ".join(d.replace(",", "").replace(".", "").replace("?", "").replace("-", "").replace("'s", "").split())
            for d in generated_text(9, 2000)]
    docs = [d for d in docs if d.strip()]
    e = encode_documents(enc, docs)
    w = count_words(docs)
    a = continued_words_from_stream(enc, docs, e, w.char_docs)
    b, _ = continued_words(enc, w.whitespace_words)
    assert a is not None and abs(a - b) < 1e-12


def test_words_per_character_for_scripts_without_spaces():
    w = count_words(["日本語のテキストです。", "two words"])
    assert w.segmentation == "mixed" and w.n_char_docs == 1
    assert w.n_words == len("日本語のテキストです。") + 2


def test_heldout_split_rules():
    from tokbench.metrics.core import EncodedCorpus

    def ec(lengths):
        off = np.cumsum([0] + lengths).astype(np.uint64)
        return EncodedCorpus(np.arange(sum(lengths), dtype=np.uint32), off, 0, 0, np.zeros(len(lengths), np.int64))

    tr, tro, te, teo, rule = heldout_split(ec([5] * 2000))
    assert te.size == 1000 and tr.size == 9000 and "index % 10 == 9" in rule
    tr, tro, te, teo, rule = heldout_split(ec([100, 50]))
    assert list(teo) == [0, 10, 15] and tr.size == 135 and "last 10%" in rule


# ------------------------------------------------------------------------------------------------
# errors and parity without English
# ------------------------------------------------------------------------------------------------
def test_errors(tmp_path, synth):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(TokbenchError, match="empty"):
        run_metrics([str(synth["bytelevel"])], [str(empty)], progress=False)
    notext = tmp_path / "notext.jsonl"
    notext.write_text('{"id": 1, "n": 2}\n', encoding="utf-8")
    with pytest.raises(TokbenchError, match="no recognised text field"):
        run_metrics([str(synth["bytelevel"])], [str(notext)], progress=False)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokbenchError):
        run_metrics([str(bad)], [str(notext)], progress=False)
    res = CliRunner().invoke(main, ["metrics", "-t", str(synth["bytelevel"]), "-c", str(empty), "-q"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "error" in res.output


def test_parity_without_english_is_missing(tmp_path, synth):
    f = tmp_path / "udhr.jsonl"
    f.write_text(json.dumps({"code": "fra", "sections": {"1": ["Tous les êtres humains"]}}) + "\n", encoding="utf-8")
    p = parity(load_encoder(synth["bytelevel"]), udhr_units(f), dataset="udhr")
    assert p["gini"] is None and "English" in p["missing"]["gini"]


def test_parity_values(tmp_path, synth):
    f = tmp_path / "udhr.jsonl"
    recs = [{"code": "eng", "sections": {"1": ["ka to"], "2": ["ri mu"]}},
            {"code": "aaa", "sections": {"1": ["ka to ka to"], "2": ["ri mu ri mu ri mu"]}},
            {"code": "bbb", "sections": {"1": ["ka to"], "3": ["x"]}}]
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    enc = load_encoder(synth["bytelevel"])
    units = udhr_units(f)
    assert len(units["aaa"]) == 2 and len(units["bbb"]) == 1
    p = parity(enc, units, dataset="udhr")
    n = lambda s: len(enc.encode([s])[0])  # noqa: E731
    a = p["languages"]["aaa"]
    assert a["premium_sum"] == pytest.approx((n("ka to ka to") + n("ri mu ri mu ri mu")) / (n("ka to") + n("ri mu")))
    assert a["premium_mean"] == pytest.approx((n("ka to ka to") / n("ka to") + n("ri mu ri mu ri mu") / n("ri mu")) / 2)
    assert p["languages"]["bbb"]["premium_sum"] == pytest.approx(1.0)
    assert p["gini"] == pytest.approx(gini([a["premium_sum"], 1.0]))


def test_cli_json_and_csv(tmp_path, synth):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(generated_text(2, 1500)), encoding="utf-8")
    r = CliRunner().invoke(main, ["metrics", "-t", str(synth["metaspace"]), "-c", str(corpus), "--json", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["results"][0]["tokens"] > 0 and data["parity"] == {}
    r = CliRunner().invoke(main, ["metrics", "-t", str(synth["metaspace"]), "-c", str(corpus), "--csv", "-q"])
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("tokenizer,corpus,K")
    assert "H5_heldout" in r.output.splitlines()[0]


# ------------------------------------------------------------------------------------------------
# real assets
# ------------------------------------------------------------------------------------------------
def test_real_renyi_matches_scorer_on_llama2(require_asset):
    ts = pytest.importorskip("tokenization_scorer")
    require_asset("llama2")
    require_asset("wikitext2-test")
    from tokbench.assets import iter_documents

    enc = load_encoder("llama2")
    docs = list(iter_documents("wikitext2-test", 200_000))
    r = corpus_metrics(enc, docs, corpus="wikitext2-test")
    ids = enc.encode(docs)
    assert abs(r["renyi_efficiency_observed"] - ts.score(_scorer_text(ids), metric="renyi", power=2.5)) < 1e-9
    assert abs(r["renyi_efficiency"] - ts.score(_scorer_text(ids), metric="renyi", power=2.5,
                                                vocab=enc.vocab_size)) < 1e-9


@pytest.mark.parametrize("name", ["gpt2-tiktoken", "llama3", "llama2", "qwen3", "xlm-r", "bert", "smollm2",
                                  "whisper", "mistral-v1", "mistral-v3"])
def test_real_encoders_match_reference(require_asset, name):
    """The metrics encoder gives the ids of tests/reference_tokenizers.py."""
    from reference_tokenizers import Reference

    path = require_asset(name)
    enc = load_encoder(name)
    texts = ["Hello world, this is a test.", "  spaces\tand\nnewlines ", "日本語 and ελληνικά 12345"]
    assert enc.encode(texts) == Reference(name, path, enc.vocab).encode(texts)


def test_real_parity_tatoeba(require_asset):
    require_asset("tatoeba")
    require_asset("gpt2-tiktoken")
    from tokbench.metrics.parity import tatoeba_units

    units = {k: v[:50] for k, v in list(tatoeba_units("tatoeba").items())[:12]}
    p = parity(load_encoder("gpt2-tiktoken"), units, dataset="tatoeba")
    assert p["n_languages"] == 12 and p["gini"] > 0 and p["premium_sum_mean"] > 1


# ------------------------------------------------------------------------------------------------
# the fast paths: tokbench.bpe instead of the library, worker processes, per-corpus stream text
# ------------------------------------------------------------------------------------------------
_FAST_SPECIAL = {"qwen3": "<|im_start|>user\nhi<|im_end|><|endoftext|>", "smollm2": "<|im_start|>x<|endoftext|>",
                 "gpt2-tiktoken": "a <|endoftext|> b", "llama3": "<|begin_of_text|>x", "whisper": "<|endoftext|>"}


@pytest.mark.parametrize("name", ["gpt2-tiktoken", "whisper", "llama3", "qwen3", "smollm2"])
def test_fast_encoder_gives_the_library_ids_on_shared_corpora(require_asset, name):
    """The byte-level families encoded by tokbench.bpe give the ids of their own library (tiktoken,
    tokenizers) on lines of the shared corpora, with NFC-sensitive text (Qwen3 normalises to NFC) and
    special-token text (matched by tokenizers, ordinary text for tiktoken)."""
    from tokbench.assets import iter_documents
    from tokbench.metrics.parity import tatoeba_units

    require_asset(name)
    fast, lib = load_encoder(name), load_encoder(name, fast=False)
    assert fast.fast is not None and lib.fast is None
    assert fast.describe()["encoder"].startswith("tokbench.bpe") and lib.describe()["encoder"] == lib.library
    texts = []
    for corpus in ("wikitext2-test", "gsm8k-test", "code-python", "code-cpp", "udhr", "bible-mark"):
        require_asset(corpus)
        for d in iter_documents(corpus, 60_000):
            texts.extend(d.splitlines(keepends=True)[:400])
    require_asset("tatoeba")
    for lang, pairs in tatoeba_units("tatoeba").items():
        texts.extend(a for a, _ in pairs[:15])
    words = sorted({w for t in texts for w in t.split()})
    texts += [" " + w for w in words] + words
    texts += ["Cafe\u0301 e\u0301te\u0301 \u1100\u1161 \u212b A\u030a", "\u00e9\u0301", _FAST_SPECIAL[name], "", "  \n\t "]
    got, want = fast.encode(texts), lib.encode(texts)
    assert len(texts) > 20_000
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{len(bad)} texts differ, first {bad[0][:80]!r}"
    assert got == want


@pytest.mark.parametrize("name", ["xlm-r", "bert", "llama2", "mistral-v3"])
def test_other_tokenizers_keep_their_library(require_asset, name):
    require_asset(name)
    e = load_encoder(name)
    assert e.fast is None and e.describe()["encoder"] == e.library


def test_fast_path_refuses_added_tokens_with_strip_rules(tmp_path, synth):
    """tokbench.bpe does not implement lstrip/rstrip/single_word: such a tokenizer.json keeps tokenizers."""
    path = synth["bytelevel"]
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else \
        json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    assert load_encoder(path).fast is not None
    data.setdefault("added_tokens", []).append(
        {"id": max(data["model"]["vocab"].values()) + 1, "content": "<mask>", "single_word": False, "lstrip": True,
         "rstrip": False, "normalized": False, "special": True})
    f = tmp_path / "tokenizer.json"
    f.write_text(json.dumps(data), encoding="utf-8")
    e = load_encoder(f)
    assert e.fast is None and e.library == "tokenizers"


def test_run_metrics_workers_give_the_same_values(tmp_path, synth):
    """One process per tokenizer (spawned workers) or everything in process: identical values."""
    a = tmp_path / "a.txt"
    a.write_text("\n".join(generated_text(3, 2500)), encoding="utf-8")
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(json.dumps({"text": t}) for t in generated_text(4, 400)) + "\n", encoding="utf-8")
    toks = [str(synth["bytelevel"]), str(synth["wordpiece"]), str(synth["metaspace"])]
    one = run_metrics(toks, [str(a), str(b)], progress=False, workers=1)
    two = run_metrics(toks, [str(a), str(b)], progress=False, workers=2)
    assert one["seconds"]["workers"] == 1 and two["seconds"]["workers"] == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(one["results"]) == strip(two["results"])
    assert [r["tokenizer"] for r in two["results"]] == [t for t in toks for _ in range(2)]
    assert one["tokenizers"] == two["tokenizers"]
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokbenchError, match="tokenizer.json: corrupt JSON"):  # a worker's error reaches the caller
        run_metrics([toks[0], str(bad)], [str(a)], progress=False, workers=2)


def test_continued_words_stream_against_brute_force(synth):
    """The vectorised stream reading (with its per-corpus text kept) equals a plain loop over the
    tokens' byte spans, on several documents with Unicode spaces and a character-segmented one."""
    from tokbench.metrics.core import continued_words_from_stream, stream_text

    enc = load_encoder(synth["bytelevel"])
    docs = [d.replace(" ", "\u00a0", 3).replace(" ", "\u3000", 2) for d in generated_text(11, 1500)]
    docs += ["日本語のテキストです。日本語", "x", "  lead and trail  "]
    e = encode_documents(enc, docs)
    w = count_words(docs)
    got = continued_words_from_stream(enc, docs, e, w.char_docs)
    assert got == continued_words_from_stream(enc, docs, e, w.char_docs, stream_text(docs, w.char_docs))
    words = continued = 0
    tb = enc.vocab.token_bytes
    for d, is_char, ids in zip(docs, w.char_docs, enc.encode(docs)):
        if is_char:
            continue
        starts, pos = set(), 0
        for t in ids:
            starts.add(pos)
            pos += len(tb[t])
        data = d.encode("utf-8")
        i = 0
        spans = []
        for word in d.split():  # byte span of each whitespace word, in order
            wb = word.encode("utf-8")
            i = data.index(wb, i)
            spans.append((i, i + len(wb)))
            i += len(wb)
        words += len(spans)
        continued += sum(1 for s, t in spans if any(s < p < t for p in starts))
    assert got == pytest.approx(continued / words, abs=1e-15)
