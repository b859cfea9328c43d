"""Bits per byte: tokenizer-independent, in overlapping windows, bytes counted from offsets."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.eval import bits_per_byte, load_eval_text
from tokbench.eval import bpb as bpb_module
from tokbench.errors import TokbenchError
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


def _plain_windows(folder, text, chunk):
    """The same windows done plainly: one window at a time, model(input_ids).logits, cross-entropy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    nats, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, chunk - 1):
            w = torch.tensor([ids[s:s + chunk]])
            logits = lm(w).logits[0, :-1].float()
            nats += torch.nn.functional.cross_entropy(logits, w[0, 1:], reduction="sum").item()
            n += w.shape[1] - 1
    return nats, n


@pytest.mark.parametrize("chunk,batch", [(16, 3), (16, 1), (37, 4), (256, 4)])
def test_fast_path_equals_plain_reference(model, chunk, batch):
    r = bits_per_byte(model, TEXT, chunk=chunk, batch=batch, progress=False)
    nats, n = _plain_windows(model, TEXT, chunk)
    assert r["predicted_tokens"] == n
    assert r["bits_per_byte"] == pytest.approx(nats / math.log(2) / r["bytes_covered"], rel=1e-6)


def test_sliced_head_equals_full_logits(model, monkeypatch):
    a = bits_per_byte(model, TEXT, chunk=40, batch=2, progress=False)
    monkeypatch.setattr(bpb_module, "_HEAD_ROWS", 7)  # slices that cut windows and batches anywhere
    b = bits_per_byte(model, TEXT, chunk=40, batch=2, progress=False)
    monkeypatch.setattr(bpb_module, "split_head", lambda lm: None)  # the plain path, for any architecture
    c = bits_per_byte(model, TEXT, chunk=40, batch=2, progress=False)
    assert a["bits_per_byte"] == pytest.approx(b["bits_per_byte"], rel=1e-6)
    assert a["bits_per_byte"] == pytest.approx(c["bits_per_byte"], rel=1e-6)


def test_windows_and_batches():
    assert bpb_module.eval_windows(10, 4) == [(0, 4), (3, 7), (6, 10)]
    assert bpb_module.eval_windows(11, 4) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    assert bpb_module.eval_windows(2, 512) == [(0, 2)]
    with pytest.raises(TokbenchError):
        bpb_module.eval_windows(10, 1)


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


@pytest.mark.assets
@pytest.mark.parametrize("name", ["tbd-mistral-d128", "tbd-gpt2-d128"])
def test_real_model_fast_path_equals_plain_reference(require_asset, name):
    m = require_asset(name, kind="model")
    require_asset("wikitext2-test", kind="corpus")
    text, _ = load_eval_text("wikitext2-test", 6000)
    r = bits_per_byte(m, text, chunk=128, batch=4, progress=False)
    nats, n = _plain_windows(m, text, 128)
    assert r["predicted_tokens"] == n
    assert r["bits_per_byte"] == pytest.approx(nats / math.log(2) / r["bytes_covered"], rel=1e-6)
