"""Bits per byte: tokenizer-independent, in overlapping windows, bytes counted from offsets."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.eval import bits_per_byte, load_eval_text
from transplant_tiny import WORDS_A, make_model, train_tokenizer

torch = pytest.importorskip("torch")
TEXT = "the cat sat on the mat, and the dog ran to the big red house. Ünïcödé 12 7 — one. " * 12


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tok = train_tokenizer(WORDS_A, 0, 300, ["<unk>", "<s>", "</s>"])
    return make_model(tmp_path_factory.mktemp("m") / "m", tok)


def _reference(folder, text):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(lm(ids).logits[0, :-1].float(), -1)
    nll = -logp.gather(-1, ids[0, 1:].unsqueeze(-1)).sum().item()
    first_bytes = len(text[: enc["offset_mapping"][1][0]].encode())
    return nll / math.log(2) / (len(text.encode()) - first_bytes), len(text.encode()) - first_bytes


def test_matches_single_window_reference(model):
    r = bits_per_byte(model, TEXT, chunk=4096, progress=False)
    ref, covered = _reference(model, TEXT)
    assert r["bytes_covered"] == covered and r["bytes_total"] == len(TEXT.encode())
    assert r["bits_per_byte"] == pytest.approx(ref, rel=1e-4)
    assert r["predicted_tokens"] == r["tokens"] - 1


def test_windows_overlap_by_one_token(model):
    small = bits_per_byte(model, TEXT, chunk=16, batch=3, progress=False)
    big = bits_per_byte(model, TEXT, chunk=4096, progress=False)
    assert small["predicted_tokens"] == big["predicted_tokens"]  # every token but the first is predicted
    assert small["bytes_covered"] == big["bytes_covered"]
    assert small["bits_per_byte"] != big["bits_per_byte"]  # less context per token


def test_cache(model, tmp_path):
    a = bits_per_byte(model, TEXT, chunk=64, cache_dir=tmp_path, progress=False)
    b = bits_per_byte(model, TEXT, chunk=64, cache_dir=tmp_path, progress=False)
    assert b.get("cached") and b["bits_per_byte"] == a["bits_per_byte"]
    c = bits_per_byte(model, TEXT[:-10], chunk=64, cache_dir=tmp_path, progress=False)
    assert not c.get("cached")


def test_cli_json(model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(TEXT)
    r = CliRunner().invoke(main, ["eval", str(model), "--text", str(f), "--max-chars", "300", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert data["chars"] == 300 and data["bits_per_byte"] > 0
    r = CliRunner().invoke(main, ["eval", str(model), "--text", str(f)])
    assert r.exit_code == 0 and "bits/byte" in r.output and "bytes covered" in r.output


def test_errors(model, tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("")
    r = CliRunner().invoke(main, ["eval", str(model), "--text", str(empty)])
    assert r.exit_code == 2 and "empty" in r.output


@pytest.mark.assets
def test_real_corpus_text(require_asset):
    require_asset("wikitext2-test", kind="corpus")
    text, label = load_eval_text("wikitext2-test", 5000)
    assert len(text) == 5000 and label == "wikitext2-test"


@pytest.mark.assets
def test_real_small_model(require_asset):
    m = require_asset("tbd-mistral-d128", kind="model")
    require_asset("wikitext2-test", kind="corpus")
    text, _ = load_eval_text("wikitext2-test", 3000)
    r = bits_per_byte(m, text, progress=False)
    assert 1.0 < r["bits_per_byte"] < 4.0 and r["bytes_covered"] > 2900
