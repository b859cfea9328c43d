"""HF folder I/O: embedding/head detection, byte-range reads, streaming writes in the base's dtype."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tokbench.errors import TokbenchError
from tokbench.vocab.model_io import (bf16_to_f32, f32_to_bf16, open_model_folder, read_header, read_tensor_f32,
                                     write_model_folder)
from transplant_tiny import WORDS_A, make_model, train_tokenizer

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(WORDS_A, 0, 300, ["<unk>", "<s>", "</s>"])


@pytest.mark.parametrize("tied,sharded,dtype", [(True, False, "bfloat16"), (False, True, "float16"),
                                                (False, False, "float32")])
def test_detect_and_read(tmp_path, tok, tied, sharded, dtype):
    from transformers import AutoModelForCausalLM

    folder = make_model(tmp_path / "m", tok, tied=tied, sharded=sharded, dtype=dtype)
    m = open_model_folder(folder)
    assert m.embed_name == "model.embed_tokens.weight"
    assert m.head_name == (None if tied else "lm_head.weight")
    assert m.dtype == {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[dtype]
    assert (len(m.shards) > 1) == sharded
    ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    np.testing.assert_array_equal(m.read_embedding(), ref.get_input_embeddings().weight.detach().numpy())
    np.testing.assert_array_equal(m.read_head(), ref.get_output_embeddings().weight.detach().numpy())


@pytest.mark.parametrize("tied,sharded", [(True, True), (False, True), (False, False)])
def test_write_round_trip(tmp_path, tok, tied, sharded):
    from transformers import AutoModelForCausalLM

    folder = make_model(tmp_path / "m", tok, tied=tied, sharded=sharded, dtype="bfloat16")
    m = open_model_folder(folder)
    rows = m.vocab_rows + 7
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((rows, m.hidden)).astype(np.float32)
    head = None if tied else rng.standard_normal((rows, m.hidden)).astype(np.float32)
    out = tmp_path / "out"
    out.mkdir()
    write_model_folder(m, out, emb, head, {"eos_token_id": 3}, progress=False)
    (out / "generation_config.json").write_text("{}")
    o = open_model_folder(out)
    assert o.shape == (rows, m.hidden) and o.dtype == "BF16" and o.tied == tied
    assert [p.name for p in o.shards] == [p.name for p in m.shards]
    np.testing.assert_array_equal(o.read_embedding(), bf16_to_f32(f32_to_bf16(emb)))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == rows and cfg["eos_token_id"] == 3
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.get_input_embeddings().weight.shape == (rows, m.hidden)
    if not tied:
        np.testing.assert_array_equal(o.read_head(), bf16_to_f32(f32_to_bf16(head)))
    for name, shard in m.files.items():
        if name not in (m.embed_name, m.head_name):
            h_in, h_out = read_header(shard)[0][name], read_header(o.files[name])[0][name]
            assert h_in["dtype"] == h_out["dtype"] and h_in["shape"] == h_out["shape"]
            np.testing.assert_array_equal(read_tensor_f32(o.files[name], name), read_tensor_f32(shard, name))


def test_bf16_conversion_matches_torch():
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 10
    mine = bf16_to_f32(f32_to_bf16(x))
    ref = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(mine, ref)


def test_errors_name_the_file(tmp_path, tok):
    with pytest.raises(TokbenchError, match="no config.json"):
        open_model_folder(tmp_path)
    folder = make_model(tmp_path / "m", tok)
    (folder / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(TokbenchError, match="not a readable safetensors") as e:
        open_model_folder(folder)
    assert "model.safetensors" in str(e.value)
    (folder / "model.safetensors").unlink()
    with pytest.raises(TokbenchError, match="no model weights"):
        open_model_folder(folder)
    (folder / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(TokbenchError, match="pickled") as e:
        open_model_folder(folder)
    assert "pytorch_model.bin" in str(e.value) and "safetensors" in str(e.value)


def test_untied_config_without_head(tmp_path, tok):
    folder = make_model(tmp_path / "m", tok, tied=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokbenchError, match="no output head") as e:
        open_model_folder(folder)
    assert "config.json" in str(e.value)


@pytest.mark.assets
def test_real_smollm2_detected(require_asset):
    m = open_model_folder(require_asset("smollm2-135m", kind="model"))
    assert m.tied and m.shape == (49152, 576) and m.dtype == "BF16"
