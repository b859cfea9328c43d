"""Output folders (tokbench.outputs): no command deletes what it did not write, outputs appear all at once,
leftovers of killed runs are cleaned, the umask is respected, inputs stay byte-identical.

The data-loss tests drive the commands as a user does (CLI or documented API) and import nothing new,
so they also run against older code (where they fail: that is the point of them).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.errors import TokbenchError

from synthetic_tokenizers import generated_text, train_bytelevel_bpe
from transplant_tiny import base_and_target

MARKER = ".tokbench-output.json"


def tree_hash(root: Path) -> str:
    """Hash of every path, file mode and file content under root (inputs must stay byte-identical)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def cli(*args, cwd: Path | None = None):
    if cwd is None:
        return CliRunner().invoke(main, [str(a) for a in args])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)


def one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    for n in needles:
        assert n in r.output, r.output


# --- shared inputs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(base model, target tokenizer, donor) tiny folders, made once; tests copy what they modify."""
    return base_and_target(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def metrics_json(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    tok = train_bytelevel_bpe(root / "bl")
    corpus = root / "english.txt"
    corpus.write_text("\n".join(generated_text(1, 300)), encoding="utf-8")
    r = cli("metrics", "-t", tok, "-c", corpus, "--no-parity", "--json", "-q")
    assert r.exit_code == 0, r.output
    j = root / "m.json"
    text = r.output[r.output.index("{"):]
    j.write_text(text, encoding="utf-8")
    return j, json.loads(text)["tokenizers"][0]["name"]


def project(tmp: Path) -> Path:
    """A folder that looks like a user's project (sources we must never delete)."""
    p = tmp / "proj"
    (p / "src").mkdir(parents=True)
    (p / "src" / "main.py").write_text("print('hello')\n")
    (p / "README.md").write_text("my project\n")
    return p


def corpus_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    c = folder / "c.txt"
    c.write_text("\n".join(generated_text(3, 400)), encoding="utf-8")
    return c


# --- report ------------------------------------------------------------------------------------------
def test_report_refuses_a_nonempty_folder_without_overwrite(metrics_json, tmp_path):
    j, tok = metrics_json
    out = project(tmp_path)
    before = tree_hash(out)
    r = cli("report", "-t", tok, "--from-json", j, "-o", out)
    one_line_error(r, "not empty", "--overwrite")
    assert tree_hash(out) == before


def test_report_overwrite_never_deletes_files_it_did_not_write(metrics_json, tmp_path):
    j, tok = metrics_json
    out = project(tmp_path)
    before = tree_hash(out)
    r = cli("report", "-t", tok, "--from-json", j, "-o", out, "--overwrite")
    one_line_error(r, "not made by tokbench")
    assert tree_hash(out) == before
    rep = tmp_path / "rep"
    assert cli("report", "-t", tok, "--from-json", j, "-o", rep).exit_code == 0
    assert cli("report", "-t", tok, "--from-json", j, "-o", rep, "--overwrite").exit_code == 0  # its own
    (rep / "notes.txt").write_text("mine")
    r = cli("report", "-t", tok, "--from-json", j, "-o", rep, "--overwrite")
    one_line_error(r, "did not write", "notes.txt")
    assert (rep / "notes.txt").read_text() == "mine" and (rep / "index.html").is_file()


@pytest.mark.parametrize("where", [".", "..", "PWD"])
def test_report_refuses_the_current_folder_and_its_parents(metrics_json, tmp_path, where):
    j, tok = metrics_json
    proj = project(tmp_path)
    before = tree_hash(tmp_path)
    out = str(proj / "src") if where == "PWD" else where
    for extra in ([], ["--overwrite"]):
        r = cli("report", "-t", tok, "--from-json", j, "-o", out, *extra, cwd=proj / "src")
        one_line_error(r, "current folder")
    assert tree_hash(tmp_path) == before


# --- transplant --------------------------------------------------------------------------------------
def mean_transplant(base, target, out, *extra, cwd=None):
    return cli("transplant", base, "-t", target, "--method", "mean", "--no-cache", "-o", out, *extra, cwd=cwd)


def test_transplant_refuses_a_folder_holding_its_input(tiny, tmp_path):
    import shutil

    base, target, _ = tiny
    par = tmp_path / "par"
    shutil.copytree(base, par / "base")
    before = tree_hash(par)
    one_line_error(mean_transplant(par / "base", target, par, "--overwrite"), "contains the input")
    assert tree_hash(par) == before
    one_line_error(mean_transplant(par / "base", target, par / "base", "--overwrite"), "is an input")
    one_line_error(mean_transplant(par / "base", target, par / "base" / "x"), "inside the input folder")
    assert tree_hash(par) == before


def test_transplant_refuses_the_current_folder(tiny, tmp_path):
    base, target, _ = tiny
    proj = project(tmp_path)
    before = tree_hash(proj)
    for out in (".", "..", str(proj)):
        one_line_error(mean_transplant(base, target, out, "--overwrite", cwd=proj), "current folder")
    assert tree_hash(proj) == before


def test_transplant_overwrite_replaces_only_its_own_output(tiny, tmp_path):
    base, target, _ = tiny
    out = project(tmp_path)
    before = tree_hash(out)
    one_line_error(mean_transplant(base, target, out, "--overwrite"), "not made by tokbench")
    assert tree_hash(out) == before
    out = tmp_path / "out"
    for _ in range(2):
        r = mean_transplant(base, target, out, "--overwrite")
        assert r.exit_code == 0, r.output
    marker = json.loads((out / MARKER).read_text())
    assert "model.safetensors" in marker["files"] and marker["command"] == "transplant"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "proj"]  # no temporary folders beside it


# --- train -------------------------------------------------------------------------------------------
def test_train_does_not_replace_a_tokenizer_without_overwrite(tmp_path):
    c = corpus_file(tmp_path / "data")
    out = tmp_path / "mytok"
    out.mkdir()
    (out / "tokenizer.json").write_text('{"mine": true}')
    r = cli("train", c, "--vocab-size", "300", "-q", "-o", out)
    one_line_error(r, "not empty", "--overwrite")
    assert (out / "tokenizer.json").read_text() == '{"mine": true}'
    r = cli("train", c, "--vocab-size", "300", "-q", "-o", out, "--overwrite")
    one_line_error(r, "not made by tokbench")
    assert (out / "tokenizer.json").read_text() == '{"mine": true}'


def test_train_refuses_a_folder_holding_its_corpus(tmp_path):
    c = corpus_file(tmp_path / "par")
    before = tree_hash(tmp_path)
    r = cli("train", c, "--vocab-size", "300", "-q", "-o", tmp_path / "par", "--overwrite")
    one_line_error(r, "contains the input")
    r = cli("train", tmp_path / "par", "--vocab-size", "300", "-q", "-o", tmp_path / "par" / "tok")
    one_line_error(r, "inside the input folder")
    assert tree_hash(tmp_path) == before


def test_train_writes_its_files_all_at_once(tmp_path, monkeypatch):
    from tokbench.bpe.train import Trained

    c = corpus_file(tmp_path / "data")
    out = tmp_path / "tok"

    def broken(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trained, "save_tiktoken", broken)
    r = cli("train", c, "--vocab-size", "300", "--tiktoken", "-q", "-o", out)
    assert r.exit_code != 0
    assert not out.exists()  # not a tokenizer.json without the tokenizer.tiktoken asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    monkeypatch.undo()
    r = cli("train", c, "--vocab-size", "300", "--tiktoken", "-q", "-o", out)
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} >= {"tokenizer.json", "tokenizer.tiktoken", "train_report.json"}


# --- assets import -----------------------------------------------------------------------------------
def make_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:xz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_assets_import_finishes_a_move_cut_short_and_drops_a_partial_unpack(tokbench_home, tmp_path):
    # what a run killed while moving its fully unpacked archive into data/ leaves: part moved, part not
    data = tokbench_home / "data"
    done = data / "corpora" / "alpha.txt"
    done.parent.mkdir(parents=True)
    done.write_text("alpha\n")
    killed = data / ".import-k1ll3d00"
    (killed / "files" / "corpora").mkdir(parents=True)
    (killed / "files" / "corpora" / "beta.txt").write_text("beta\n")
    (killed / ".complete").write_text("x\n")
    partial = data / ".import-p4rt1al0"  # killed while unpacking
    (partial / "files" / "corpora").mkdir(parents=True)
    (partial / "files" / "corpora" / "gamma.txt").write_text("gam")
    arch = make_archive(tmp_path / "other.tar.xz", {"corpora/delta.txt": b"delta\n"})
    before = arch.read_bytes()
    r = cli("assets", "import", arch, "-q")
    assert r.exit_code == 0, r.output
    assert (data / "corpora" / "beta.txt").read_text() == "beta\n"  # the cut-short move was finished
    assert not (data / "corpora" / "gamma.txt").exists()  # the partial unpack never appears
    assert sorted(p.name for p in data.iterdir()) == ["corpora"]  # no leftovers
    assert arch.read_bytes() == before


# --- leftovers, umask, concurrency -------------------------------------------------------------------
def test_leftovers_of_killed_runs_are_cleaned_by_the_next_run(metrics_json, tiny, tmp_path):
    j, tok = metrics_json
    base, target, _ = tiny
    for name, args in (("rep", ["report", "-t", tok, "--from-json", j]),
                       ("tok", ["train", corpus_file(tmp_path / "data"), "--vocab-size", "300", "-q"]),
                       ("model", ["transplant", base, "-t", target, "--method", "mean", "--no-cache"])):
        for left in (f".{name}.tmp-a1b2c3d4", f".{name}.old-e5f6a7b8"):
            (tmp_path / left / "sub").mkdir(parents=True)
            (tmp_path / left / "sub" / "big.bin").write_bytes(b"\0" * 1000)
        r = cli(*args, "-o", tmp_path / name)
        assert r.exit_code == 0, r.output
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]
        assert (tmp_path / name / MARKER).is_file()


def test_a_live_runs_temporary_folder_is_left_alone(tmp_path):
    from tokbench.outputs import clean_leftovers, discard_output

    code = ("import sys,time; from tokbench.outputs import temp_sibling; t = temp_sibling(sys.argv[1]); "
            "print(t, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        live = Path(proc.stdout.readline().strip())
        assert live.is_dir()
        assert clean_leftovers(tmp_path / "out") == [] and live.is_dir()  # locked by a live process
    finally:
        proc.kill()
        proc.wait()
    assert clean_leftovers(tmp_path / "out") == [live] and not live.exists()  # killed: now a leftover
    discard_output(live)


def test_outputs_respect_the_umask(metrics_json, tiny, tmp_path):
    j, tok = metrics_json
    base, target, _ = tiny
    old = os.umask(0o027)
    try:
        runs = {"rep": ["report", "-t", tok, "--from-json", j],
                "tok": ["train", corpus_file(tmp_path / "data"), "--vocab-size", "300", "--tiktoken", "-q"],
                "model": ["transplant", base, "-t", target, "--method", "mean", "--no-cache"]}
        for name, args in runs.items():
            r = cli(*args, "-o", tmp_path / name)
            assert r.exit_code == 0, r.output
            out = tmp_path / name
            assert stat.S_IMODE(out.stat().st_mode) == 0o750, name
            files = [p for p in out.rglob("*") if p.is_file()]
            assert files
            for p in files:
                assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
    finally:
        os.umask(old)


def test_out_created_meanwhile_by_someone_else_is_not_replaced(tmp_path):
    from tokbench.outputs import commit_output, discard_output, prepare_output

    final, tmp = prepare_output(tmp_path / "out", False, [])
    (tmp / "a.txt").write_text("ours")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("theirs")
    with pytest.raises(TokbenchError, match="not empty"):
        commit_output(tmp, final)
    discard_output(tmp)
    assert (tmp_path / "out" / "theirs.txt").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_root_and_home_are_refused():
    from tokbench.outputs import check_output

    for p in ("/", Path.home(), Path.home().parent):
        with pytest.raises(TokbenchError):
            check_output(p, True, [])


def test_replacing_is_one_swap_and_leaves_nothing_beside(tmp_path):
    from tokbench.outputs import output_folder

    for text in ("one", "two"):
        with output_folder(tmp_path / "out", True, []) as tmp:
            (tmp / "f.txt").write_text(text)
    assert (tmp_path / "out" / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(RuntimeError):
        with output_folder(tmp_path / "out", True, []) as tmp:
            (tmp / "f.txt").write_text("three")
            raise RuntimeError("failed half way")
    assert (tmp_path / "out" / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- kill -9 -----------------------------------------------------------------------------------------
def test_sigkill_at_a_random_point_of_transplant(tiny, tmp_path):
    """kill -9 during transplant --eval, at a seeded random moment after it started writing (its temporary
    folder exists) while it replaces a complete OUT: OUT is the old or the new output, complete; inputs are
    byte-identical; the next run on the same OUT succeeds and removes the leftovers."""
    base, target, _ = tiny
    text = tmp_path / "eval.txt"
    text.write_text("the cat ran into the forest with the dog. " * 30)
    inputs = {p: tree_hash(p) for p in (base, target, text)}
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert mean_transplant(base, target, out, "--eval", text).exit_code == 0  # a complete OUT to replace
    work = time.perf_counter() - t0
    expected = json.loads((out / MARKER).read_text())["files"]
    rng = random.Random(int(os.environ.get("TOKBENCH_KILL_SEED", "10")))
    args = [sys.executable, "-c", "from tokbench.cli import main; main()", "transplant", str(base), "-t",
            str(target), "--method", "mean", "--no-cache", "--eval", str(text), "-o", str(out), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and not list(tmp_path.glob(".out.tmp-*")) and time.time() < deadline:
        time.sleep(0.005)
    assert list(tmp_path.glob(".out.tmp-*")), "the run never started writing"
    time.sleep(rng.uniform(0.0, 1.2) * work)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"killed with return code {proc.returncode}, {work:.2f} s of work in a run")
    assert json.loads((out / MARKER).read_text())["files"] == expected
    assert all((out / f).is_file() for f in expected)
    assert all(tree_hash(p) == h for p, h in inputs.items())
    assert mean_transplant(base, target, out, "--eval", text, "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.txt", "out"]
    assert all(tree_hash(p) == h for p, h in inputs.items())


def test_assets_reimport_of_an_intact_archive_also_finishes_a_killed_move(tokbench_home, tmp_path):
    arch = make_archive(tmp_path / "a.tar.xz", {"corpora/one.txt": b"one\n"})
    assert cli("assets", "import", arch, "-q").exit_code == 0
    killed = tokbench_home / "data" / ".import-k1ll3d01"
    (killed / "files" / "corpora").mkdir(parents=True)
    (killed / "files" / "corpora" / "two.txt").write_text("two\n")
    (killed / ".complete").write_text("x\n")
    r = cli("assets", "import", arch)
    assert r.exit_code == 0 and "already extracted" in r.output, r.output
    assert (tokbench_home / "data" / "corpora" / "two.txt").read_text() == "two\n" and not killed.exists()
