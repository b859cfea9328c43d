"""Bits/byte evaluation speed: tokbench's window_nats against the same windows done plainly with transformers.

    python benchmarks/bench_eval.py --model smollm2-135m --text wikitext2-test --max-chars 20000 --reps 3

Every variant computes the same quantity on the same windows (512 tokens overlapping by one, float32):
- plain: one window at a time, `model(input_ids).logits`, `cross_entropy(reduction="sum")` (the reference);
- previous: tokbench's code before this change (batches of 4 padded to the longest window, attention mask,
  full log_softmax over the vocabulary, gather);
- tokbench-batch4 / -batch1: `tokbench.eval.bpb.window_nats` (unpadded same-length batches of 4 or 1
  windows, no mask, head on slices);
- bf16 (with --bf16): the plain loop with the model in bfloat16, for the dtype question only (its figure
  differs beyond float32 rounding, so tokbench does not use it on the CPU).
Variants run interleaved, `--reps` rounds; printed: median wall and CPU seconds (user + sys of this
process), the load average before and after each round, and each variant's nats relative to plain.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--text", default="wikitext2-test")
    ap.add_argument("--max-chars", type=int, default=20000)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tokbench
    from tokbench.assets import resolve
    from tokbench.eval import load_eval_text
    from tokbench.eval.bpb import eval_windows, window_nats

    path = str(resolve(a.model, kind="model"))
    text, label = load_eval_text(a.text, a.max_chars)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    windows = eval_windows(len(ids), a.chunk)
    ids_t = torch.tensor(ids)

    def plain(model=lm):
        nats = 0.0
        with torch.inference_mode():
            for s, e in windows:
                w = ids_t[s:e][None]
                logits = model(w).logits[0, :-1].float()
                nats += float(F.cross_entropy(logits, w[0, 1:], reduction="sum"))
        return nats

    def previous(batch=4):
        nats = 0.0
        with torch.inference_mode():
            for b0 in range(0, len(windows), batch):
                group = windows[b0:b0 + batch]
                width = max(e - s for s, e in group)
                inp = torch.zeros((len(group), width), dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for r, (s, e) in enumerate(group):
                    inp[r, : e - s] = ids_t[s:e]
                    mask[r, : e - s] = 1
                logits = lm(input_ids=inp, attention_mask=mask).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                nll = -logp.gather(-1, inp[:, 1:].unsqueeze(-1)).squeeze(-1)
                nats += float(nll[mask[:, 1:].bool()].double().sum())
        return nats

    def fast(batch):
        return lambda: window_nats(lm, ids, windows, batch=batch, device="cpu", progress=False)[0]

    variants = {"plain": plain, "previous": previous, "tokbench-batch4": fast(4), "tokbench-batch1": fast(1)}
    if a.bf16:
        lm16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        variants["bf16-plain"] = lambda: plain(lm16)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    nats: dict[str, float] = {}
    loads = []
    for rep in range(a.reps):
        loads.append(os.getloadavg()[0])
        for name, fn in variants.items():
            c0, t0 = _cpu(), time.perf_counter()
            nats[name] = fn()
            times[name].append((time.perf_counter() - t0, _cpu() - c0))
            print(f"round {rep + 1} {name}: {times[name][-1][0]:.1f} s wall, {times[name][-1][1]:.1f} s CPU",
                  flush=True)
    loads.append(os.getloadavg()[0])
    covered = len(text[len(tok.decode(ids[:1])):].encode("utf-8"))  # for the printout only
    rows = []
    for name in variants:
        wall = statistics.median(w for w, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        rows.append({"variant": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "nats": nats[name], "rel_to_plain": nats[name] / nats["plain"] - 1,
                     "approx_bits_per_byte": nats[name] / math.log(2) / covered})
    base = {r["variant"]: r for r in rows}["plain"]
    print(f"\n{a.model} on {label} ({len(text):,} chars, {len(ids):,} tokens, {len(windows)} windows of "
          f"{a.chunk}); torch {torch.__version__}, {torch.get_num_threads()} threads, tokbench {tokbench.__version__}; "
          f"load average per round: {', '.join(f'{x:.1f}' for x in loads)}")
    print("| variant | median wall s | median CPU s | speed-up vs plain (wall / CPU) | nats rel. to plain |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['wall_s']} | {r['cpu_s']} | {base['wall_s'] / r['wall_s']:.2f}x / "
              f"{base['cpu_s'] / r['cpu_s']:.2f}x | {r['rel_to_plain']:+.2e} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "loads": loads, "rows": rows, "times": times}, f, indent=2)


if __name__ == "__main__":
    main()
