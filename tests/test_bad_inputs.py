"""Every command, fed malformed inputs of every kind it reads, ends in one line on stderr and exit 2.

Kinds: tokenizer files (tokenizer.json of wrong schemas, tiktoken rank files, SentencePiece models,
garbage), model folders (truncated / damaged safetensors, bad config.json), corpora (JSONL and text),
JSON inputs (`report --from-json`, `train --load-counts`) and the asset registry. A missing optional
dependency (torch) names the extra to install. No traceback, ever.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokbench.cli import main

# ---- the malformed inputs ------------------------------------------------------------------------
BPE_OK_HEAD = {"normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                                                     "trim_offsets": True, "use_regex": True},
               "decoder": {"type": "ByteLevel"}}

BAD_TOKENIZERS: dict[str, bytes] = {
    "vocab_is_a_list.json": json.dumps({"model": {"type": "BPE", "vocab": [1, 2, 3], "merges": []}}).encode(),
    "not_json.json": b'{"model": {"vocab": ',
    "json_list.json": b"[]",
    "vocab_ids_not_ints.json": json.dumps({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}}).encode(),
    "unigram_short_entries.json": json.dumps({"model": {"type": "Unigram", "vocab": [["a"], []]}}).encode(),
    "merges_not_strings.json": json.dumps({**BPE_OK_HEAD, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1},
                                                                      "merges": [5, None]}}).encode(),
    "added_token_bad_id.json": json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                           "added_tokens": [{"id": "seven", "content": "<s>"}]}).encode(),
    "model_type_odd.json": json.dumps({"model": {"type": "Telepathy", "vocab": {}}}).encode(),
    "not_utf8.json": b'{"model": "\xff\xfe"}',
    "ranks_bad_base64.tiktoken": b"YWJj 0\nY 1\n",
    "ranks_not_ints.tiktoken": b"YQ== x\n",
    "empty.tiktoken": b"",
    "garbage.model": b"\n\xff\xff\xff\xff\x00\x01",
    "garbage.bin": os.urandom(256),
}

# merges that name a token the vocabulary does not have: loads, but the core refuses to segment with it
INCONSISTENT = json.dumps({**BPE_OK_HEAD, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2},
                                                    "merges": ["a b"]}}).encode()

BAD_CORPORA: dict[str, bytes] = {
    "line_not_json.jsonl": b'{"text": "fine"}\n{"text": \n',
    "line_is_a_list.jsonl": b'{"text": "fine"}\n[1, 2]\n',
    "no_text_field.jsonl": b'{"id": 1, "label": "x"}\n',
    "text_is_a_number.jsonl": b'{"text": 7}\n',
    "not_utf8.txt": b"caf\xe9 \xff\xfe\n" * 10,
    "empty.txt": b"",
}

BAD_METRICS_JSON: dict[str, bytes] = {
    "results_empty.json": b'{"results": []}',
    "a_list.json": b"[]",
    "not_json.json": b"{",
    "result_without_corpus.json": json.dumps({"tokenizers": [{"name": "a"}], "corpora": [{"name": "c"}],
                                              "results": [{"tokenizer": "a"}], "parity": {}}).encode(),
    "result_fields_missing.json": json.dumps({"tokenizers": [{"name": "a", "K": 3}], "corpora": [{"name": "c"}],
                                              "results": [{"tokenizer": "a", "corpus": "c"}],
                                              "parity": {}}).encode(),
}


def _write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def run(*args: str, env: dict | None = None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return r


def assert_one_line(r, *needles: str) -> str:
    """Exit 2 and one error line (warnings said before it, each on its own line, are allowed)."""
    err = "\n".join(x for x in r.stderr.strip().splitlines() if not x.startswith("warning: "))
    assert r.exit_code == 2, (r.exit_code, err, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tokbench: error: "), err
    assert "Traceback" not in r.output and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


# ---- tokenizer files -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_TOKENIZERS))
def test_bad_tokenizer_files(name, tmp_path, require_asset):
    bad = _write(tmp_path, name, BAD_TOKENIZERS[name])
    corpus = _write(tmp_path, "c.txt", b"hello world\n" * 20)
    model = require_asset("tbd-gpt2-d128", kind="model")
    assert_one_line(run("vocab", "inspect", bad), name)
    assert_one_line(run("vocab", "align", require_asset("gpt2"), bad), name)
    assert_one_line(run("metrics", "-q", "-t", bad, "-c", corpus), name)
    out = tmp_path / "out"
    assert_one_line(run("transplant", model, "-t", bad, "--method", "mean", "-o", out), name)
    assert not out.exists()


def test_inconsistent_merges_are_one_line(tmp_path, require_asset):
    """The core's ValueError (a merge whose joined bytes no token has) arrives as a TokbenchError."""
    bad = _write(tmp_path, "inconsistent.json", INCONSISTENT)
    err = assert_one_line(run("vocab", "align", bad, require_asset("gpt2")), "inconsistent.json")
    assert "bug" not in err


def test_bpe_from_file_bad_schemas(tmp_path):
    from tokbench.bpe import BPE
    from tokbench.errors import TokbenchError

    for name in ("vocab_is_a_list.json", "vocab_ids_not_ints.json", "merges_not_strings.json",
                 "ranks_not_ints.tiktoken", "json_list.json"):
        with pytest.raises(TokbenchError, match=name.replace(".", r"\.")):
            BPE.from_file(_write(tmp_path, name, BAD_TOKENIZERS[name]), pattern="gpt2")


# ---- model folders -------------------------------------------------------------------------------
def _model_copy(src: Path, dest: Path, weights: bytes | None = None, config: bytes | None = None) -> Path:
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dest / f.name)
    if config is not None:
        (dest / "config.json").write_bytes(config)
    (dest / "model.safetensors").write_bytes(weights if weights is not None else (src / "model.safetensors").read_bytes())
    return dest


def _bad_models(src: Path) -> dict[str, dict]:
    raw = (src / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    wrong = dict(header)
    wrong[name] = {**header[name], "shape": [3, 3]}
    blob = json.dumps(wrong).encode()
    return {
        "truncated": {"weights": raw[: len(raw) // 2]},
        "header_only": {"weights": raw[: 8 + n]},
        "shorter_than_8": {"weights": b"\x01\x02"},
        "header_length_huge": {"weights": (10 ** 12).to_bytes(8, "little") + raw[8:100]},
        "header_not_json": {"weights": (20).to_bytes(8, "little") + b"{not json at all....."},
        "header_a_list": {"weights": (2).to_bytes(8, "little") + b"[]"},
        "shape_disagrees": {"weights": len(blob).to_bytes(8, "little") + blob + raw[8 + n:]},
        "config_not_json": {"config": b"{"},
        "config_a_list": {"config": b"[1]"},
    }


def test_bad_model_folders(tmp_path, require_asset):
    src = require_asset("tbd-gpt2-d128", kind="model")
    text = _write(tmp_path, "t.txt", b"hello world. " * 50)
    for label, kw in _bad_models(src).items():
        folder = _model_copy(src, tmp_path / label, **kw)
        out = tmp_path / f"out-{label}"
        assert_one_line(run("transplant", folder, "-t", require_asset("gpt2"), "--method", "mean", "-o", out))
        assert not out.exists()
        assert_one_line(run("eval", folder, "--text", text), label)


def test_truncated_large_model_is_refused_from_its_header(tmp_path, require_asset):
    """SmolLM2-135M cut after its header: refused at once, before any tensor is read."""
    src = require_asset("smollm2-135m", kind="model")
    with open(src / "model.safetensors", "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        head = (n).to_bytes(8, "little") + f.read(n) + f.read(1 << 20)
    folder = _model_copy(src, tmp_path / "cut", weights=head)
    t0 = time.perf_counter()
    err = assert_one_line(run("transplant", folder, "-t", require_asset("gpt2"), "--method", "mean",
                              "-o", tmp_path / "out"), "model.safetensors")
    assert time.perf_counter() - t0 < 10, "the size check must come before any work"
    assert "truncated" in err


# ---- corpora -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_CORPORA))
def test_bad_corpora(name, tmp_path, require_asset):
    bad = _write(tmp_path, name, BAD_CORPORA[name])
    assert_one_line(run("metrics", "-q", "-t", require_asset("gpt2"), "-c", bad))
    assert_one_line(run("report", "-q", "-t", require_asset("gpt2"), "-c", bad, "-o", tmp_path / "rep"))
    assert not (tmp_path / "rep").exists()
    if name not in ("not_utf8.txt",):  # train skips non-UTF-8 lines with a warning; all of them: empty
        assert_one_line(run("train", bad, "--vocab-size", "300", "-q", "-o", tmp_path / "tr"))
    else:
        assert_one_line(run("train", bad, "--vocab-size", "300", "-q", "-o", tmp_path / "tr"), "empty")
    assert_one_line(run("eval", require_asset("tbd-gpt2-d128", kind="model"), "--text", tmp_path / "none.txt"))


def test_folder_without_texts(tmp_path, require_asset):
    (tmp_path / "corpus").mkdir()
    _write(tmp_path / "corpus", "image.png", b"\x89PNG")
    assert_one_line(run("metrics", "-q", "-t", require_asset("gpt2"), "-c", tmp_path / "corpus"), "corpus")
    assert_one_line(run("train", tmp_path / "corpus", "--vocab-size", "300", "-q", "-o", tmp_path / "tr"))


# ---- JSON inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_METRICS_JSON))
def test_report_from_bad_json(name, tmp_path):
    bad = _write(tmp_path, name, BAD_METRICS_JSON[name])
    assert_one_line(run("report", "--from-json", bad, "-t", "a", "-o", tmp_path / "rep"), name)
    assert not (tmp_path / "rep").exists()


def test_train_load_counts_garbage(tmp_path):
    for data in (b"", b"garbage\n", b"# tokbench-bpe-counts v1 pattern=[1]\nzz 1\n", os.urandom(64)):
        counts = _write(tmp_path, "counts.txt", data)
        assert_one_line(run("train", "--load-counts", counts, "--vocab-size", "300", "-q", "-o", tmp_path / "tr"))


# ---- the asset registry --------------------------------------------------------------------------
@pytest.mark.parametrize("registry", [b"[]", b"{", b'{"format": 1, "assets": []}', b"\xff\xfe",
                                      b'{"format": 1, "assets": {"gpt2": 5}}'])
def test_bad_registry(registry, tokbench_home):
    from tokbench.assets.registry import REGISTRY_FORMAT

    tokbench_home.mkdir(parents=True)
    data = registry.replace(b'"format": 1', f'"format": {json.dumps(REGISTRY_FORMAT)}'.encode())
    (tokbench_home / "registry.json").write_bytes(data)
    for args in (["assets", "list"], ["vocab", "inspect", "gpt2"], ["assets", "path", "gpt2"]):
        assert_one_line(run(*args), "registry.json")


# ---- resource arguments --------------------------------------------------------------------------
def test_resource_arguments_are_checked(tmp_path, require_asset):
    corpus = _write(tmp_path, "c.txt", b"hello world\n" * 20)
    model = require_asset("tbd-gpt2-d128", kind="model")
    cases = [
        ["train", corpus, "--vocab-size", "100", "-o", tmp_path / "t"],
        ["train", corpus, "--vocab-size", "300", "--threads", "-1", "-o", tmp_path / "t"],
        ["train", corpus, "--vocab-size", "300", "--min-frequency", "0", "-o", tmp_path / "t"],
        ["metrics", "-t", "gpt2", "-c", corpus, "--max-order", "0"],
        ["metrics", "-t", "gpt2", "-c", corpus, "--limit-bytes", "0"],
        ["eval", model, "--text", corpus, "--chunk", "1"],
        ["eval", model, "--text", corpus, "--batch", "0"],
        ["eval", model, "--text", corpus, "--max-chars", "0"],
        ["transplant", model, "-t", "gpt2", "--top-k", "0", "-o", tmp_path / "x"],
        ["transplant", model, "-t", "gpt2", "--k", "-3", "-o", tmp_path / "x"],
        ["transplant", model, "-t", "gpt2", "--max-chars", "-5", "--eval", corpus, "-o", tmp_path / "x"],
        ["transplant", model, "-t", "gpt2", "--blend", "1.5", "-o", tmp_path / "x"],
        ["transplant", model, "-t", "gpt2", "--temperature", "0", "-o", tmp_path / "x"],
        ["transplant", model, "-t", "gpt2", "--ridge", "-1", "-o", tmp_path / "x"],
        ["metrics", "-t", "gpt2", "-c", corpus, "--alpha", "0"],
        ["vocab", "align", "gpt2", "gpt2", "--threads", "-2"],
        ["vocab", "align", "gpt2", "gpt2", "--examples", "-1"],
    ]
    for args in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
        last = r.stderr.strip().splitlines()[-1]
        assert "range" in last or "must be" in last, (args, last)
    assert not (tmp_path / "x").exists()


# ---- missing optional dependency -----------------------------------------------------------------
_NO_TORCH = """
import sys
for m in ("torch", "transformers", "faiss"):
    sys.modules[m] = None  # `import torch` raises ModuleNotFoundError, as without the package
from tokbench.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("args", [
    ["eval", "{model}", "--text", "{text}"],
    ["transplant", "{model}", "-t", "gpt2", "--eval", "{text}", "--method", "mean", "-o", "{out}"],
    ["transplant", "{model}", "-t", "gpt2", "--method", "tokenadapt", "-o", "{out}"],
    ["transplant", "{model}", "-t", "gpt2", "-o", "{out}"],  # donor-free omp: the auxiliary embedder
])
def test_without_torch_the_extra_is_named(args, tmp_path, require_asset):
    text = _write(tmp_path, "t.txt", b"hello world. " * 50)
    fill = {"model": str(require_asset("tbd-gpt2-d128", kind="model")), "text": str(text),
            "out": str(tmp_path / "out")}
    argv = [a.format(**fill) for a in args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, env=env,
                       timeout=120)
    err = p.stderr.strip()
    assert p.returncode == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "pip install 'tokbench[transplant]'" in err and "torch" in err, err
    assert not (tmp_path / "out").exists()


def test_unexpected_errors_are_one_line_naming_the_command(monkeypatch, require_asset):
    """The last-resort handler: a bug deep inside a command is one line naming it, exit 2."""
    import tokbench.vocab

    def boom(*a, **k):
        raise RuntimeError("deep inside\nwith a second line")

    monkeypatch.setattr(tokbench.vocab, "inspect_report", boom)
    err = assert_one_line(run("vocab", "inspect", require_asset("gpt2")), "tokbench vocab inspect", "RuntimeError",
                          "bug")
    assert "deep inside with a second line" in err
    r = run("vocab", "inspect", require_asset("gpt2"), env={"TOKBENCH_TRACEBACK": "1"})
    assert isinstance(r.exception, RuntimeError)  # the traceback is there when asked for


def test_surrogates_in_a_corpus_are_not_an_error(tmp_path, require_asset):
    corpus = _write(tmp_path, "s.jsonl", b'{"text": "hello \\ud800 world"}\n{"text": "pair \\ud83d\\ude00"}\n')
    for t in ("gpt2", "gpt2-tiktoken", "llama2", "bert"):
        r = run("metrics", "-q", "-t", require_asset(t), "-c", corpus)
        assert r.exit_code == 0, (t, r.stderr)
    r = run("train", corpus, "--vocab-size", "260", "-q", "-o", tmp_path / "tr")
    assert r.exit_code == 0, r.stderr
    r = run("report", "-q", "-t", require_asset("gpt2"), "-c", corpus, "-o", tmp_path / "rep")
    assert r.exit_code == 0, r.stderr


def test_api_resource_arguments_are_checked(tmp_path, require_asset):
    """The Python API refuses the same values with a LimitError (a TokbenchError and a ValueError)."""
    from tokbench.bpe import train
    from tokbench.eval import bits_per_byte, load_eval_text
    from tokbench.limits import LimitError
    from tokbench.metrics import run_metrics
    from tokbench.transplant import transplant
    from tokbench.vocab import align, load_vocabulary

    corpus = _write(tmp_path, "c.txt", b"hello world\n" * 20)
    model = require_asset("tbd-gpt2-d128", kind="model")
    v = load_vocabulary(require_asset("gpt2"))
    calls = [
        lambda: run_metrics(["gpt2"], [str(corpus)], max_order=0),
        lambda: run_metrics(["gpt2"], [str(corpus)], alpha=float("nan")),
        lambda: run_metrics(["gpt2"], [str(corpus)], workers=0),
        lambda: run_metrics(["gpt2"], [str(corpus)], limit_bytes=-1),
        lambda: transplant(model, "gpt2", tmp_path / "x", method="mean", blend=2.0),
        lambda: transplant(model, "gpt2", tmp_path / "x", method="mean", k=0),
        lambda: transplant(model, "gpt2", tmp_path / "x", method="mean", top_k=-1),
        lambda: bits_per_byte(model, "hello", chunk=1),
        lambda: bits_per_byte(model, "hello", batch=0),
        lambda: load_eval_text(corpus, max_chars=0),
        lambda: train(corpus, 300, num_threads=-1, progress=False),
        lambda: train(corpus, 300, min_frequency=0, progress=False),
        lambda: align(v, v, num_threads=-3),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(LimitError, match="must be"):
            call()
    assert not (tmp_path / "x").exists()


def test_train_says_when_it_falls_short(tmp_path):
    import random
    import warnings

    from tokbench.bpe import train
    from tokbench.bpe.train import ShortVocabWarning

    noise = _write(tmp_path, "noise.txt", random.Random(0).randbytes(200_000))
    r = run("train", noise, "--vocab-size", "32000", "-q", "-o", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["vocab_size_requested"] == 32000 and info["vocab_size"] < 32000
    assert info["warnings"] and "--vocab-size 32,000 asked for" in r.stderr
    tiny = _write(tmp_path, "tiny.txt", b"xy")  # no pair occurs twice: no merge at all
    r = run("train", tiny, "--vocab-size", "300", "-q", "-o", tmp_path / "b")
    assert r.exit_code == 0 and "no merges learned" in r.stderr
    assert json.loads(r.stdout)["merges"] == 0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        t = train(tiny, 300, progress=False)
    assert t.vocab_size == 256 and any(issubclass(w.category, ShortVocabWarning) for w in seen)
