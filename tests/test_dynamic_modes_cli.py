"""Dynamic merging: the boundary modes beyond word / pretokens, the % of word level budget, non-byte-level
tokenizers, and the `tokbench dynamic merge|curve|fidelity` commands with their one-line errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import require_asset
from tokbench.cli import main
from tokbench.dynamic import DynamicTokenizer, boundary_mask, merge_batch
from tokbench.dynamic.merge import _unicode_words
from tokbench.dynamic.stats import CURVE_COLUMNS, corpus_lines
from tokbench.errors import TokbenchError


@pytest.fixture(scope="module")
def smollm2():
    require_asset("smollm2")
    return DynamicTokenizer.load("smollm2")


@pytest.fixture(scope="module")
def hindi():
    require_asset("tatoeba")
    from tokbench.assets.corpus import iter_tatoeba

    return next(t for t in iter_tatoeba("tatoeba") if t.lang == "hin").lines[:64]


def test_pretokens_unicode_keeps_indic_words_whole_where_the_tokenizers_regex_cuts_them(hindi):
    require_asset("llama3")
    tok = DynamicTokenizer.load("llama3")
    uni = merge_batch(tok, hindi, mode="pretokens-unicode")
    own = merge_batch(tok, hindi, mode="pretokens")
    # Llama 3's pattern cuts Devanagari words at every combining mark: little left to merge
    assert own.pct_shorter < 15 < 40 < uni.pct_shorter
    # at exhaustion a merged token starts exactly where a base token and a regex piece both start (a base
    # token that straddles a piece start, like Llama 3's "ैं।", is never split); most pieces are one token
    whole = total = 0
    for s, text in enumerate(hindi):
        pieces = _unicode_words().findall(text)
        starts, off = set(), 0
        for p in pieces:
            starts.add(off)
            off += len(p.encode())
        base_starts, off = set(), 0
        for t in uni.ids[s]:
            base_starts.add(off)
            off += len(tok.vocab.token_bytes[t])
        merged_starts, off, got = set(), 0, set()
        for t in uni.merged[s]:
            merged_starts.add(off)
            b = uni.base_token_bytes[t] if t < uni.n_base else uni.token_bytes[t - uni.n_base]
            got.add(b)
            off += len(b)
        assert merged_starts == base_starts & starts, s
        whole += sum(p.encode() in got for p in pieces)
        total += len(pieces)
    assert whole > 0.75 * total  # 445 of 561 on these 64 lines


def test_word_hyphen_joins_only_hyphens_and_sentence_merges_whole_sequences(smollm2):
    texts = ["a well-known cat's hat, a well-known cat's hat."] * 4
    word = merge_batch(smollm2, texts, mode="word")
    hyph = merge_batch(smollm2, texts, mode="word_hyphen")
    assert b" well-known" in hyph.token_bytes and b" well-known" in word.token_bytes
    assert b" cat's" in word.token_bytes and b" cat's" not in hyph.token_bytes
    assert not any(b.endswith((b",", b".")) and len(b) > 1 for b in hyph.token_bytes)
    assert hyph.word_level > word.word_level
    sent = merge_batch(smollm2, texts + ["another line"], mode="sentence")
    assert sent.word_level == 5 and [len(s) for s in sent.merged] == [1] * 5
    assert sent.token_bytes[sent.merged[0][0] - sent.n_base] == texts[0].encode()


def test_pct_of_word_level_budget(smollm2):
    require_asset("wikitext2-test")
    batch = corpus_lines("wikitext2-test", limit_lines=32)
    full = merge_batch(smollm2, batch)
    room = full.tokens_before - full.word_level
    for pct in (10, 50, 99.5):
        mb = merge_batch(smollm2, batch, pct_of_word_level=pct)
        assert mb.pct_of_word_level >= pct and mb.lengths == full.lengths[:len(mb.lengths)]
        assert 100.0 * (mb.tokens_before - mb.lengths[-2]) / room < pct  # the first merge that reaches it
    assert merge_batch(smollm2, batch, pct_of_word_level=100).lengths == full.lengths
    with pytest.raises(TokbenchError, match="cannot be met under the caps"):
        merge_batch(smollm2, batch, pct_of_word_level=90, max_constituents=2)
    with pytest.raises(TokbenchError, match="one budget"):
        merge_batch(smollm2, batch, merges=3, pct_of_word_level=5)


def test_unigram_tokenizer_merges_through_tokenizers(hindi):
    require_asset("xlm-r")
    from tokenizers import Tokenizer

    from tokbench.assets import resolve

    tok = DynamicTokenizer.load("xlm-r")
    ref = Tokenizer.from_file(str(resolve("xlm-r", kind="tokenizer")))
    ids = [e.ids for e in ref.encode_batch(hindi, add_special_tokens=False)]
    for mode in ("word", "pretokens", "pretokens-unicode"):
        mb = merge_batch(tok, hindi, mode=mode)
        assert mb.ids == ids and [mb.expand(s) for s in mb.merged] == ids
        assert mb.tokens_after == mb.word_level
    # XLM-R's Metaspace pre-tokens are whitespace words: pretokens and word cut alike here
    assert boundary_mask(tok, ids, "pretokens") == boundary_mask(tok, ids, "word")


def _run(*args):
    return CliRunner().invoke(main, ["dynamic", *args])


def test_cli_merge_json_summary_and_errors(smollm2, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("new york is big\n\nnew york is old\nnew york\n")
    out = tmp_path / "m.json"
    r = _run("merge", "-t", "smollm2", "-i", str(batch), "--pct-of-word-level", "100", "-o", str(out), "--summary")
    assert r.exit_code == 0, r.output
    assert "% shorter absolute" in r.output and "of the word level" in r.output
    d = json.loads(out.read_text())
    assert len(d["merged"]) == 3 and d["pct_of_word_level"] == 100.0
    york = [t for t in d["dynamic_tokens"] if t["text"] == " york"]
    assert york and bytes.fromhex(york[0]["bytes_hex"]) == b" york"
    ids = smollm2.bpe.encode_ordinary_batch(["new york is big", "new york is old"])
    (tmp_path / "ids.json").write_text(json.dumps({"ids": ids}))
    r = _run("merge", "-t", "smollm2", "-i", str(tmp_path / "ids.json"), "--merges", "1")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["lengths"] == [sum(map(len, ids)), sum(map(len, ids)) - 2]
    cases = [
        ("empty.txt", "\n\n", [], "batch is empty"),
        ("empty.json", "[]", [], "batch is empty"),
        ("oov.json", "[[1, 2], [49152]]", [], "outside the vocabulary"),
        ("neg.json", "[[-1]]", [], "outside the vocabulary"),
        ("bad.json", "[[1, \"x\"]]", [], "not a list of id lists"),
        ("b.txt", "a plain English sentence.", ["--shorter-pct", "90"], "cannot be met"),
        ("b.txt", "a plain English sentence.", ["--mode", "words"], "Invalid value"),
    ]
    for name, text, extra, msg in cases:
        (tmp_path / name).write_text(text)
        r = _run("merge", "-t", "smollm2", "-i", str(tmp_path / name), *extra)
        assert r.exit_code == 2, (name, r.output)
        assert msg in r.stderr and "Traceback" not in r.output, (name, r.stderr)
        if msg != "Invalid value":
            assert r.stderr.count("\n") == 1 and str(tmp_path / name) in r.stderr


def test_cli_curve_csv_overlays_the_reference_schema(smollm2, tmp_path):
    require_asset("wikitext2-test")
    out = tmp_path / "curve.csv"
    r = _run("curve", "-t", "smollm2", "-c", "wikitext2-test", "--limit-lines", "64", "-q", "-o", str(out))
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(CURVE_COLUMNS)
    rows = [dict(zip(CURVE_COLUMNS, map(float, x.split(",")))) for x in lines[1:]]
    lines64 = corpus_lines("wikitext2-test", limit_lines=64)
    before = sum(map(len, smollm2.bpe.encode_ordinary_batch(lines64)))
    assert rows[0]["Number of Merges"] == 0 and rows[0]["Avg Sequence Length"] == pytest.approx(before / 64)
    assert rows[-1]["% of Word Level"] == 100.0
    assert all(a["Total Tokens"] >= b["Total Tokens"] for a, b in zip(rows, rows[1:]))
    r = _run("curve", "-t", "smollm2", "-c", "wikitext2-test", "--limit-lines", "64", "-q", "--merges", "3",
             "--format", "json", "--mode", "pretokens-unicode")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert len(d["curve"]) == 4 and d["mode"] == "pretokens-unicode"


def test_cli_fidelity_csv_and_model_errors(tmp_path, monkeypatch):
    model = require_asset("tbd-gpt2-d128")
    require_asset("gpt2")
    out = tmp_path / "f.csv"
    r = _run("fidelity", "-m", str(model), "-t", "gpt2", "--windows", "2", "--prefix", "24", "--continuation", "8",
             "--budgets", "50%", "--methods", "mean", "--control", "--threads", "1", "--format", "csv", "-q",
             "--merge-batch", "1", "--cache", str(tmp_path / "cache"), "-o", str(out))
    assert r.exit_code == 0, r.output
    head, *rows = out.read_text().splitlines()
    assert "bits_per_byte" in head.split(",") and len(rows) == 3  # unmerged, 50 %, control
    assert {"delta_ci95_lo", "pct_of_word_mode_level"} <= set(head.split(","))
    assert [f.name.startswith("fidelity-teacher-") for f in (tmp_path / "cache").iterdir()] == [True]
    r = _run("fidelity", "-m", str(model), "-t", "gpt2", "--budgets", "ten", "-q")
    assert r.exit_code == 2 and "neither a number of merges" in r.stderr
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{}")
    r = _run("fidelity", "-m", str(junk), "-t", "gpt2", "--windows", "1", "-q")
    assert r.exit_code == 2 and "does not load" in r.stderr and "Traceback" not in r.output

    import transformers

    class NoEmbedding:
        def get_input_embeddings(self):
            return None

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: type("M", (), {"eval": lambda self: NoEmbedding()})())
    r = _run("fidelity", "-m", str(model), "-t", "gpt2", "--windows", "1", "-q")
    assert r.exit_code == 2 and "no input embedding matrix" in r.stderr and "Traceback" not in r.output
