"""ANN decoding over a huge output vocabulary (issue 12, acceptance 5): FAISS indexes against the exact BLAS matmul.

Rows: SmolLM2-135M's 49,152 head rows (tied, bias zero) plus merged-token rows (tokbench.dynamic.ann_data) up
to --rows, stored fp16. Queries: SmolLM2's real final hidden states on WikiText-2 test. For each index setting:
recall@1 / @20 and top-1 agreement against exact inner product with bias, mass outside the 20 returned, latency
at batch 1 and 32 (medians, --threads threads), build seconds, index bytes, RSS; the cosine mode beside it; a
nonzero bias on --bias-rows rows to show what the MIPS transform buys. Results are written to --json after every
stage (temp file + rename), so a killed run keeps what it measured.

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

from tokbench.dynamic.ann import (OutputIndex, blas_threads, exact_latency, exact_topk, measure, recall_at,  # noqa: E402
                                  rss_bytes)
from tokbench.dynamic.ann_data import head_rows, hidden_states  # noqa: E402
from tokbench.outputs import atomic_write  # noqa: E402


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def table(path: Path) -> str:
    """The trade-off table (markdown) of a results file."""
    r = json.loads(Path(path).read_text())
    st = r["stages"]
    ex = next(s for s in st if s["stage"] == "exact_latency")
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
    return "\n".join(lines)


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
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.table))
        return 0
    out: dict = {"command": "python benchmarks/bench_ann.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "threads": a.threads, "faiss": __import__("faiss").__version__, "numpy": np.__version__, "stages": []}

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
    for nprobe in ints(a.nprobe)[:1]:
        ivf = OutputIndex(rows, None, kind="ivf", storage="fp16", nlist=a.nlist, nprobe=nprobe, rerank=a.rerank,
                          threads=a.threads, progress=True)
        save("ivf_build", build_s=ivf.build_seconds, train_s=ivf.train_seconds, index_bytes=ivf.nbytes())
    for nprobe in ints(a.nprobe):
        ivf.set_params(nprobe=nprobe)
        save("ivf", **measure(ivf, h, ex))
    del ivf
    if a.bias_rows:
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
    if a.hnsw_rows:
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
