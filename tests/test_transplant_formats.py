"""`tokbench transplant` with the formats of tests/test_vocab_formats.py on either side: a Gemma-style
tokenizer.json and a Mistral tekken.json, as the base model's tokenizer and as the target. Every output
loads in transformers, tokenizes like the target and generates."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpe_corpora import lines
from format_tokenizers import GEMMA_UNUSED, gemma_style, write_tekken
from tokbench.transplant import transplant
from transplant_tiny import base_and_target, make_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SAMPLE = ["the cat ran far into the forest", "    def f(x):\n        return x  # 12 spaces    end"]


def _loads_and_generates(out: Path, expected_ids) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert [tok(t, add_special_tokens=False).input_ids for t in SAMPLE] == [expected_ids(t) for t in SAMPLE]
    ids = tok(SAMPLE[0], return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert gen.shape[1] > ids.shape[1]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, require_asset) -> Path:
    train = (lines("tinyshakespeare", require_asset("tinyshakespeare"))[:3000]
             + lines("code-python", require_asset("code-python"))[:3000])
    return gemma_style(tmp_path_factory.mktemp("gemma") / "tok", train, vocab_size=800).parent


@pytest.fixture(scope="module")
def tekken(tmp_path_factory, require_asset) -> Path:
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(require_asset("gpt2-tiktoken")))
    return write_tekken(tmp_path_factory.mktemp("tekken") / "tekken.json", ranks, inner=20000, num_special=100,
                        specials=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"])


def test_gemma_style_target(tmp_path, gemma):
    from tokenizers import Tokenizer

    base, _, _ = base_and_target(tmp_path)
    rep = transplant(base, gemma, tmp_path / "out", method="subword", progress=False)
    assert rep["counts"]["unused"] == len(GEMMA_UNUSED) and rep["counts"]["shared"] > 50
    lib = Tokenizer.from_file(str(gemma / "tokenizer.json"))
    _loads_and_generates(tmp_path / "out", lambda t: lib.encode(t, add_special_tokens=False).ids)


def test_gemma_style_base(tmp_path, gemma):
    from tokenizers import Tokenizer

    _, target, _ = base_and_target(tmp_path)
    base = make_model(tmp_path / "gbase", Tokenizer.from_file(str(gemma / "tokenizer.json")), bos="<bos>",
                      eos="<eos>", pad="<pad>")
    rep = transplant(base, target, tmp_path / "out", method="mean", progress=False)
    assert rep["counts"]["shared"] > 50 and rep["counts"]["base_size"] == len(json.loads(
        (gemma / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    lib = Tokenizer.from_file(str(target / "tokenizer.json"))
    _loads_and_generates(tmp_path / "out", lambda t: lib.encode(t, add_special_tokens=False).ids)


def test_tekken_target(tmp_path, tekken):
    from tokbench.bpe import BPE

    base, _, _ = base_and_target(tmp_path)
    rep = transplant(base, tekken, tmp_path / "out", method="subword", progress=False)
    out = tmp_path / "out"
    assert (out / "tekken.json").read_bytes() == tekken.read_bytes() and (out / "tokenizer.json").is_file()
    assert rep["counts"]["target_size"] == 20100 and rep["counts"]["unused"] == 95
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["eos_token"]) == ("<s>", "</s>")
    enc = BPE.from_file(tekken)
    _loads_and_generates(out, enc.encode_ordinary)


def test_tekken_base(tmp_path, tekken):
    from tokenizers import Tokenizer

    from tokbench.vocab.tekken import tekken_tokenizer_json

    _, target, _ = base_and_target(tmp_path)
    tok = Tokenizer.from_str(json.dumps(tekken_tokenizer_json(tekken)))
    base = make_model(tmp_path / "tbase", tok, bos="<s>", eos="</s>")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (base / name).unlink(missing_ok=True)
    shutil.copy(tekken, base / "tekken.json")  # the base folder's only tokenizer file
    rep = transplant(base, target, tmp_path / "out", method="subword", progress=False)
    assert rep["counts"]["base_size"] == 20100 and rep["counts"]["shared"] > 100
    lib = Tokenizer.from_file(str(target / "tokenizer.json"))
    _loads_and_generates(tmp_path / "out", lambda t: lib.encode(t, add_special_tokens=False).ids)


def test_wordpiece_target_generates_from_the_tokenizers_own_output(tmp_path, require_asset):
    """A BERT (WordPiece) target's tokenizer returns token_type_ids by default, which a causal LM's forward
    refuses: the output's tokenizer_config.json names the causal inputs, so `generate(**tok(text))` works,
    and the target's own folder is left as it was."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bert = require_asset("bert")
    bert_dir = bert if bert.is_dir() else bert.parent
    before = {p.name: p.read_bytes() for p in bert_dir.iterdir() if p.is_file()}
    assert "token_type_ids" in AutoTokenizer.from_pretrained(str(bert_dir))("the cat")
    base, _, _ = base_and_target(tmp_path)
    transplant(base, bert_dir, tmp_path / "out", method="subword", progress=False)
    out = tmp_path / "out"
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["model_input_names"] == ["input_ids", "attention_mask"]
    assert cfg["tokenizer_class"] == json.loads(before["tokenizer_config.json"])["tokenizer_class"]
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    enc = tok(SAMPLE[0], return_tensors="pt")
    assert sorted(enc.keys()) == ["attention_mask", "input_ids"]
    gen = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    assert {p.name: p.read_bytes() for p in bert_dir.iterdir() if p.is_file()} == before
