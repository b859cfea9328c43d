"""Tune the training-free embedding for dynamic tokens on WikiText-2 *valid* (never on test): prefill fidelity
(tokbench.dynamic.fidelity) of SmolLM2-135M at one budget, for mean, position_mean, omp and a grid of
norm_mean variants (weights ratio**i over the constituents, norm scale).

    python benchmarks/tune_dynamic_embed.py [--corpus wikitext2-valid] [--modes pretokens,pretokens-unicode]
        [--windows 64] [--merge-batch 32] [--budget 50%] [--ratios 0.5,1,2,100] [--scales 0.85,1,1.2]
        [--centred 0,1] [--baselines mean,position_mean,omp] [--cache DIR] [--json OUT.json]

Prints one table per mode: method, Δ bits/byte of the continuation against the unmerged model, and its
paired bootstrap 95 % interval over windows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def grid(ratios, scales, centred=(False,), baselines=("mean", "position_mean", "omp")):
    from tokbench.embeddings import geometric

    out = [(b, b, {}) for b in baselines]
    for c in centred:
        for r in ratios:
            for s in scales:
                out.append((f"norm_mean(ratio={r:g},scale={s:g}{',centred' if c else ''})", "norm_mean",
                            {"weights": geometric(r), "scale": s, "centred": c}))
    return out


def main(argv=None) -> int:
    from tokbench.dynamic.fidelity import fidelity_table, parse_budgets, prefill_fidelity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokenizer", default="smollm2")
    ap.add_argument("--corpus", default="wikitext2-valid")
    ap.add_argument("--modes", default="pretokens,pretokens-unicode")
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--merge-batch", type=int, default=32)
    ap.add_argument("--budget", default="50%")
    ap.add_argument("--ratios", default="0.5,1,2,100")
    ap.add_argument("--scales", default="0.85,1,1.2")
    ap.add_argument("--centred", default="0", help="comma-separated 0/1: rescale the rows as they are / centred")
    ap.add_argument("--baselines", default="mean,position_mean,omp")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="folder for the unmerged run's bits (reused across calls)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if "test" in a.corpus:
        print("tune on a validation corpus, never on test", file=sys.stderr)
        return 2
    methods = grid([float(x) for x in a.ratios.split(",")], [float(x) for x in a.scales.split(",")],
                   [x.strip() == "1" for x in a.centred.split(",")], [b for b in a.baselines.split(",") if b])
    out = {}
    for mode in a.modes.split(","):
        load0 = os.getloadavg()
        r = prefill_fidelity(a.model, a.tokenizer, a.corpus, n_windows=a.windows, budgets=[0] + parse_budgets(a.budget),
                             methods=methods, mode=mode, merge_batch=a.merge_batch, threads=a.threads,
                             teacher_cache=a.cache, progress=True)
        r["load_before"], r["load_after"] = load0, os.getloadavg()
        out[mode] = r
        print(f"\n{mode}: {a.windows} windows of {a.corpus}, merge batches of {a.merge_batch}; word level "
              f"{r['word_level_pct_shorter']:.2f}% shorter (word mode's {r['word_mode_level_pct_shorter']:.2f}%); "
              f"load {load0[0]:.2f} -> {r['load_after'][0]:.2f}")
        print(fidelity_table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
