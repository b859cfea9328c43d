"""tokbench transplant on tiny synthetic Llama models: every output loads with transformers and
greedy-generates; shared rows and every other tensor come through unchanged; errors name the file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.errors import TokbenchError
from tokbench.transplant import transplant
from tokbench.vocab import align, load_vocabulary
from tokbench.vocab.model_io import open_model_folder, read_header, read_tensor_f32
from transplant_tiny import base_and_target, folder_digest, make_aux

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _load_and_generate(out: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    ids = tok("the cat ran", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert gen.shape[1] > ids.shape[1]
    return tok.decode(gen[0])


CASES = [  # tied, sharded, dtype
    (True, False, "bfloat16"),
    (False, True, "float32"),
    (True, True, "float32"),
    (False, False, "bfloat16"),
]


@pytest.mark.parametrize("tied,sharded,dtype", CASES)
def test_omp_with_donor_loads_and_generates(tmp_path, tied, sharded, dtype):
    base, target, donor = base_and_target(tmp_path, tied=tied, sharded=sharded, dtype=dtype)
    before = folder_digest(base)
    out = tmp_path / "out"
    rep = transplant(base, target, out, donor=donor, method="omp", progress=False)
    assert folder_digest(base) == before  # BASE never modified
    text = _load_and_generate(out)
    assert text.startswith("the cat ran")

    bm, om = open_model_folder(base), open_model_folder(out)
    assert om.tied == bm.tied == tied
    assert om.dtype == bm.dtype and len(om.shards) == len(bm.shards)
    tv, bv = load_vocabulary(target), load_vocabulary(base)
    assert om.vocab_rows == len(tv)
    al = align(bv, tv)
    e_b, e_o = bm.read_embedding(), om.read_embedding()
    new, old = zip(*al.shared.items())
    np.testing.assert_array_equal(e_o[list(new)], e_b[list(old)])  # shared rows copied exactly
    if not tied:
        np.testing.assert_array_equal(om.read_head()[list(new)], bm.read_head()[list(old)])
        assert rep["parameters"]["head"]["k"] >= 1
    # every other tensor byte-identical
    for name, shard in bm.files.items():
        if name in (bm.embed_name, bm.head_name):
            continue
        np.testing.assert_array_equal(read_tensor_f32(om.files[name], name), read_tensor_f32(shard, name))
    # new rows never longer than the typical shared row
    cap = rep["parameters"]["embed"]["norm_cap"]
    assert np.linalg.norm(e_o[al.new_only], axis=1).max() <= cap * 1.01
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == len(tv) and cfg["eos_token_id"] == tv.specials["eos"]
    saved = json.loads((out / "transplant_report.json").read_text())
    assert saved["counts"]["shared"] == len(al.shared) and saved["counts"]["new"] == len(al.new_only)
    assert saved["held_out_reconstruction"]["embed"]["held_out"] >= 1
    assert (out / "README.md").is_file()
    if sharded:
        idx = json.loads((out / "model.safetensors.index.json").read_text())
        assert set(idx["weight_map"]) == set(om.files)
        assert idx["metadata"]["total_size"] == sum(
            sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in read_header(p)[0].items() if k != "__metadata__")
            for p in om.shards)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


@pytest.mark.parametrize("method", ["subword", "mean", "zero", "random"])
def test_baselines(tmp_path, method):
    base, target, _ = base_and_target(tmp_path, tied=False)
    rep = transplant(base, target, tmp_path / "out", method=method, progress=False)
    _load_and_generate(tmp_path / "out")
    assert rep["method"] == method and rep["donor"] is None
    e = open_model_folder(tmp_path / "out").read_embedding()
    al = align(load_vocabulary(base), load_vocabulary(target))
    if method == "zero":
        assert not e[al.new_only].any()
    if method == "mean":
        assert np.allclose(e[al.new_only], e[al.new_only][0], atol=1e-6)


def test_subword_is_mean_of_pieces(tmp_path):
    base, target, _ = base_and_target(tmp_path)
    transplant(base, target, tmp_path / "out", method="subword", progress=False)
    al = align(load_vocabulary(base), load_vocabulary(target))
    e_b, e_o = open_model_folder(base).read_embedding(), open_model_folder(tmp_path / "out").read_embedding()
    for i in al.new_only[:10]:
        np.testing.assert_allclose(e_o[i], e_b[al.decompositions[i]].mean(0), atol=1e-6)


@pytest.mark.parametrize("method", ["tokenadapt", "omp"])
def test_donor_free_methods_with_aux_embedder(tmp_path, method):
    base, target, _ = base_and_target(tmp_path, tied=False)
    aux = make_aux(tmp_path / "aux")
    rep = transplant(base, target, tmp_path / "out", method=method, aux_embedder=aux, progress=False, top_k=4)
    _load_and_generate(tmp_path / "out")
    assert rep["aux_embedder"] == str(aux)
    assert set(rep["parameters"]) == {"embed", "head"}
    if method == "tokenadapt":
        assert rep["parameters"]["embed"]["top_k"] == 4
        assert "global_estimate" in rep["held_out_reconstruction"]["embed"]


def test_eval_in_report(tmp_path):
    base, target, donor = base_and_target(tmp_path)
    text = tmp_path / "t.txt"
    text.write_text("the cat ran into the forest with the dog. " * 20)
    rep = transplant(base, target, tmp_path / "out", donor=donor, eval_text=text, progress=False)
    ev = rep["eval"]
    assert ev["before"]["bits_per_byte"] > 0 and ev["after"]["bits_per_byte"] > 0
    assert ev["ratio"] == pytest.approx(ev["after"]["bits_per_byte"] / ev["before"]["bits_per_byte"])
    assert ev["after"]["model"] == str((tmp_path / "out").absolute())


# --- errors ------------------------------------------------------------------------------------------
def test_out_exists_refused_unless_overwrite(tmp_path):
    base, target, _ = base_and_target(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(TokbenchError, match="output folder exists") as e:
        transplant(base, target, out, method="mean", progress=False)
    assert str(out) in str(e.value)
    assert (out / "keep.txt").is_file()
    with pytest.raises(TokbenchError, match="not made by tokbench"):  # never deletes what it did not write
        transplant(base, target, out, method="mean", overwrite=True, progress=False)
    assert (out / "keep.txt").is_file()
    (out / "keep.txt").unlink()
    transplant(base, target, out, method="mean", progress=False)  # an empty folder is written
    transplant(base, target, out, method="mean", overwrite=True, progress=False)  # its own output is replaced
    assert (out / "model.safetensors").is_file()


def test_pickled_weights_refused(tmp_path):
    base, target, _ = base_and_target(tmp_path)
    (base / "model.safetensors").unlink()
    (base / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(TokbenchError, match="pickled") as e:
        transplant(base, target, tmp_path / "out", method="mean", progress=False)
    assert "pytorch_model.bin" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_no_embedding_found(tmp_path):
    from safetensors.numpy import load_file, save_file

    base, target, _ = base_and_target(tmp_path)
    w = load_file(str(base / "model.safetensors"))
    w = {k.replace("embed_tokens", "tok_mystery"): v for k, v in w.items()}
    save_file(w, str(base / "model.safetensors"))
    with pytest.raises(TokbenchError, match="no input embedding") as e:
        transplant(base, target, tmp_path / "out", method="mean", progress=False)
    assert "model.safetensors" in str(e.value)


def test_donor_with_more_ids_than_rows(tmp_path):
    base, target, donor = base_and_target(tmp_path)
    # give the donor a tokenizer bigger than its embedding: the base's... made bigger
    from transplant_tiny import WORDS_A, WORDS_B, train_tokenizer, save_tokenizer

    big = train_tokenizer(WORDS_A + WORDS_B, 5, 600, ["<|endoftext|>"])
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (donor / f).unlink()
    save_tokenizer(big, donor, None, "<|endoftext|>")
    assert big.get_vocab_size() > open_model_folder(donor).vocab_rows
    with pytest.raises(TokbenchError, match="ids but its embedding only") as e:
        transplant(base, target, tmp_path / "out", donor=donor, progress=False)
    assert str(donor) in str(e.value)


def test_base_vocab_mismatch(tmp_path):
    base, target, _ = base_and_target(tmp_path)
    cfg = json.loads((base / "config.json").read_text())
    cfg["vocab_size"] = 5
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokbenchError, match="no input embedding"):
        transplant(base, target, tmp_path / "out", method="mean", progress=False)


def test_unknown_method(tmp_path):
    with pytest.raises(TokbenchError, match="unknown method"):
        transplant(tmp_path, tmp_path, tmp_path / "o", method="magic")


# --- CLI ---------------------------------------------------------------------------------------------
def test_cli(tmp_path):
    base, target, donor = base_and_target(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["transplant", str(base), "--tokenizer", str(target), "--donor", str(donor),
                                  "--no-cache", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{"):])
    assert rep["method"] == "omp" and rep["counts"]["shared"] > 0
    r = CliRunner().invoke(main, ["transplant", str(base), "-t", str(target), "--no-cache", "-o", str(out)])
    assert r.exit_code == 2 and "output folder exists" in r.output and "--overwrite" in r.output
    r = CliRunner().invoke(main, ["transplant", str(base), "-t", str(target), "--method", "subword", "--no-cache",
                                  "--overwrite", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "shared" in r.output


def test_bare_tokenizer_json_target(tmp_path):
    base, target, _ = base_and_target(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(target / "tokenizer.json", bare / "tokenizer.json")
    transplant(base, bare / "tokenizer.json", tmp_path / "out", method="subword", progress=False)
    cfg = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|endoftext|>"
    _load_and_generate(tmp_path / "out")


# --- real assets -------------------------------------------------------------------------------------
@pytest.mark.assets
def test_real_mistral_d128_to_gpt2_subword(tmp_path, require_asset):
    base = require_asset("tbd-mistral-d128", kind="model")
    gpt2 = require_asset("gpt2", kind="tokenizer")
    rep = transplant(base, gpt2, tmp_path / "out", method="subword", progress=False)
    assert rep["counts"]["shared"] > 20000 and rep["numbers"]["differ"]
    assert rep["counts"]["numeric_by_decomposition"] > 1000
    _load_and_generate(tmp_path / "out")


@pytest.mark.assets
def test_real_mistral_d128_to_gpt2_omp_codes_numeric_tokens_with_donor(tmp_path, require_asset):
    # digit splitting differs (Mistral: single digits, GPT-2: merged), but the donor has rows for the target's
    # numeric tokens, so OMP codes them like any other new token instead of falling back to the decomposition
    base = require_asset("tbd-mistral-d128", kind="model")
    gpt2 = require_asset("gpt2", kind="tokenizer")
    donor = require_asset("tbd-gpt2-d128", kind="model")
    rep = transplant(base, gpt2, tmp_path / "out", donor=donor, method="omp", k=4, ridge=1.0, progress=False)
    assert rep["numbers"]["differ"] and rep["counts"]["numeric_new"] > 1000
    assert rep["counts"]["numeric_by_decomposition"] == 0
    assert rep["parameters"]["embed"]["decomposition_tokens"] == 0


@pytest.mark.assets
def test_real_mistral_d128_to_gpt2_omp_numbers_by_decomposition_on_request(tmp_path, require_asset):
    # the literal policy: numeric new tokens take the decomposition mean even with a donor
    base = require_asset("tbd-mistral-d128", kind="model")
    gpt2 = require_asset("gpt2", kind="tokenizer")
    donor = require_asset("tbd-gpt2-d128", kind="model")
    rep = transplant(base, gpt2, tmp_path / "out", donor=donor, method="omp", k=4, ridge=1.0, progress=False,
                     numbers="decomposition")
    n = rep["counts"]["numeric_by_decomposition"]
    assert n == rep["counts"]["numeric_new"] > 1000
    assert rep["numbers"]["policy"] == "decomposition"
    assert rep["parameters"]["embed"]["decomposition_tokens"] >= n


def test_unknown_numbers_policy_is_one_line_error(tmp_path):
    with pytest.raises(TokbenchError, match="numbers policy"):
        transplant(tmp_path / "nope", "gpt2", tmp_path / "out", numbers="digits")


@pytest.mark.assets
def test_cli_sigterm_mid_run_leaves_no_output(tmp_path, require_asset):
    # `kill` during a transplant unwinds like Ctrl-C: exit 130, neither OUT nor its temporary folder remains
    import signal
    import subprocess
    import sys
    import time

    base = require_asset("tbd-mistral-d128", kind="model")
    gpt2 = require_asset("gpt2", kind="tokenizer")
    text = require_asset("wikitext2-test")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tokbench.cli", "transplant", str(base), "-t", str(gpt2),
                             "--method", "subword", "--eval", str(text), "--max-chars", "200000", "--no-cache",
                             "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(p.name.startswith(".out") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "transplant ended before its temporary folder appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; no output was written" in err
    assert list(tmp_path.iterdir()) == []
