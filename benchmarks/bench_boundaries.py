"""Boundary models on CPU: train the arms, evaluate them against zero-training segmenters, export MAGNET
(acceptance items 2-6 of issue 13, at whatever budget is given).

    nice python benchmarks/bench_boundaries.py --out /tmp/bb [--preset tiny] [--minutes 10]
        [--arms dtp,priors,magnet,bytes] [--steps 100000] [--threads 1] [--device cpu]
        [--report reports/boundaries-bench.md] [--max-bytes 50000]

Each arm trains into OUT/ARM for --minutes of training time (or --steps, whichever comes first; a run in
OUT/ARM is resumed), one after the other (never two at once: the machine is shared). Then `tokbench
boundaries report` evaluates every run on the held-out splits (with bytes, words, GPT-2, Llama 3 and XLM-R
on the same Tatoeba test text) into --report, and `tokbench boundaries export` distils MAGNET's segments
into OUT/export (F1 against the learned segmenter on held-out text). The load average before and after each
phase is printed and written to OUT/bench.json: compare arms measured in the same run only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run(args: list[str]) -> float:
    t0 = time.time()
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "tokbench.cli", *args], check=True)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--arms", default="dtp,priors,magnet,bytes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--report", default="reports/boundaries-bench.md")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--max-bytes", type=int, default=50_000, help="held-out bytes per language in the report")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"argv": sys.argv, "phases": []}
    arms = [x for x in a.arms.split(",") if x]
    for arm in arms:
        before = _load()
        resume = ["--resume"] if (out / arm / "checkpoint.pt").exists() else []
        s = _run(["boundaries", "train", str(out / arm), "--arm", arm, "--preset", a.preset, "--steps", str(a.steps),
                  "--max-minutes", str(a.minutes), "--threads", str(a.threads), "--device", a.device,
                  "--checkpoint-every", "200", "--log-every", "50", *resume])
        summary = json.loads((out / arm / "train.json").read_text())
        record["phases"].append({"phase": f"train {arm}", "wall_s": round(s, 1), "load_before": before,
                                 "load_after": _load(), "steps": summary["step"],
                                 "train_seconds": summary["seconds"]})
    before = _load()
    s = _run(["boundaries", "report", *[str(out / arm) for arm in arms], "--out", a.report, "--max-bytes", str(a.max_bytes), "--threads",
              str(a.threads), "--device", a.device])
    record["phases"].append({"phase": "report", "wall_s": round(s, 1), "load_before": before, "load_after": _load()})
    if "magnet" in arms:
        before = _load()
        s = _run(["boundaries", "export", str(out / "magnet"), str(out / "export"), "--overwrite",
                  "--vocab-size", str(a.vocab_size)])
        record["phases"].append({"phase": "export magnet", "wall_s": round(s, 1), "load_before": before,
                                 "load_after": _load(),
                                 "export": json.loads((out / "export" / "export.json").read_text())})
    (out / "bench.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record["phases"], indent=1))


if __name__ == "__main__":
    main()
