"""Rebuild tokbench/corpora/python-stdlib/ from a CPython 3.11 standard library
(`python corpora/build_python_stdlib.py`).

Reads the top-level `Lib/*.py` modules of the running interpreter's standard library (sorted by name,
files of at most 60,000 bytes, until the training text passes 700,000 bytes), keeps `HELD_OUT` apart
for evaluation, and writes train.txt, heldout.txt (each: whole files, in order, one blank line between
them), LICENSE (CPython's own LICENSE.txt) and files.txt (every file, its split, bytes and sha256).
Nothing here is imported by tokbench; the corpus itself is what ships.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import sysconfig
from pathlib import Path

HELD_OUT = ("shlex.py", "textwrap.py")
MAX_FILE = 60_000
TRAIN_BYTES = 700_000


def main() -> None:
    here = Path(__file__).resolve().parents[1] / "tokbench" / "corpora" / "python-stdlib"
    here.mkdir(parents=True, exist_ok=True)
    lib = Path(sysconfig.get_paths()["stdlib"])
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"build.py: run it with CPython 3.11 (this is {sys.version.split()[0]})")
    files = sorted(p for p in lib.glob("*.py") if p.is_file())
    train, held, rows, size = [], [], [], 0
    for p in files:
        data = p.read_bytes()
        if p.name in HELD_OUT:
            held.append(data)
            split = "heldout"
        elif size < TRAIN_BYTES and len(data) <= MAX_FILE and p.name != "this.py":
            train.append(data)
            size += len(data)
            split = "train"
        else:
            continue
        rows.append(f"{split}\tLib/{p.name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}")
    (here / "train.txt").write_bytes(b"\n".join(train))
    (here / "heldout.txt").write_bytes(b"\n".join(held))
    (here / "files.txt").write_text(f"# CPython {sys.version.split()[0]} Lib/, split, bytes, sha256\n"
                                    + "\n".join(rows) + "\n", encoding="utf-8")
    shutil.copyfile(lib / "LICENSE.txt", here / "LICENSE")


if __name__ == "__main__":
    main()
