"""Chat template and generation config of a transplanted model: the target's template when it has one, the
base's only when all its control tokens exist in the target, eos / end-of-turn ids the same in every file.

Real pairs (SmolLM2-135M onto GPT-2, Llama 3, Qwen3 and a bare Qwen3 tokenizer.json) run the tokenizer-files
stage of transplant on its own (the weights do not take part in it); one tiny model runs end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tokbench.transplant import transplant
from tokbench.transplant.chat import finish_chat
from tokbench.transplant.core import _tokenizer_files, _write_tokenizer_config
from tokbench.vocab import load_vocabulary

from transplant_tiny import base_and_target

CHAT = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"}]


def _stage(base_dir: Path, tok_path: Path, tmp: Path) -> tuple[dict, object]:
    """What transplant does with the tokenizer files of OUT, without the weights."""
    tmp.mkdir()
    target = load_vocabulary(tok_path)
    files = _tokenizer_files(tok_path)
    for src, name in files:
        shutil.copyfile(src, tmp / name)
    if not any(name == "tokenizer_config.json" for _, name in files):
        _write_tokenizer_config(tmp, target)
    shutil.copyfile(base_dir / "generation_config.json", tmp / "generation_config.json")
    updates = {f"{r}_token_id": target.specials.get(r) for r in ("bos", "eos", "pad")}
    return finish_chat(tmp, base_dir, load_vocabulary(base_dir), target, updates), target


def _consistent(folder: Path, eos: int, stop: list[int]) -> None:
    from transformers import AutoTokenizer

    gen = json.loads((folder / "generation_config.json").read_text())
    got = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert got == stop and got[0] == eos
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.eos_token_id == eos


@pytest.fixture(scope="module")
def smollm2(require_asset):
    return require_asset("smollm2-135m", kind="model")


def test_target_template_qwen3(tmp_path, smollm2, require_asset):
    from transformers import AutoTokenizer

    info, target = _stage(smollm2, require_asset("qwen3"), tmp_path / "out")
    assert info["source"] == "target" and info["end_of_turn_tokens"] == ["<|im_end|>"]
    assert not (tmp_path / "out" / "chat_template.jinja").exists()
    _consistent(tmp_path / "out", 151645, [151645])
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    ids = tok.apply_chat_template(CHAT, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids.count(151644) == 2 and ids.count(151645) == 2  # <|im_start|> / <|im_end|> as single ids


@pytest.mark.parametrize("asset,eos", [("gpt2", 50256), ("llama3-hf", 128001)])
def test_base_template_not_carried(tmp_path, smollm2, require_asset, asset, eos):
    # SmolLM2's ChatML template needs <|im_start|> / <|im_end|>, which neither GPT-2 nor Llama 3 has
    info, _ = _stage(smollm2, require_asset(asset), tmp_path / "out")
    assert info["source"] is None
    assert set(info["missing"]) == {"<|im_start|>", "<|im_end|>"}
    assert "not carried over" in info["note"]
    assert not (tmp_path / "out" / "chat_template.jinja").exists()
    _consistent(tmp_path / "out", eos, [eos])


def test_base_template_carried(tmp_path, smollm2, require_asset):
    # a bare Qwen3 tokenizer.json has no template but has every control token SmolLM2's template writes
    from transformers import AutoTokenizer

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(require_asset("qwen3") / "tokenizer.json", bare / "tokenizer.json")
    info, target = _stage(smollm2, bare / "tokenizer.json", tmp_path / "out")
    assert info["source"] == "base" and info["control_tokens"] == ["<|im_start|>", "<|im_end|>"]
    out = tmp_path / "out"
    assert (out / "chat_template.jinja").read_text() == (smollm2 / "chat_template.jinja").read_text()
    eos = target.specials["eos"]
    assert target.tokens[eos] == "<|endoftext|>"
    _consistent(out, eos, [eos, 151645])  # generation also stops at the template's <|im_end|>
    mine, theirs = AutoTokenizer.from_pretrained(str(out)), AutoTokenizer.from_pretrained(str(smollm2))
    assert mine.apply_chat_template(CHAT, tokenize=False) == theirs.apply_chat_template(CHAT, tokenize=False)


def test_end_to_end_tiny(tmp_path):
    # the base's template speaks only through eos_token: the target has an eos, so it is carried; files agree
    from transformers import AutoTokenizer

    base, target, _ = base_and_target(tmp_path)
    (base / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
                                              "{{ eos_token }}{% endfor %}")
    report = transplant(base, target, tmp_path / "out", method="subword", progress=False)
    chat = report["chat_template"]
    assert chat["source"] == "base" and chat["control_tokens"] == ["eos_token"]
    out = tmp_path / "out"
    eos = load_vocabulary(target).specials["eos"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eos_token_id"] == eos == report["config_ids"]["eos_token_id"]
    _consistent(out, eos, [eos])
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.apply_chat_template(CHAT, tokenize=False).count("<|endoftext|>") == 2
    assert "chat template" in (out / "README.md").read_text()
    saved = json.loads((out / "transplant_report.json").read_text())
    assert saved["chat_template"]["source"] == "base"
