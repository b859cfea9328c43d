"""kill -9 at random points of the four writing commands: transplant (with --eval), train (--tiktoken),
report and assets import. For each command: one complete run (its duration T and its file list), then N
runs killed with SIGKILL after a seeded random delay in [0, 1.1 T] (every other one on a fresh OUT, the
rest replacing a complete earlier OUT). After each kill it checks:

- OUT is absent or complete and valid: its marker lists exactly the files of a complete run, every one is
  there and loads (tokenizer.json in `tokenizers`, the model's safetensors headers and config, the
  report's metrics.json and index.html; for assets import: the registry parses and every registered
  file of the archive has its recorded size);
- nothing that could be taken for output is left: OUT holds no file outside its marker's list, and the
  only other entries beside OUT are hidden `.OUT.tmp-*` / `.OUT.old-*` folders (counted);
- the inputs are byte-identical (sha256 of every file);
- the next run on the same OUT succeeds and leaves no `.OUT.tmp-*` / `.OUT.old-*` behind.

    nice python benchmarks/kill_points.py --kills 20 --seed 0 --work /tmp/tb-kill

Prints a table and writes JSON with --json FILE. Inputs are small on purpose (tiny random Llama models
from tests/transplant_tiny.py, 200 KB of tinyshakespeare, gpt2, three real tokenizer folders packed as one
archive), so the whole run takes about ten minutes on two busy cores.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MARKER = ".tokbench-output.json"


def tree_hash(paths) -> str:
    h = hashlib.sha256()
    for root in paths:
        root = Path(root)
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            h.update(str(p).encode() + b"\0")
            if p.is_file():
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
    return h.hexdigest()


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-")))


def strangers(out: Path, allowed: set[str]) -> list[str]:
    """Entries beside OUT that are neither OUT, the inputs, nor its hidden temporary folders."""
    return sorted(p.name for p in out.parent.iterdir() if p.name not in allowed and p.name != out.name
                  and not p.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-")))


# --- validity of a finished output ---------------------------------------------------------------------
def valid_folder(out: Path, expected: list[str], kind: str) -> str | None:
    """None when OUT is a complete output of `kind`; else what is wrong."""
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"no readable marker ({exc})"
    if marker["files"] != expected:
        return f"marker lists {marker['files'][:4]}..., a complete run {expected[:4]}..."
    have = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    if have != expected:
        return f"files {have} != {expected}"
    try:
        if kind == "train":
            from tokenizers import Tokenizer

            Tokenizer.from_file(str(out / "tokenizer.json"))
            json.loads((out / "train_report.json").read_text())
        elif kind == "transplant":
            from tokbench.vocab.model_io import open_model_folder

            open_model_folder(out)
            json.loads((out / "transplant_report.json").read_text())
        elif kind == "report":
            json.loads((out / "metrics.json").read_text())
            if not (out / "index.html").read_text().rstrip().endswith("</html>"):
                return "index.html is cut short"
    except Exception as exc:  # noqa: BLE001 - any failure to load is what we count
        return f"does not load: {type(exc).__name__}: {exc}"
    return None


def valid_import(home: Path, expected_files: dict[str, int]) -> str | None:
    reg = home / "registry.json"
    if not reg.exists():
        return None  # nothing registered: the import did not happen (absent output)
    try:
        data = json.loads(reg.read_text())
    except ValueError as exc:
        return f"registry unreadable: {exc}"
    srcs = [s for s in data["sources"].values() if s.get("type") == "archive"]
    if not srcs:
        return None
    for rel, size in srcs[0]["files"].items():
        p = home / "data" / rel
        if not p.is_file() or p.stat().st_size != size:
            return f"registered file {rel} missing or wrong size"
    if srcs[0]["files"] != expected_files:
        return "registered file list differs from a complete import"
    for a in data["assets"].values():
        if not Path(a["path"]).exists():
            return f"registered asset path {a['path']} missing"
    return None


# --- the four commands ----------------------------------------------------------------------------------
def setup(work: Path) -> dict:
    from tokbench.assets import resolve
    from transplant_tiny import base_and_target

    work.mkdir(parents=True, exist_ok=True)
    inp = work / "inputs"
    if not (inp / "base").exists():
        inp.mkdir(exist_ok=True)
        base_and_target(inp)
    text = inp / "shakespeare.txt"
    src = Path(resolve("tinyshakespeare", kind="corpus"))
    if src.is_dir():
        src = sorted(p for p in src.rglob("*") if p.is_file())[0]
    text.write_bytes(src.read_bytes()[:200_000])
    evalt = inp / "eval.txt"
    evalt.write_bytes(src.read_bytes()[200_000:206_000])
    arch = inp / "tokenizers-small.tar.xz"
    if not arch.exists():
        with tarfile.open(arch, "w:xz") as tf:
            for name in ("gpt2", "smollm2", "bert"):
                p = Path(resolve(name, kind="tokenizer"))
                folder = p if p.is_dir() else p.parent
                tf.add(folder, arcname=f"tokenizers/{folder.name}")
    gpt2 = str(resolve("gpt2", kind="tokenizer"))
    cli = [sys.executable, "-c", "from tokbench.cli import main; main()"]
    return {
        "transplant": {"args": cli + ["transplant", str(inp / "base"), "-t", str(inp / "target"), "--method", "mean",
                                      "--no-cache", "--eval", str(evalt), "--overwrite", "-o"],
                       "inputs": [inp / "base", inp / "target", evalt]},
        "train": {"args": cli + ["train", str(text), "--vocab-size", "2000", "--tiktoken", "-q", "--overwrite", "-o"],
                  "inputs": [text]},
        "report": {"args": cli + ["report", "-t", gpt2, "-c", str(text), "--no-parity", "-q", "--overwrite", "-o"],
                   "inputs": [text, Path(gpt2)]},
        "assets import": {"args": cli + ["assets", "import", str(arch), "-q"], "inputs": [arch]},
    }


def run_command(name: str, spec: dict, work: Path, kills: int, rng: random.Random, env: dict) -> dict:
    is_import = name == "assets import"
    out = work / "home" if is_import else work / f"out-{name}"
    args = spec["args"] if is_import else spec["args"] + [str(out)]
    env = dict(env, TOKBENCH_HOME=str(work / "home")) if is_import else env
    inputs_hash = tree_hash(spec["inputs"])
    allowed = {"inputs", "home"} | {f"out-{n}" for n in ("transplant", "train", "report")}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    full = time.perf_counter() - t0
    if is_import:
        reg = json.loads((out / "registry.json").read_text())
        expected = next(s for s in reg["sources"].values() if s.get("type") == "archive")["files"]
    else:
        expected = json.loads((out / MARKER).read_text())["files"]
    res = {"command": name, "full_run_s": round(full, 2), "kills": 0, "finished_before_kill": 0,
           "out_absent": 0, "out_complete": 0, "out_invalid": 0, "leftovers_after_kill": 0,
           "import_files_moved_unregistered": 0, "stray_entries": 0, "inputs_changed": 0,
           "next_run_ok": 0, "leftovers_after_next_run": 0, "problems": []}
    for i in range(kills):
        if i % 2 == 0 or is_import:
            shutil.rmtree(out, ignore_errors=True)  # a fresh OUT (assets: a fresh cache, so it really imports)
        delay = rng.uniform(0.0, 1.1) * full
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        res["kills"] += 1
        res["finished_before_kill"] += finished
        if is_import:
            bad = valid_import(out, expected)
            data = out / "data"
            if data.exists():
                moved = [p for p in data.rglob("*") if p.is_file() and ".import-" not in str(p)]
                reg_ok = (out / "registry.json").exists()
                if moved and not reg_ok:
                    res["import_files_moved_unregistered"] += 1
            res["leftovers_after_kill"] += bool(list(data.glob(".import-*"))) if data.exists() else 0
        else:
            bad = valid_folder(out, expected, name) if out.exists() else None
            res["leftovers_after_kill"] += bool(leftovers(out))
        if not out.exists() or (is_import and not (out / "registry.json").exists()):
            res["out_absent"] += 1
        elif bad is None:
            res["out_complete"] += 1
        else:
            res["out_invalid"] += 1
            res["problems"].append(f"kill {i} at {delay:.2f}s: {bad}")
        stray = strangers(out, allowed)
        res["stray_entries"] += len(stray)
        if stray:
            res["problems"].append(f"kill {i}: stray {stray}")
        if tree_hash(spec["inputs"]) != inputs_hash:
            res["inputs_changed"] += 1
            res["problems"].append(f"kill {i}: inputs changed")
        nxt = subprocess.run(args, env=env, capture_output=True, text=True)
        ok = nxt.returncode == 0 and (valid_import(out, expected) if is_import
                                      else valid_folder(out, expected, name)) is None
        res["next_run_ok"] += ok
        if not ok:
            res["problems"].append(f"kill {i}: next run rc {nxt.returncode}: {nxt.stderr.strip()[-300:]}")
        left = list((out / "data").glob(".import-*")) if is_import else leftovers(out)
        res["leftovers_after_next_run"] += bool(left)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tb-kill"))
    ap.add_argument("--commands", default="transplant,train,report,assets import")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + sys.path[1:]), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    specs = setup(a.work)
    rows = []
    t0 = time.perf_counter()
    for name in a.commands.split(","):
        rng = random.Random(f"{a.seed}:{name}")
        r = run_command(name, specs[name], a.work, a.kills, rng, env)
        rows.append(r)
        print(json.dumps(r), flush=True)
    cols = ["command", "full_run_s", "kills", "finished_before_kill", "out_absent", "out_complete", "out_invalid",
            "leftovers_after_kill", "import_files_moved_unregistered", "stray_entries", "inputs_changed",
            "next_run_ok", "leftovers_after_next_run"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
