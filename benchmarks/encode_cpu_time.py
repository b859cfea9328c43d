"""Encode throughput in CPU seconds, list of ids against no list, for tokbench and the peers (one thread).

    python benchmarks/encode_cpu_time.py [--vocab llama3] [--runs 3]
        [--peer-python tokenizers1=/work/venv-tok1/bin/python] [--peer-python peers=/work/venv-encpeers/bin/python]

On a loaded machine wall-clock figures of engines run one after the other see different loads; CPU seconds of
the measuring process do not count the time it waited for a core. Each engine runs in its own interpreter
(as in bench_encode_peers.py, whose text set "long" and vocabularies this uses), one thread, over the same
texts: a first pass (cold caches, reported), then `--runs` timed passes per mode, best reported:
- tokbench: `encode_ordinary` (list) and `encode_ordinary(as_array=True)` (no Python int per id);
- tokenizers 1.0 / fastokens: `encode(...).ids` (list) and `encode(...)` without reading `.ids`.
The list-minus-no-list difference is what building the id list costs each engine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ENGINES = {"tokbench": "self", "tokenizers1": "tokenizers1", "fastokens": "peers"}


def _modes(engine: str, data: Path, vocab: str):
    sys.path.insert(0, str(HERE.parent))
    import bench_encode_peers as b

    rank, pat, js = b.VOCABS[vocab]
    if engine == "tokbench":
        from tokbench.bpe import BPE

        enc = BPE.from_file(str(data / rank), pattern=pat)
        return {"list": enc.encode_ordinary, "no list": lambda t: enc.encode_ordinary(t, as_array=True)}
    if engine == "tokenizers1":
        import tokenizers

        tk = tokenizers.Tokenizer.from_file(str(data / js))
    else:
        import fastokens

        tk = fastokens.Tokenizer.from_file(str(data / js))
    return {"list": lambda t: tk.encode(t, add_special_tokens=False).ids,
            "no list": lambda t: tk.encode(t, add_special_tokens=False)}


def worker(a) -> None:
    texts = json.loads(Path(a.texts).read_text(encoding="utf-8"))
    mb = sum(len(t.encode()) for t in texts) / 1e6
    modes = _modes(a.worker, Path(a.data), a.vocab)
    t0 = time.process_time()
    for t in texts:
        modes["list"](t)
    out = {"first pass": round(mb / (time.process_time() - t0), 1)}
    for name, f in modes.items():
        best = float("inf")
        for _ in range(a.runs):
            t0 = time.process_time()
            for t in texts:
                f(t)
            best = min(best, time.process_time() - t0)
        out[name] = round(mb / best, 1)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path.home() / ".cache/tokbench/data"))
    ap.add_argument("--vocab", default="llama3", choices=["gpt2", "llama3"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engines", default="tokbench,tokenizers1,fastokens")
    ap.add_argument("--peer-python", action="append", default=[], help="NAME=PYTHON (tokenizers1, peers)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--texts", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    sys.path.insert(0, str(HERE.parent))
    import bench_encode_peers as b

    pythons = {"self": sys.executable, "tokenizers1": "/work/venv-tok1/bin/python",
               "peers": "/work/venv-encpeers/bin/python"}
    pythons.update(dict(p.split("=", 1) for p in a.peer_python))
    env = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", FASTOKENS_BPE_THREADS="1",
               OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        textfile = Path(tmp) / "texts.json"
        texts = b.texts(Path(a.data), "long")
        textfile.write_text(json.dumps(texts), encoding="utf-8")
        print(f"{len(texts)} texts, {sum(len(t.encode()) for t in texts) / 1e6:.2f} MB, vocab {a.vocab}, "
              f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; MB/s in CPU seconds")
        for engine in a.engines.split(","):
            cmd = [pythons[ENGINES[engine]], str(HERE), "--worker", engine, "--texts", str(textfile),
                   "--data", a.data, "--vocab", a.vocab, "--runs", str(a.runs)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{engine}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            print(engine, proc.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
