"""ANN decoding over a huge output vocabulary (issue 12, acceptance 5): the factored index and FAISS indexes against
the exact BLAS matmul.

Rows: SmolLM2-135M's 49,152 head rows (tied, bias zero) plus merged-token rows (tokbench.dynamic.ann_data) up
to --rows, stored fp16. Queries: SmolLM2's real final hidden states on WikiText-2 test. For each index setting:
recall@1 / @20 and top-1 agreement against exact inner product with bias, mass outside the 20 returned, latency
at batch 1 and 32 (medians, --threads threads), build seconds, index bytes, RSS; the cosine mode beside it; a
nonzero bias on --bias-rows rows to show what the MIPS transform buys. Results are written to --json after every
stage (temp file + rename), so a killed run keeps what it measured.

Stage "factored" (tokbench.dynamic.factored): the exact index over the merged rows' coefficients (Rust kernel,
SmolLM2's bfloat16 head kept as bfloat16, which is lossless; and the numpy/scipy engine), against the exact matmul
over the float32 rows those coefficients stand for, timed interleaved with it (query by query, same batches), with
and without a nonzero bias; plus its agreement with the exact top-k of the fp16-stored table.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ann.py --rows 1000000 --json /tmp/ann.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from tokbench.dynamic.ann import (OutputIndex, blas_threads, evaluate, exact_latency, exact_topk, logits_of,  # noqa: E402
                                  measure, recall_at, rss_bytes)
from tokbench.dynamic.ann_data import head_rows, hidden_states, load_head  # noqa: E402
from tokbench.dynamic.factored import FactoredIndex  # noqa: E402
from tokbench.outputs import atomic_write  # noqa: E402


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def cpu_name() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def table(path: Path) -> str:
    """The trade-off table (markdown) of a results file."""
    r = json.loads(Path(path).read_text())
    st = r["stages"]
    ex = next((s for s in st if s["stage"] == "exact_latency"), None)
    exh = next((s for s in st if s["stage"] == "exact_latency_hnsw_rows"), None)
    lines = ["| index | rows | params | recall@1 | recall@20 | top-1 | mass outside 20 | batch 1 ms | batch 32 ms "
             "| x exact (b1) | build s | index MiB | load avg |", "|" + "---|" * 13]
    for s in st:
        if s["stage"] not in ("ivf", "hnsw", "bias"):
            continue
        rows = s.get("rows", r["stages"][0]["rows"])
        base = ex if s["stage"] == "ivf" else exh if s["stage"] == "hnsw" else None
        p = {k: v for k, v in s["params"].items() if k not in ("kind", "storage")}
        name = s["params"]["kind"] + " " + s["params"]["storage"] + (f" ({s['variant']})" if "variant" in s else "")
        lines.append(f"| {name} | {rows:,} | {p} | {s['recall@1']:.3f} | {s['recall@20']:.3f} | {s['top1']:.3f} | "
                     f"{s['mass_outside_mean']:.3f} | {s['latency_b1_s'] * 1e3:.1f} | {s['latency_b32_s'] * 1e3:.1f} | "
                     + (f"{base['latency_b1_s'] / s['latency_b1_s']:.1f}" if base else "-")
                     + f" | {s['build_s']:.0f} | {s['index_bytes'] / 2**20:.0f} | {s['load_avg']} |")
    fac = [s for s in st if s["stage"] == "factored"]

    def ms(d: dict, key: str, digits: int) -> str:
        return f"{d['exact'] * 1e3:.0f} / {d['factored'] * 1e3:.{digits}f} / {d[key] * 1e3:.{digits}f}"

    _section(lines, "factored | engine / storage | recall@1 | recall@20 | top-1 (same id) | top-1 (exact max logit) | "
             "max abs logit diff | batch 1 ms: exact / rust / numpy | x exact (b1) | batch 32 ms: exact / rust / numpy "
             "| x exact (b32) | index MiB | load avg",
             [f"{s['variant']} | {s['params']['engine']} / {s['params']['storage']} | {s['recall@1']:.3f} | "
              f"{s['recall@20']:.4f} | {s['top1']:.3f} | {s['top1_within_1e-5']:.3f} | {s['max_abs_logit_diff']:.1e} | "
              f"{ms(s['latency_b1_s'], 'factored_numpy', 1)} | {s['x_exact_b1']:.1f} | "
              f"{ms(s['latency_b32_s'], 'factored_numpy', 0)} | {s['x_exact_b32']:.1f} | "
              f"{s['index_bytes'] / 2**20:.0f} | {s['load_avg']}" for s in fac])
    _section(lines, "factored + int8 prefilter | ids and scores identical to the plain kernel | batch 1 ms: exact / "
             "plain / int8 | x exact (b1) | batch 32 ms: exact / plain / int8 | x exact (b32) | index MiB | load avg",
             [f"{s['variant']} | {s['int8_identical']} | {ms(s['latency_b1_s'], 'factored_int8', 1)} | "
              f"{s['x_exact_b1_int8']:.1f} | {ms(s['latency_b32_s'], 'factored_int8', 0)} | "
              f"{s['x_exact_b32_int8']:.1f} | {s['int8_index_bytes'] / 2**20:.0f} | {s['load_avg']}"
              for s in fac if "x_exact_b1_int8" in s])
    return "\n".join(lines)


def _section(lines: list, header: str, rows: list) -> None:
    """Append a markdown table (a blank line, the header, the rule, the rows) when there are rows."""
    if rows:
        lines += ["", f"| {header} |", "|" + "---|" * (header.count("|") + 1)] + [f"| {r} |" for r in rows]


def paired_latency(fns: dict, queries: np.ndarray, batch: int, repeats: int) -> dict:
    """Median seconds of each fn on the same batches, the fns interleaved batch by batch (so load changes hit
    all of them alike)."""
    times: dict = {name: [] for name in fns}
    for r in range(repeats):
        a = (r * batch) % max(1, len(queries) - batch + 1)
        q = queries[a:a + batch]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(q)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def factored_stage(a, hr, h, save) -> None:
    """The factored index beside the exact fp32 matmul over the same (float32) rows; see the module docstring."""
    head = load_head(a.model)[0]
    with blas_threads(a.threads):
        table = FactoredIndex(head, hr.coeffs, engine="numpy").materialize()  # the float32 rows the coefficients
        ex0 = exact_topk(table, None, h, 20)                                    # stand for: the exact reference
        spread = float(ex0.scores[:, 0].std() + ex0.scores[:, :20].std(axis=1).mean())
        bias = (np.random.default_rng(0).standard_normal(len(table)) * spread).astype(np.float32)
        for variant, b in (("no_bias", None), ("bias", bias))[:1 if a.no_factored_bias else 2]:
            fx = FactoredIndex(head, hr.coeffs, b, threads=a.threads)
            fnp = FactoredIndex(head, hr.coeffs, b, threads=a.threads, engine="numpy")
            ex32 = ex0 if b is None else exact_topk(table, b, h, 20)
            r = {"variant": variant, "rows": len(table), "params": fx.params, "build_s": fx.build_seconds,
                 "index_bytes": fx.nbytes(), **({} if b is None else {"bias_std": spread}), **evaluate(fx, h, ex32)}
            ids, scores = fx.search(h, 20)
            r["max_abs_logit_diff"] = float(np.abs(scores - ex32.scores).max())
            r["ids_equal_share"] = float(np.mean(ids == ex32.ids))
            first = logits_of(table, b, h, ids[:, :1])[:, 0]  # the dense exact logit of the id returned first
            r["top1_within_1e-5"] = float(np.mean(np.abs(first - ex32.scores[:, 0])
                                                  <= 1e-5 * np.maximum(1, np.abs(first))))
            r["numpy_engine"] = evaluate(fnp, h, ex32)
            if b is None:
                r["vs_fp16_rows"] = evaluate(fx, h, exact_topk(hr.rows, None, h, 20))
            fns = {"exact": lambda q, b=b: exact_topk(table, b, q, 20, chunk=len(table)),
                   "factored": lambda q, fx=fx: fx.search(q, 20), "factored_numpy": lambda q, f=fnp: f.search(q, 20)}
            if a.prefilter:  # the int8 prefilter: the same ids and scores (checked), timed in the same interleaving
                f8 = FactoredIndex(head, hr.coeffs, b, threads=a.threads, prefilter="int8")
                i8, s8 = f8.search(h, 20)
                r["int8_identical"] = bool((i8 == ids).all() and (s8 == scores).all())
                r["int8_index_bytes"] = f8.nbytes()
                fns["factored_int8"] = lambda q, f=f8: f.search(q, 20)
            r["latency_b1_s"] = paired_latency(fns, h, 1, a.repeats)
            r["latency_b32_s"] = paired_latency(fns, h, 32, max(3, a.repeats // 6))
            r["x_exact_b1"] = r["latency_b1_s"]["exact"] / r["latency_b1_s"]["factored"]
            r["x_exact_b32"] = r["latency_b32_s"]["exact"] / r["latency_b32_s"]["factored"]
            if a.prefilter:
                r["x_exact_b1_int8"] = r["latency_b1_s"]["exact"] / r["latency_b1_s"]["factored_int8"]
                r["x_exact_b32_int8"] = r["latency_b32_s"]["exact"] / r["latency_b32_s"]["factored_int8"]
            save("factored", **r)
            del fx, fnp
    del table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=None, help="print the markdown table of a results file and stop")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", default="8,16,32,64,128")
    ap.add_argument("--hnsw-rows", type=int, default=200_000, help="rows of the HNSW measurement (0: skip)")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--ef", default="64,128,256,512")
    ap.add_argument("--bias-rows", type=int, default=200_000, help="rows of the nonzero-bias experiment (0: skip)")
    ap.add_argument("--rerank", type=int, default=64)
    ap.add_argument("--json", type=Path, default=Path("/tmp/bench_ann.json"))
    ap.add_argument("--stages", default="exact,factored,ivf,bias,hnsw",
                    help="stages to run, in this order: exact (needed by ivf), factored, ivf, bias, hnsw")
    ap.add_argument("--repeats", type=int, default=30, help="timed batch-1 searches of the factored stage")
    ap.add_argument("--no-factored-bias", action="store_true", help="skip the factored stage's nonzero-bias run")
    ap.add_argument("--prefilter", action="store_true",
                    help="factored stage: also time the int8 prefilter (FactoredIndex(prefilter='int8'))")
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.table))
        return 0
    stages = set(a.stages.split(","))
    out: dict = {"command": "python benchmarks/bench_ann.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "threads": a.threads, "faiss": __import__("faiss").__version__, "numpy": np.__version__,
                 "scipy": __import__("scipy").__version__, "cpu": cpu_name(), "stages": []}

    def save(stage: str, **data):
        data.update(stage=stage, load_avg=load(), rss_bytes=rss_bytes()[0], peak_rss_bytes=rss_bytes()[1])
        out["stages"].append(data)
        atomic_write(a.json, json.dumps(out, indent=1))
        print(json.dumps(data), flush=True)

    t0 = time.perf_counter()
    hr = head_rows(a.model, a.rows, progress=True)
    rows = hr.rows
    h = hidden_states(a.model, positions=a.queries, threads=a.threads)
    save("data", rows=rows.shape[0], dim=rows.shape[1], n_base=hr.n_base, n_dynamic=hr.n_dynamic, n_ngram=hr.n_ngram,
         storage="fp16", queries=len(h), seconds=time.perf_counter() - t0)
    if "factored" in stages and "exact" not in stages:
        factored_stage(a, hr, h, save)
    if "exact" not in stages:
        return 0
    with blas_threads(a.threads):
        ex = exact_topk(rows, None, h, 20)
        cos = exact_topk(rows, None, h, 20, metric="cosine")
        save("exact", seconds=ex.seconds, cosine_recall_at_20=recall_at(cos.ids, ex.ids, 20),
             cosine_recall_at_1=float(np.mean([t in set(f.tolist()) for f, t in zip(cos.ids, ex.ids[:, 0])])),
             cosine_top1=float(np.mean(cos.ids[:, 0] == ex.ids[:, 0])),
             exact_mass_outside_top20=float(np.mean(1 - np.exp(
                 np.logaddexp.reduce(ex.scores.astype(np.float64), axis=1) - ex.lse))))
        rows32 = rows.astype(np.float32)
        save("exact_latency", **exact_latency(rows32, None, h))
        del rows32
    if "factored" in stages:
        factored_stage(a, hr, h, save)
    for nprobe in ints(a.nprobe)[:1] if "ivf" in stages else []:
        ivf = OutputIndex(rows, None, kind="ivf", storage="fp16", nlist=a.nlist, nprobe=nprobe, rerank=a.rerank,
                          threads=a.threads, progress=True)
        save("ivf_build", build_s=ivf.build_seconds, train_s=ivf.train_seconds, index_bytes=ivf.nbytes())
    for nprobe in ints(a.nprobe) if "ivf" in stages else []:
        ivf.set_params(nprobe=nprobe)
        save("ivf", **measure(ivf, h, ex))
    if "ivf" in stages:
        del ivf
    if a.bias_rows and "bias" in stages:
        sub = rows[:a.bias_rows]
        rng = np.random.default_rng(0)
        spread = float(ex.scores[:, 0].std() + ex.scores[:, :20].std(axis=1).mean())
        bias = (rng.standard_normal(len(sub)) * spread).astype(np.float32)
        exb = exact_topk(sub, bias, h, 20)
        for name, b, metric in (("mips_with_bias", bias, "mips"), ("mips_bias_dropped", None, "mips"),
                                ("cosine", None, "cosine")):
            ix = OutputIndex(sub, b, kind="ivf", metric=metric, storage="fp16", nlist=max(64, a.nlist // 4),
                             nprobe=ints(a.nprobe)[-2], rerank=a.rerank, threads=a.threads)
            r = measure(ix, h, exb, repeats=10)
            save("bias", variant=name, rows=len(sub), bias_std=spread, **r)
            del ix
    if a.hnsw_rows and "hnsw" in stages:
        sub = rows[:a.hnsw_rows]
        exh = exact_topk(sub, None, h, 20)
        hn = OutputIndex(sub, None, kind="hnsw", storage="fp32", m=a.m, ef_construction=a.ef_construction,
                         rerank=a.rerank, threads=a.threads, progress=True)
        save("hnsw_build", rows=len(sub), build_s=hn.build_seconds, index_bytes=hn.nbytes(),
             extrapolated_1m_build_s=hn.build_seconds * a.rows / len(sub) * np.log(a.rows) / np.log(len(sub)))
        for ef in ints(a.ef):
            hn.set_params(ef_search=ef)
            save("hnsw", rows=len(sub), **measure(hn, h, exh))
        with blas_threads(a.threads):
            save("exact_latency_hnsw_rows", rows=len(sub), **exact_latency(sub.astype(np.float32), None, h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
