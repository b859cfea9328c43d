"""Time `tokbench metrics` and check its values against a reference run.

    python benchmarks/bench_metrics.py run OUT.json [--limit-bytes N] [-- extra metrics options]
    python benchmarks/bench_metrics.py compare REF.json NEW.json

`run` runs the full issue-5 command (10 shared tokenizers x 13 shared corpora, parity on Tatoeba
and UDHR) under /usr/bin/time -v, writes the --json output to OUT.json and prints wall clock,
user + sys CPU time, the share of the CPU the job got and the load average before and after.
`compare` checks that two --json outputs hold the same values: integers and strings exactly,
floats to a relative 1e-12 (the held-out sums are reduced in parallel, so their last bits vary
from run to run); timings (`seconds`), provenance, the command line and the encoder description are not
compared.
Exit status 1 when a value differs.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

TOKENIZERS = ["gpt2-tiktoken", "whisper", "llama3", "llama2", "mistral-v1", "mistral-v3", "qwen3", "smollm2",
              "xlm-r", "bert"]
CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "tinystories", "gutenberg", "gsm8k-train",
           "gsm8k-test", "code-python", "code-rust", "code-cpp", "udhr", "tatoeba", "bible-mark"]
SKIP = {"seconds", "provenance", "encoder", "command"}
REL = 1e-12


def diff(a, b, path="", out=None):
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in SKIP:
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'new' if k in b else 'reference'}")
            else:
                diff(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
            out.append(f"{path}: {a!r} vs {b!r}")
        elif not (a == b or (math.isnan(a) and math.isnan(b))
                  or abs(a - b) <= REL * max(abs(a), abs(b))):
            out.append(f"{path}: {a!r} vs {b!r}")
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: {a!r} vs {b!r}")
    return out


def label(data: dict, path: str) -> str:
    """results[i] -> results[i](tokenizer x corpus) for readable messages."""
    m = re.match(r"/results\[(\d+)\]", path)
    if m:
        r = data["results"][int(m.group(1))]
        return f"{path} ({r['tokenizer']} x {r['corpus']})"
    return path


def compare(ref_path: str, new_path: str) -> int:
    ref, new = json.load(open(ref_path)), json.load(open(new_path))
    found = diff(ref, new)
    n_values = sum(1 for _ in _leaves(ref))
    floats = [(x, y) for x, y in zip(_leaves(ref), _leaves(new)) if isinstance(x, float) and isinstance(y, float)]
    worst = max((abs(x - y) / max(abs(x), abs(y), 1e-300) for x, y in floats if x == x and y == y), default=0.0)
    exact = sum(1 for x, y in floats if x == y)
    print(f"{n_values} values compared ({len(floats)} floats: {exact} bit-identical, largest relative "
          f"difference {worst:.2e}); {len(found)} differ")
    for line in found[:40]:
        print("  " + label(ref, line))
    return 1 if found else 0


def _leaves(x, key=None):
    if key in SKIP:
        return
    if isinstance(x, dict):
        for k in sorted(x):
            yield from _leaves(x[k], k)
    elif isinstance(x, list):
        for y in x:
            yield from _leaves(y)
    else:
        yield x


def run(out: str, extra: list[str]) -> int:
    cmd = ["/usr/bin/time", "-v", os.environ.get("TOKBENCH", "tokbench"), "metrics"]
    for t in TOKENIZERS:
        cmd += ["-t", t]
    for c in CORPORA:
        cmd += ["-c", c]
    cmd += ["--json", "-q"] + extra
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    with open(out, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    stats = dict(re.findall(r"^\s*(.+?): (\S.*)$", p.stderr, re.M))
    user, sys_ = float(stats.get("User time (seconds)", "nan")), float(stats.get("System time (seconds)", "nan"))
    print(" ".join(cmd))
    print(f"exit {p.returncode}; wall {wall:.1f} s ({stats.get('Elapsed (wall clock) time (h:mm:ss or m:ss)')}); "
          f"CPU user {user:.1f} + sys {sys_:.1f} = {user + sys_:.1f} s; "
          f"CPU share {stats.get('Percent of CPU this job got')}; "
          f"peak RSS {int(stats.get('Maximum resident set size (kbytes)', 0)) / 1e6:.2f} GB; "
          f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if p.returncode:
        print(p.stderr[-3000:])
    return p.returncode


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        extra = sys.argv[3:]
        if extra[:1] == ["--"]:
            extra = extra[1:]
        sys.exit(run(sys.argv[2], extra))
    print(__doc__)
    sys.exit(2)
