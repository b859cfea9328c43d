"""tokbench quickstart: the shipped corpus, and the orchestration end to end at tiny sizes (tiny Llama base,
tiny aux embedder, small texts) so that it runs in seconds; the real run is .ci/run's README step."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokbench import quickstart as qs
from tokbench.cli import main
from tokbench.errors import TokbenchError
from transplant_tiny import WORDS_A, WORDS_B, corpus, make_aux, make_model, train_tokenizer

torch = pytest.importorskip("torch")


def test_shipped_corpus_is_split_by_file_and_licensed():
    train, held = qs.corpus_files()
    rows = [line.split("\t") for line in (qs.CORPUS / "files.txt").read_text().splitlines() if not line.startswith("#")]
    by_split = {"train": [], "heldout": []}
    for split, name, size, sha in rows:
        by_split[split].append((name, int(size), sha))
    assert len(by_split["heldout"]) >= 2 and len(by_split["train"]) >= 20
    assert not {n for n, _, _ in by_split["train"]} & {n for n, _, _ in by_split["heldout"]}
    # the text files are exactly the listed files, in order, one newline between them
    for split, path in (("train", train), ("heldout", held)):
        data = path.read_bytes()
        assert len(data) == sum(s for _, s, _ in by_split[split]) + len(by_split[split]) - 1
        pos = 0
        for _, size, sha in by_split[split]:
            assert hashlib.sha256(data[pos:pos + size]).hexdigest() == sha
            pos += size + 1
    # no held-out file occurs in the training text
    train_text = train.read_text(encoding="utf-8")
    held_text = held.read_text(encoding="utf-8")
    for chunk in held_text.split("\n\n")[:50]:
        if len(chunk) > 200:
            assert chunk not in train_text
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in (qs.CORPUS / "LICENSE").read_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("qs")
    base = make_model(root / "base", train_tokenizer(WORDS_A, 0, 330, ["<unk>", "<s>", "</s>"]))
    aux = make_aux(root / "aux")
    train = root / "train.txt"
    train.write_text("\n".join(corpus(WORDS_A + WORDS_B, 5, 4000)), encoding="utf-8")
    held = root / "held.txt"
    held.write_text("\n".join(corpus(WORDS_A + WORDS_B, 6, 600)), encoding="utf-8")
    return {"base": base, "aux": aux, "train": train, "held": held}


def _run(tiny, out, **kw):
    lines = []
    s = qs.run(out, base=str(tiny["base"]), aux_embedder=str(tiny["aux"]), train_text=tiny["train"],
               eval_text=tiny["held"], vocab_size=300, cache_dir=out.parent / "cache", progress=False,
               log=lines.append, **kw)
    return s, lines


@pytest.mark.parametrize("method", ["omp", "tokenadapt", "subword"])
def test_run_tiny_end_to_end(tiny, tmp_path, method):
    out = tmp_path / "qs-out"
    s, lines = _run(tiny, out, method=method)
    assert [ln[:5] for ln in lines] == [f"[{i}/4]" for i in range(1, 5)]
    assert s["out"] == str(out.absolute()) and (out / "model.safetensors").is_file()
    rep = json.loads((out / "transplant_report.json").read_text())
    assert rep["method"] == method and rep["donor"] is None
    assert (rep["aux_embedder"] is not None) == (method in ("omp", "tokenadapt"))
    ev = s["eval"]
    assert ev["before"] == rep["eval"]["before"]["bits_per_byte"] > 0
    assert ev["after"] == rep["eval"]["after"]["bits_per_byte"] > 0
    assert ev["ratio"] == pytest.approx(ev["after"] / ev["before"])
    assert s["tokenizer"]["vocab_size"] <= 300 and s["tokenizer"]["shared"] + s["tokenizer"]["new"] > 0
    # the trained tokenizer is what OUT speaks, and transformers loads OUT
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    lm = AutoModelForCausalLM.from_pretrained(str(out))
    assert lm.get_input_embeddings().weight.shape[0] == len(tok) == s["tokenizer"]["vocab_size"]
    assert tok.eos_token == qs.EOS
    assert any(c.startswith(f"tokbench eval {out.absolute()}") for c in s["next_commands"])
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left beside OUT
    assert s["seconds"]["total"] > 0 and s["seconds"]["cpu"] > 0 and len(s["load_average"]["end"]) == 3


def test_cli_prints_figures_and_next_commands(tiny, tmp_path, monkeypatch):
    real_run = qs.run

    def small(out, **kw):
        kw.update(base=str(tiny["base"]), aux_embedder=str(tiny["aux"]), train_text=tiny["train"],
                  eval_text=tiny["held"], cache_dir=tmp_path / "cache")
        return real_run(out, **kw)

    monkeypatch.setattr(qs, "run", small)
    out = tmp_path / "cli-out"
    r = CliRunner().invoke(main, ["quickstart", "-o", str(out), "--vocab-size", "300", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "bits/byte" in r.output and "before" in r.output and "ratio after/before" in r.output
    assert f"model written to {out.absolute()}" in r.output and "next:" in r.output
    assert "[4/4]" in r.output and "load average" in r.output
    r = CliRunner().invoke(main, ["quickstart", "-o", str(out), "--vocab-size", "300", "--quiet", "--overwrite",
                                  "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["eval"]["ratio"] > 0


def test_existing_out_refused_before_any_work(tiny, tmp_path, monkeypatch):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def no_fetch(*a, **k):
        raise AssertionError("fetched although OUT was refused")

    monkeypatch.setattr("tokbench.assets.fetch", no_fetch)
    with pytest.raises(TokbenchError, match="exists"):
        qs.run(out, progress=False, log=lambda line: None)
    r = CliRunner().invoke(main, ["quickstart", "-o", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output
    assert (out / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_out(tiny, tmp_path):
    out = tmp_path / "again"
    _run(tiny, out, method="mean")
    first = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(TokbenchError):
        _run(tiny, out, method="mean")
    _run(tiny, out, method="mean", overwrite=True)
    assert (out / "model.safetensors").stat().st_mtime_ns != first


def test_bad_arguments(tmp_path):
    with pytest.raises(TokbenchError, match="unknown method"):
        qs.run(tmp_path / "o", method="nope", log=lambda line: None)
    with pytest.raises(TokbenchError, match="vocab size"):
        qs.run(tmp_path / "o", vocab_size=10, log=lambda line: None)
    r = CliRunner().invoke(main, ["quickstart", "-o", str(tmp_path / "o"), "--vocab-size", "0"])
    assert r.exit_code == 2 and "vocab size" in r.output
    assert not (tmp_path / "o").exists()


def test_missing_packages_named_with_the_extra(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    gone = {"faiss", "gguf"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    with pytest.raises(TokbenchError, match=r"needs the Python packages gguf;.*tokbench\[transplant\]"):
        qs.run(tmp_path / "o", log=lambda line: None)  # the default method (omp) needs no FAISS
    with pytest.raises(TokbenchError, match=r"gguf, faiss;.*tokbench\[transplant\]"):
        qs.run(tmp_path / "o", method="tokenadapt", log=lambda line: None)
    assert not (tmp_path / "o").exists()


def test_readme_first_command_is_the_quickstart():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    first = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")][0]
    assert first == "python -m pip install '.[transplant]' && tokbench quickstart"
