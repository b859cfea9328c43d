"""Transplant benchmark: tokbench methods vs mergekit-tokensurgeon on the same inputs.

    python benchmarks/bench_transplant.py [--base smollm2-135m] [--target gpt2] [--donor tbd-gpt2-d128]
        [--methods omp,tokenadapt,subword,mean] [--mergekit-ks 8,16,32,64]
        [--mergekit /tmp/mkvenv/bin/mergekit-tokensurgeon] [--text wikitext2-test] [--max-chars 120000]
        [--work /tmp/tb-bench] [--results results.json]
    python benchmarks/bench_transplant.py --matrix [...]   # the matrix of real pairs: bench_transplant_matrix.py

For every configuration: transplant (timed, wall clock), then bits/byte of the output on the first
--max-chars characters of --text, as a ratio to the base's bits/byte (cached: measured once). One
result per configuration is appended to --results as soon as it is done (a rerun skips what is there),
so a long run can be interrupted and resumed. mergekit runs as a subprocess of its own venv; if it is
missing, its rows are reported as not run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def markdown_table(results: dict) -> str:
    """The results as the table of reports/transplant.md (ratio = bits/byte after / before)."""
    lines = ["| method | bits/byte | ratio after/before | transplant wall s | CPU s | load avg (start, end) |",
             "|---|---:|---:|---:|---:|---|"]
    base = results.get("base", {}).get("bits_per_byte")
    if base is not None:
        lines.append(f"| base | {base:.4f} | 1 | | | |")
    for key, row in results.items():
        if not isinstance(row, dict) or "transplant_seconds" not in row:
            continue
        bpb = f"{row['bits_per_byte']:.4f}" if "bits_per_byte" in row else "not evaluated"
        ratio = f"{row['ratio']:.4f}" if "ratio" in row else ""
        load = ", ".join(str(x) for x in row.get("load_avg_start_end", []))
        lines.append(f"| {key} | {bpb} | {ratio} | {row['transplant_seconds']:.1f} | {row.get('cpu_seconds', '')} | {load} |")
    return "\n".join(lines)


def main() -> None:
    if "--matrix" in sys.argv[1:]:  # issue 16 section 1: many targets x methods (bench_transplant_matrix.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_transplant_matrix import main as matrix_main

        return matrix_main([a for a in sys.argv[1:] if a != "--matrix"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--target", default="gpt2")
    ap.add_argument("--donor", default="tbd-gpt2-d128")
    ap.add_argument("--methods", default="omp,tokenadapt,subword,mean")
    ap.add_argument("--mergekit-ks", default="8,16,32,64", help="comma list; empty to skip mergekit")
    ap.add_argument("--mergekit-eval-ks", default=None, help="ks whose mergekit output is evaluated (default: all)")
    ap.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-tokensurgeon")
    ap.add_argument("--text", default="wikitext2-test")
    ap.add_argument("--max-chars", type=int, default=120_000)
    ap.add_argument("--work", default="/tmp/tb-bench")
    ap.add_argument("--results", default=None)
    ap.add_argument("--keep", action="store_true", help="keep output folders")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of --results (or the default)")
    args = ap.parse_args()
    if args.table:
        path = Path(args.results) if args.results else Path(args.work) / f"results-{args.base}-{args.target}.json"
        print(markdown_table(_load(path)))
        return

    from tokbench.assets import home, resolve
    from tokbench.eval import bits_per_byte, load_eval_text
    from tokbench.transplant import transplant

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.base}->{args.target}"
    results_path = Path(args.results) if args.results else work / f"results-{args.base}-{args.target}.json"
    results = _load(results_path)
    cache = home() / "cache"
    text, label = load_eval_text(args.text, args.max_chars)
    base_dir = Path(resolve(args.base, kind="model"))
    donor_dir = Path(resolve(args.donor, kind="model")) if args.donor else None

    import platform
    from importlib import metadata

    def _ver(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    results.setdefault("env", {"python": platform.python_version(), "cpus": os.cpu_count(),
                               **{n: _ver(n) for n in ("tokbench", "torch", "transformers", "faiss-cpu", "numpy")}})
    if "base" not in results:
        results["base"] = bits_per_byte(base_dir, text, cache_dir=cache / "eval")
        _save(results_path, results)
    base_bpb = results["base"]["bits_per_byte"]
    print(f"{tag}: base {base_bpb:.4f} bits/byte on {label} ({len(text):,} chars)", flush=True)

    for method in [m for m in args.methods.split(",") if m]:
        key = f"tokbench-{method}"
        if key in results:
            continue
        out = work / f"tb-{args.base}-{method}"
        t0, c0, l0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF), _load_avg()
        rep = transplant(base_dir, args.target, out, donor=donor_dir if method == "omp" else None, method=method,
                         overwrite=True, cache_dir=cache)
        secs, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0
        ev = bits_per_byte(out, text)
        results[key] = {"transplant_seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
                        "load_avg_start_end": [l0, _load_avg()], "bits_per_byte": ev["bits_per_byte"],
                        "ratio": ev["bits_per_byte"] / base_bpb, "parameters": rep["parameters"],
                        "held_out": rep["held_out_reconstruction"], "eval": ev}
        _save(results_path, results)
        print(f"  {key:24s} {ev['bits_per_byte']:.4f} ratio {ev['bits_per_byte'] / base_bpb:.4f} "
              f"transplant {secs:.1f} s ({cpu:.1f} CPU-s)", flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)

    ks = [int(k) for k in args.mergekit_ks.split(",") if k]
    eval_ks = ks if args.mergekit_eval_ks is None else [int(k) for k in args.mergekit_eval_ks.split(",") if k]
    mk = Path(args.mergekit)
    if ks and not mk.is_file():
        print(f"  mergekit-tokensurgeon not found at {mk}: mergekit rows not run", flush=True)
        ks = []
    version = None
    if ks:
        try:
            version = subprocess.run([str(mk.parent / "python"), "-c", "import importlib.metadata as m;"
                                      "print(m.version('mergekit'))"], capture_output=True, text=True).stdout.strip()
        except OSError:
            version = None
        results["mergekit_version"] = version
    for k in ks:
        key = f"mergekit-omp-k{k}"
        if key in results:
            continue
        out = work / f"mk-{args.base}-k{k}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(mk), str(base_dir), str(donor_dir), str(out), "--k", str(k), "--approximation-method", "omp",
               "--quiet"]
        env = dict(os.environ, TQDM_DISABLE="1")
        t0, c0, l0 = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN), _load_avg()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        secs, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_CHILDREN) - c0
        if proc.returncode != 0:
            results[key] = {"error": (proc.stderr or proc.stdout)[-2000:], "transplant_seconds": round(secs, 2)}
            _save(results_path, results)
            print(f"  {key:24s} failed ({secs:.1f} s): {(proc.stderr or '').strip().splitlines()[-1:]}", flush=True)
            continue
        row = {"transplant_seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
               "load_avg_start_end": [l0, _load_avg()], "command": " ".join(cmd)}
        if k in eval_ks:
            ev = bits_per_byte(out, text)
            row.update(bits_per_byte=ev["bits_per_byte"], ratio=ev["bits_per_byte"] / base_bpb, eval=ev)
        results[key] = row
        _save(results_path, results)
        print(f"  {key:24s} {row.get('bits_per_byte', float('nan')):.4f} ratio {row.get('ratio', float('nan')):.4f} "
              f"transplant {secs:.1f} s ({cpu:.1f} CPU-s)", flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)

    print(markdown_table(results))
    print(json.dumps({k: ({kk: v[kk] for kk in ("bits_per_byte", "ratio", "transplant_seconds", "cpu_seconds") if kk in v}
                          if isinstance(v, dict) else v) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
