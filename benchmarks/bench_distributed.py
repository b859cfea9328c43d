"""Counting + training on a >= 200 MB corpus with --engine process / ray, 1 and 2 workers (issue 14).

Builds the corpus in a temp folder from the registered shared corpora (every document of them, as JSONL
records, once as it is and then with the ASCII letters Caesar-shifted by 1, 2, ... per copy so that the
copies add distinct pre-tokens instead of repeating counts), runs each configuration in a fresh
subprocess (so each driver's peak RSS is its own), checks that every tokenizer.json is byte-identical,
and deletes the corpus. Figures: reports/distributed.md.

    nice python benchmarks/bench_distributed.py [--mb 200] [--vocab 4096] [--shard-mb 16] [--json OUT]

Per configuration: wall time per phase (start, map, reduce + load, train), CPU time (driver while
counting and in all; map tasks summed; Ray processes incl. daemons), peak RSS (driver while counting
and in all, training included; largest worker; Ray processes), partial result
sizes (sum and largest map result, reduced table), the final table's keys and the driver's RSS growth
while loading it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "gutenberg", "gsm8k-train", "gsm8k-test",
           "code-python", "code-rust", "code-cpp", "udhr", "bible-mark", "tatoeba", "tinystories"]
CONFIGS = [("process", 1), ("process", 2), ("ray", 1), ("ray", 2)]


def _shift(r: int):
    lo = "abcdefghijklmnopqrstuvwxyz"
    table = {ord(c): lo[(i + r) % 26] for i, c in enumerate(lo)}
    table.update({ord(c.upper()): lo[(i + r) % 26].upper() for i, c in enumerate(lo)})
    return table


def build_corpus(folder: Path, mb: int) -> tuple[list[Path], int]:
    from tokbench.assets import iter_documents

    docs = [d for c in CORPORA for d in iter_documents(c)]
    one = sum(len(d.encode("utf-8")) for d in docs)
    files, total, r = [], 0, 0
    while total < mb << 20:
        p = folder / f"mix-{r:02d}.jsonl"
        tr = _shift(r)
        with open(p, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d.translate(tr) if r else d}, ensure_ascii=False) + "\n")
        files.append(p)
        total += p.stat().st_size
        r += 1
    print(f"corpus: {len(files)} files, {total / 1e6:.1f} MB ({one / 1e6:.1f} MB of shared-corpus text per copy)",
          file=sys.stderr)
    return files, total


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _ray_processes() -> list[dict]:
    """Every process of the local Ray cluster: name, peak RSS (VmHWM) and CPU seconds."""
    out = []
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if not any(k in cmd for k in ("ray::", "raylet", "gcs_server", "ray/_private", "default_worker")):
                continue
            hwm = next((int(ln.split()[1]) for ln in open(f"/proc/{pid}/status") if ln.startswith("VmHWM:")), 0)
            st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(st[11]) + int(st[12])) / tick
        except OSError:
            continue
        name = cmd.split()[0].rsplit("/", 1)[-1][:40] if cmd.strip() else pid
        out.append({"pid": int(pid), "name": name, "peak_rss_mb": round(hwm / 1024, 1), "cpu_s": round(cpu, 2)})
    return out


def one(engine: str, workers: int, files: list[str], vocab: int, shard_mb: int, out: Path) -> dict:
    import importlib

    from tokbench import exec as ex

    tb = importlib.import_module("tokbench.bpe.train")
    t0 = time.perf_counter()
    counter = tb.new_counter("gpt2")
    shards = ex.plan_shards(files, shard_mb << 20)
    task = ex.CountTask((ex.TableSpec(counter.pattern),), ex.DEFAULT_PARTITIONS)
    executor = ex.make_executor(engine, workers)
    t_start = time.perf_counter() - t0
    rss_before = _rss_kb()
    rec = ex.run_count(task, shards, executor, [counter], progress=False)
    rss_after = _rss_kb()
    at_count = resource.getrusage(resource.RUSAGE_SELF)  # before training, which also runs in the driver
    ray_procs = _ray_processes() if engine == "ray" else []
    executor.close()
    t1 = time.perf_counter()
    trained = tb.train_counts(counter, vocab, pattern=counter.pattern, progress=False)
    path = trained.save(out)
    t2 = time.perf_counter()
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    shards_rec = rec["shards"]
    return {
        "engine": engine, "workers": workers, "shards": len(shards), "partitions": task.partitions,
        "bytes": rec["bytes"], "distinct_pretokens": len(counter), "pretokens": counter.total(),
        "tokenizer_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "seconds": {"start": round(t_start, 2), **rec["seconds"], "train": round(t2 - t1, 2),
                    "count_total": round(t1 - t0, 2)},
        "cpu_s": {"driver_counting": round(at_count.ru_utime + at_count.ru_stime, 2),
                  "driver": round(me.ru_utime + me.ru_stime, 2),
                  "map_tasks": round(sum(s["cpu_s"] for s in shards_rec), 2),
                  "pool_children": round(kids.ru_utime + kids.ru_stime, 2),
                  "ray_processes": round(sum(p["cpu_s"] for p in ray_procs), 2)},
        "peak_rss_mb": {"driver_counting": round(at_count.ru_maxrss / 1024, 1),
                        "driver": round(me.ru_maxrss / 1024, 1),
                        "largest_worker": round(max(s["peak_rss_kb"] for s in shards_rec) / 1024, 1),
                        "ray_processes": sorted(ray_procs, key=lambda p: -p["peak_rss_mb"])[:8]},
        "driver_rss_mb": {"before_count": round(rss_before / 1024, 1), "after_count": round(rss_after / 1024, 1)},
        "driver_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
        "shipped": {"map_results_mb": round(rec["map_shipped_bytes"] / 1e6, 2),
                    "largest_map_result_mb": round(rec["largest_map_result_bytes"] / 1e6, 2),
                    "final_table_mb": round(rec["reduced_bytes"] / 1e6, 2),
                    "largest_partition_mb": round(rec["largest_partition_bytes"] / 1e6, 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--shard-mb", type=int, default=16)
    ap.add_argument("--json", default=None)
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)  # ENGINE WORKERS (child run)
    ap.add_argument("--files", nargs="*", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), a.files, a.vocab, a.shard_mb, Path(a.out))))
        return
    tmp = Path(tempfile.mkdtemp(prefix="tokbench-bench-dist-"))
    try:
        files, total = build_corpus(tmp, a.mb)
        results = []
        for engine, w in CONFIGS:
            load0 = os.getloadavg()
            r = subprocess.run([sys.executable, __file__, "--one", engine, str(w), "--vocab", str(a.vocab),
                                "--shard-mb", str(a.shard_mb), "--out", str(tmp / f"{engine}{w}.json"),
                                "--files", *map(str, files)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{engine} {w} failed:\n{r.stderr[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res["load_avg_before"] = [round(x, 2) for x in load0]
            res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            results.append(res)
            print(json.dumps(res), file=sys.stderr)
        shas = {r["tokenizer_sha256"] for r in results}
        summary = {"corpus_mb": round(total / 1e6, 1), "files": len(files), "identical": len(shas) == 1,
                   "cpus": os.cpu_count(), "python": sys.version.split()[0], "results": results}
        try:
            import ray

            summary["ray"] = ray.__version__
        except ImportError:
            pass
        print(json.dumps(summary, indent=1))
        if a.json:
            Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
        if len(shas) != 1:
            sys.exit("tokenizer.json differs between configurations")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
