"""Refinement benchmark: a transplant's new rows before and after `refine_rows`, on text the refinement never saw.

    nice python benchmarks/bench_refine.py [--base smollm2-135m] [--target gpt2] [--method omp]
        [--donor tbd-gpt2-d128 | --donor none] [--seconds 300] [--snapshots 60,120]
        [--refine-text wikitext2-valid,gsm8k-train,code-python] [--refine-chars 400000]
        [--loss ntp] [--lr 5e-3] [--warmup 0] [--precision auto|fp32|bf16] [--rows touched|all] [--head-steps 0] [--no-shared]
        [--per-domain] [--held-out 0.1]
        [--threads 2] [--work /tmp/tb-refine] [--evals english,gsm8k,code]

1. transplant BASE onto TARGET with METHOD (no refinement; the folder is kept in --work and reused);
2. the refinement text: documents of the --refine-text corpora taken in turn (round robin, so its held-out
   tenth mixes them too), at most --refine-chars characters in all; with --per-domain, one text per corpus
   (`corpus:chars` sets its share, otherwise --refine-chars is split evenly), each with its own held-out slice
   and never-worse check;
3. `refine_rows(BASE, init, new ids, text, seconds=SECONDS, snapshots=...)`: the best rows at each snapshot
   and at the end are written into copies of the init folder;
4. bits/byte of the base and of every copy on the held-out texts: the first 120,000 characters of
   wikitext2-test (English, as in reports/transplant.md), 30,000 of gsm8k-test, 30,000 of code-cpp (only the
   English text at the snapshots; all three at 0 and at the end).
Prints one JSON object (also written to --work/results-*.json): ratios per point, the refinement record
(held-out curve), peak RSS of the process after the refinement, load averages.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from tokbench.embeddings.refine import PRECISIONS

EVALS = {"english": ("wikitext2-test", 120_000), "gsm8k": ("gsm8k-test", 30_000), "code": ("code-cpp", 30_000)}


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mixed_text(corpora: list[str], max_chars: int) -> str:
    from tokbench.assets import iter_documents
    from tokbench.text import clean

    its = [iter(iter_documents(c)) for c in corpora]
    parts, n = [], 0
    while its and n < max_chars:
        for it in list(its):
            doc = next(it, None)
            if doc is None:
                its.remove(it)
                continue
            doc = clean(doc).strip()
            if doc:
                parts.append(doc)
                n += len(doc) + 2
    return "\n\n".join(parts)[:max_chars]


def write_rows(init: Path, dest: Path, ids, rows, head_rows) -> None:
    """A copy of the model folder `init` with the rows of `ids` replaced."""
    from tokbench.vocab.model_io import open_model_folder, write_model_folder

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    model = open_model_folder(init)
    emb = model.read_embedding().copy()
    emb[ids] = rows
    head = None
    if not model.tied:
        head = model.read_head().copy()
        head[ids] = head_rows
    write_model_folder(model, dest, emb, head, {}, progress=False)
    for f in init.iterdir():
        if f.is_file() and not (dest / f.name).exists():
            shutil.copyfile(f, dest / f.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--target", default="gpt2")
    ap.add_argument("--method", default="omp")
    ap.add_argument("--donor", default="tbd-gpt2-d128", help="'none' for donor-free")
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--snapshots", default="60,120")
    ap.add_argument("--refine-text", default="wikitext2-valid,gsm8k-train,code-python")
    ap.add_argument("--refine-chars", type=int, default=400_000)
    ap.add_argument("--loss", default="ntp")
    ap.add_argument("--lr", type=float, default=None, help="default: refine_rows' default")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--precision", default="auto", choices=PRECISIONS)
    ap.add_argument("--rows", default="touched", choices=["touched", "all"])
    ap.add_argument("--head-steps", type=int, default=0)
    ap.add_argument("--shared", action="store_true", help="the default of refine_rows; kept for old commands")
    ap.add_argument("--no-shared", action="store_true", help="per-row deltas only (the recipe before 2026-12-02)")
    ap.add_argument("--per-domain", action="store_true")
    ap.add_argument("--held-out", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evals", default="english,gsm8k,code")
    ap.add_argument("--work", default="/tmp/tb-refine")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from tokbench.assets import home, resolve
    from tokbench.embeddings import refine_rows
    from tokbench.eval import bits_per_byte, load_eval_text
    from tokbench.transplant import transplant
    from tokbench.vocab import align, load_vocabulary

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    donor = None if args.donor in ("none", "") else args.donor
    name = f"{args.base}-{args.target}-{args.method}-{'donor' if donor else 'nodonor'}"
    tag = args.tag or f"{name}-{args.loss}-{int(args.seconds)}s"
    cache = home() / "cache"
    base_dir = Path(resolve(args.base, kind="model"))
    init = work / f"init-{name}"
    out: dict = {"tag": tag, "args": vars(args), "load_avg_start": _load_avg(), "torch": torch.__version__}
    if not (init / "transplant_report.json").is_file():
        t0 = time.perf_counter()
        transplant(base_dir, args.target, init, donor=donor, method=args.method, overwrite=True, cache_dir=cache,
                   progress=False)
        out["transplant_seconds"] = round(time.perf_counter() - t0, 2)
    al = align(load_vocabulary(base_dir), load_vocabulary(init))
    new_ids = sorted(al.new_only)
    corpora = [c.split(":")[0] for c in args.refine_text.split(",")]
    if args.per_domain:
        share = [int(c.split(":")[1]) if ":" in c else args.refine_chars // len(corpora)
                 for c in args.refine_text.split(",")]
        text = {c: mixed_text([c], n) for c, n in zip(corpora, share)}
    else:
        text = mixed_text(corpora, args.refine_chars)
    snaps = [float(x) for x in args.snapshots.split(",") if x]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    opts = {} if args.lr is None else {"lr": args.lr}
    res = refine_rows(base_dir, init, new_ids, text, seconds=args.seconds, steps=args.steps, warmup=args.warmup,
                      batch=args.batch, window=args.window, loss=args.loss, rows=args.rows, head_steps=args.head_steps,
                      shared=not args.no_shared, held_out=args.held_out, precision=args.precision,
                      eval_every=args.eval_every, snapshots=snaps, progress=False, **opts)
    out["peak_rss_mb_after_refine"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["peak_rss_mb_before_refine"] = round(rss0 / 1024, 1)
    out["load_avg_after_refine"] = _load_avg()
    rec = res.record
    out["refine"] = rec
    print(json.dumps({k: rec[k] for k in ("steps", "seconds", "setup_seconds", "teacher_seconds", "stopped",
                                          "best_step", "held_out", "domains", "curve")}), flush=True)
    points = {0.0: None, **{s: res.snapshots[s] for s in snaps}, float(args.seconds): (res.rows, res.head_rows)}
    ids = np.array(new_ids, dtype=np.int64)
    kinds = [k for k in args.evals.split(",") if k]
    texts = {k: load_eval_text(*EVALS[k]) for k in kinds}
    out["base_bpb"] = {k: bits_per_byte(base_dir, t, cache_dir=cache / "eval", progress=False)["bits_per_byte"]
                       for k, (t, _) in texts.items()}
    out["points"] = []
    for sec, rows in points.items():
        folder = init if rows is None else work / f"refined-{tag}-{int(sec)}"
        if rows is not None:
            write_rows(init, folder, ids, rows[0], rows[1])
        full = sec in (0.0, float(args.seconds))
        point = {"seconds": sec, "load_avg": _load_avg()}
        for k, (t, _) in texts.items():
            if k == "english" or full:
                bpb = bits_per_byte(folder, t, cache_dir=cache / "eval" if rows is None else None,
                                    progress=False)["bits_per_byte"]
                point[k] = {"bpb": bpb, "ratio": bpb / out["base_bpb"][k]}
        out["points"].append(point)
        print(json.dumps(point), flush=True)
        if rows is not None:
            shutil.rmtree(folder, ignore_errors=True)
    out["load_avg_end"] = _load_avg()
    (work / f"results-{tag}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({"tag": tag, "points": out["points"], "peak_rss_mb": out["peak_rss_mb_after_refine"]}))


if __name__ == "__main__":
    sys.exit(main())
