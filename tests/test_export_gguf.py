"""GGUF export: metadata, tokens, merges, token types and tensors read back with gguf's own reader; the
model and tokenizer loaded back by transformers' GGUF loader (an independent implementation) give the same
logits and ids; real tokenizers' metadata (SmolLM2, Llama 3, Qwen3); refusals and faults."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokbench.errors import TokbenchError
from tokbench.export import export_gguf
from tokbench.export.gguf import unpermute
from tokbench.vocab.model_io import open_model_folder, read_tensor_f32

from transplant_tiny import base_and_target


def _fields(path: Path) -> tuple[dict, dict]:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items()}, {t.name: t for t in r.tensors}


def _tokenizer_json_order(folder: Path) -> tuple[list[str], list[str], dict[int, dict]]:
    tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    added = {int(a["id"]): a for a in tj["added_tokens"]}
    ids = {i: t for t, i in tj["model"]["vocab"].items()}
    ids.update({i: a["content"] for i, a in added.items()})
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return [ids[i] for i in range(max(ids) + 1)], merges, added


def test_tiny_untied_round_trip(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, _, _ = base_and_target(tmp_path, tied=False)
    out = tmp_path / "tiny.gguf"
    r = export_gguf(base, out, progress=False)
    assert r["architecture"] == "llama" and r["file_type"] == "ALL_F32" and r["tokenizer_pre"] == "gpt-2"
    kv, tensors = _fields(out)
    cfg = json.loads((base / "config.json").read_text())
    assert kv["general.architecture"] == "llama"
    assert kv["llama.block_count"] == cfg["num_hidden_layers"]
    assert kv["llama.attention.head_count"] == cfg["num_attention_heads"]
    assert kv["llama.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert kv["llama.embedding_length"] == cfg["hidden_size"]
    tokens, merges, added = _tokenizer_json_order(base)
    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.tokens"] == tokens
    assert kv["tokenizer.ggml.merges"] == merges
    types = kv["tokenizer.ggml.token_type"]
    assert [i for i, t in enumerate(types) if t == 3] == sorted(added)  # <unk> <s> </s>: control
    assert kv["tokenizer.ggml.bos_token_id"] == cfg["bos_token_id"]
    assert kv["tokenizer.ggml.eos_token_id"] == cfg["eos_token_id"]
    # every tensor: same values (q/k back from llama.cpp's rotary layout), untied head as output.weight
    m = open_model_folder(base)
    assert "output.weight" in tensors and len(tensors) == len(m.files)
    q = tensors["blk.0.attn_q.weight"]
    hf_q = read_tensor_f32(m.files["model.layers.0.self_attn.q_proj.weight"], "model.layers.0.self_attn.q_proj.weight")
    got = np.asarray(q.data).reshape(hf_q.shape)
    assert not np.array_equal(got, hf_q)  # really permuted
    assert np.array_equal(unpermute(got, cfg["num_attention_heads"]), hf_q)
    emb = read_tensor_f32(m.files[m.embed_name], m.embed_name)
    assert np.array_equal(np.asarray(tensors["token_embd.weight"].data).reshape(emb.shape), emb)
    # transformers' own GGUF loader: the same model and tokenizer
    hf = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    gg = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 20, 33, 100, 7, 250]])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, gg(ids).logits)
    text = "the cat sat on the mat and 12 dogs ran to the big red house. one 7"
    assert (AutoTokenizer.from_pretrained(str(base))(text)["input_ids"]
            == AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)(text)["input_ids"])


def test_tiny_bf16_sharded_tied(tmp_path):
    base, _, _ = base_and_target(tmp_path, tied=True, sharded=True, dtype="bfloat16")
    out = tmp_path / "tied.gguf"
    r = export_gguf(base, out, progress=False)
    assert r["file_type"] == "MOSTLY_BF16"
    kv, tensors = _fields(out)
    assert "output.weight" not in tensors  # tied: llama.cpp uses token_embd
    m = open_model_folder(base)
    assert len(m.shards) > 1
    header, off = m.headers[m.files["model.layers.1.mlp.down_proj.weight"]]
    info = header["model.layers.1.mlp.down_proj.weight"]
    raw = np.fromfile(m.files["model.layers.1.mlp.down_proj.weight"], dtype="<u2",
                      count=(info["data_offsets"][1] - info["data_offsets"][0]) // 2, offset=off + info["data_offsets"][0])
    t = tensors["blk.1.ffn_down.weight"]
    assert t.tensor_type.name == "BF16"
    assert np.asarray(t.data).tobytes() == raw.tobytes()  # bf16 bits unchanged
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"  # 1-D: F32 as llama.cpp expects


def _asset_dir(p: Path) -> Path:
    return p if p.is_dir() else p.parent


def _tiny_on(tokenizer_dir: Path, folder: Path) -> Path:
    """A 1-layer llama of hidden 16 on a real tokenizer (its files copied, its role ids in config.json)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokbench.vocab import load_vocabulary

    v = load_vocabulary(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(v), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True,
                      bos_token_id=v.specials.get("bos"), eos_token_id=v.specials.get("eos"),
                      pad_token_id=v.specials.get("pad"))
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenizer.model"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


def test_smollm2_round_trip(tmp_path, require_asset):
    # the real SmolLM2 tokenizer through the file and back with gguf's reader: tokens, merges, types, ids, template
    src = require_asset("smollm2-135m", kind="model")
    folder = _tiny_on(src, tmp_path / "m")
    out = tmp_path / "smol.gguf"
    r = export_gguf(folder, out, progress=False)
    kv, tensors = _fields(out)
    tokens, merges, added = _tokenizer_json_order(src)
    assert kv["tokenizer.ggml.pre"] == "smollm" == r["tokenizer_pre"]  # what SmolLM2's own GGUF release says
    assert kv["tokenizer.ggml.tokens"] == tokens and kv["tokenizer.ggml.merges"] == merges
    types = kv["tokenizer.ggml.token_type"]
    assert [i for i, t in enumerate(types) if t == 3] == sorted(i for i, a in added.items() if a["special"])
    assert all(types[i] == 1 for i in range(len(tokens)) if i not in added)
    assert kv["tokenizer.chat_template"] == (src / "chat_template.jinja").read_text(encoding="utf-8")
    assert kv["tokenizer.ggml.bos_token_id"] == 1
    assert kv["tokenizer.ggml.eos_token_id"] == 2 == kv["tokenizer.ggml.eot_token_id"]  # <|im_end|> ends turns
    assert tensors["token_embd.weight"].tensor_type.name == "BF16"


def _same_tokens_and_model(folder: Path, gguf_dir: Path, name: str, texts: list[str], model: bool = True) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(folder))
    gg_tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=name)
    for text in texts:
        assert hf_tok(text)["input_ids"] == gg_tok(text)["input_ids"], text[:40]
    if not model:  # (transformers' GGUF reader takes ~10 s per load of a 32k vocabulary)
        return
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    gg = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=name, dtype=torch.float32)
    ids = hf_tok("The history of the city", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, gg(ids).logits)
    assert torch.equal(hf.generate(ids, max_new_tokens=6, do_sample=False),
                       gg.generate(ids, max_new_tokens=6, do_sample=False))


def test_sentencepiece_style_tokenizer_json(tmp_path, require_asset):
    # a real trained model with a SentencePiece-style tokenizer.json (Metaspace, byte fallback): GGUF model `llama`
    from tokbench.eval import load_eval_text

    src = require_asset("tbd-mistral-d128", kind="model")
    out = tmp_path / "g" / "mistral.gguf"
    out.parent.mkdir()
    r = export_gguf(src, out, progress=False)
    assert r["tokenizer_model"] == "llama" and r["tokenizer_pre"] == "default" and r["scores_from"] == "merge ranks"
    # HF's Metaspace skips the prefix before a leading space, llama.cpp does not: said, not hidden
    assert len(r["warnings"]) == 1 and "start with a space" in r["warnings"][0]
    kv, _ = _fields(out)
    tokens, merges, added = _tokenizer_json_order(src)
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.tokens"] == tokens
    assert kv["tokenizer.ggml.merges"] == merges and kv["tokenizer.ggml.add_space_prefix"] is True
    types, scores = kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.scores"]
    assert [i for i, t in enumerate(types) if t == 6] == [i for i, t in enumerate(tokens)
                                                          if len(t) == 6 and t.startswith("<0x") and t.endswith(">")]
    assert types.count(6) == 256 and types[0] == 2 and types[1] == types[2] == 3  # <unk> UNKNOWN, <s> </s> CONTROL
    made = {}
    for rank, m in enumerate(merges):
        made.setdefault(m.replace(" ", "", 1), rank)
    # llama.cpp merges the adjacent pair whose result scores highest: the scores follow the merge order
    assert all(scores[tokens.index(t)] == -(rank + 1) for t, rank in list(made.items())[:2000])
    assert min(scores[i] for i, t in enumerate(tokens) if t in made) > max(
        scores[i] for i, t in enumerate(tokens) if t not in made and types[i] == 1)
    text, _ = load_eval_text("wikitext2-test", 20000)
    _same_tokens_and_model(src, out.parent, out.name,
                           [text, "Hello  world\n\n  \u00fcn\u00efc\u00f6d\u00e9 \u6771\u4eac \U0001f916 x\t end",
                            " leading space"])


def test_sentencepiece_model_file(tmp_path, require_asset):
    # a folder whose only tokenizer file is Llama 2's SentencePiece tokenizer.model: pieces, scores and types as
    # the model file gives them (what llama.cpp's converter writes)
    from tokbench.vocab.sentencepiece_model import parse_model_proto

    src = require_asset("llama2")
    src_dir = src if src.is_dir() else src.parent
    folder = _tiny_on(src_dir, tmp_path / "m")
    assert not (folder / "tokenizer.json").exists()
    out = tmp_path / "g" / "l2.gguf"
    out.parent.mkdir()
    r = export_gguf(folder, out, progress=False)
    assert r["scores_from"] == "tokenizer.model" and r["merges"] == 0
    assert r["warnings"] == []  # SentencePiece itself adds the prefix as llama.cpp does
    kv, _ = _fields(out)
    proto = parse_model_proto(folder / "tokenizer.model")
    assert kv["tokenizer.ggml.tokens"] == [p.piece for p in proto.pieces]
    assert kv["tokenizer.ggml.token_type"] == [int(p.type) for p in proto.pieces]
    assert np.array_equal(np.float32(kv["tokenizer.ggml.scores"]), np.float32([p.score for p in proto.pieces]))
    assert kv["tokenizer.ggml.add_space_prefix"] is True and kv["tokenizer.ggml.bos_token_id"] == 1
    # transformers' GGUF loader rebuilds the merges from the scores; it drops SentencePiece's extra "\u2581" before
    # a leading space (its own reader's behaviour, not the file's), so the texts here start with a letter
    _same_tokens_and_model(folder, out.parent, out.name,
                           ["The history of the city", "Hello  world\n\n  \u00fcn\u00efc\u00f6d\u00e9 \u6771\u4eac"
                            " \U0001f916 x\t end", "a  b   c"], model=False)


@pytest.mark.parametrize("asset,pre,rows", [("llama3-hf", "llama-bpe", None), ("qwen3", "qwen2", 151_936),
                                            ("gpt2", "gpt-2", None)])
def test_real_tokenizer_metadata(require_asset, asset, pre, rows):
    # what the writer is given for the other real tokenizers (the file round trip is the same code as above)
    from tokbench.export.gguf import _add_bos, special_ids, tokenizer_metadata
    from tokbench.vocab.chat import read_template

    p = require_asset(asset)
    src = p if p.is_dir() else p.parent
    tokens, merges, added = _tokenizer_json_order(src)
    m = tokenizer_metadata(src, rows or len(tokens))
    assert m["pre"] == pre and m["tokens"][:len(tokens)] == tokens and m["merges"] == merges
    types = m["types"]
    for i, a in added.items():
        reserved = a["content"].startswith("<|reserved_special_token_")
        assert types[i] == (5 if reserved else 3 if a["special"] else 4), a
    assert all(types[i] == 1 for i in range(len(tokens)) if i not in added)
    if rows:  # Qwen3 models pad the table: ids without a token are UNUSED placeholders
        assert all(t == 5 for t in types[len(tokens):]) and m["tokens"][-1] == f"[PAD{rows - 1}]"
    ids = special_ids(src, m["vocab"], read_template(src)[0])
    if asset == "llama3-hf":
        # this tokenizer.json (converted from tiktoken) has no post-processor adding bos; one that does is honoured
        assert ids["bos"] == 128000 and _add_bos(src, m["tokenizer_json"], 128000) is False
        post = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                                         {"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000]}}}
        assert _add_bos(src, {**m["tokenizer_json"], "post_processor": post}, 128000) is True
        reserved = sum(a["content"].startswith("<|reserved_special_token_") for a in added.values())
        assert sum(t == 5 for t in types) == reserved > 200  # the reserved special tokens, and only they
    if asset == "qwen3":
        assert ids["eos"] == 151645 == ids["eot"] and ids["bos"] is None
    if asset == "gpt2":
        assert ids["eos"] == 50256 and _add_bos(src, m["tokenizer_json"], ids["bos"]) is False


def test_refusals(tmp_path, require_asset, monkeypatch):
    base, _, _ = base_and_target(tmp_path)
    with pytest.raises(TokbenchError, match=r"\.gguf"):
        export_gguf(base, tmp_path / "x.bin", progress=False)
    cfg = json.loads((base / "config.json").read_text())
    other = tmp_path / "gpt2like"
    shutil.copytree(base, other)
    (other / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(TokbenchError, match="supports LlamaForCausalLM.*GPT2LMHeadModel"):
        export_gguf(other, tmp_path / "x.gguf", progress=False)
    bert = _tiny_on(_asset_dir(require_asset("bert")), tmp_path / "bert")
    tj = json.loads((bert / "tokenizer.json").read_text())
    (bert / "tokenizer.json").write_text(json.dumps({**tj, "model": {**tj["model"], "type": "WordLevel"}}))
    with pytest.raises(TokbenchError, match="byte-level and SentencePiece-style BPE, Unigram and WordPiece tokenizers "
                                            r"\(this one: WordLevel"):
        export_gguf(bert, tmp_path / "x.gguf", progress=False)
    tj = json.loads((base / "tokenizer.json").read_text())
    odd = tmp_path / "odd"
    shutil.copytree(base, odd)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{L}+|\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (odd / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(TokbenchError, match="--pre-tokenizer"):
        export_gguf(odd, tmp_path / "x.gguf", progress=False)
    r = export_gguf(odd, tmp_path / "x.gguf", pre_tokenizer="default", progress=False)  # explicit fall-back
    assert _fields(tmp_path / "x.gguf")[0]["tokenizer.ggml.pre"] == "default" == r["tokenizer_pre"]
    with pytest.raises(TokbenchError, match="exists"):
        export_gguf(odd, tmp_path / "x.gguf", progress=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a))
    with pytest.raises(TokbenchError, match=r"tokbench\[gguf\]"):
        export_gguf(base, tmp_path / "y.gguf", progress=False)


def test_fault_leaves_nothing(tmp_path, monkeypatch):
    import gguf

    base, _, _ = base_and_target(tmp_path)
    out = tmp_path / "o" / "f.gguf"
    out.parent.mkdir()
    calls = {"n": 0}
    real = gguf.GGUFWriter.write_tensor_data

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (injected)")
        return real(self, *a, **k)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)
    with pytest.raises(OSError, match="injected"):
        export_gguf(base, out, progress=False)
    assert list(out.parent.iterdir()) == []


def test_cli(tmp_path):
    from click.testing import CliRunner

    from tokbench.cli import main

    base, _, _ = base_and_target(tmp_path)
    res = CliRunner().invoke(main, ["export", "gguf", str(base), "-o", str(tmp_path / "c.gguf")])
    assert res.exit_code == 0, res.output
    assert "llama (ALL_F32)" in res.output and (tmp_path / "c.gguf").is_file()
    res = CliRunner().invoke(main, ["export", "gguf", str(base), "-o", str(tmp_path / "c.gguf")])
    assert res.exit_code == 2 and "exists" in res.output and "Traceback" not in res.output
