"""Supertoken and compression-aware BPE vs classic BPE at equal vocabulary sizes.

    RAYON_NUM_THREADS=2 python benchmarks/bench_superbpe.py --sizes 8000,32000,64000 --out /tmp/superbpe
    RAYON_NUM_THREADS=2 python benchmarks/bench_superbpe.py --sizes 32000 \
        --modes classic,t8000,t12000,t16000,t20000,t24000,t28000 --out /tmp/superbpe-sweep  # transition sweep
    python benchmarks/bench_superbpe.py --out /tmp/superbpe --check-ids   # ids: tokbench == tokenizers

Training mix (tokbench corpus assets; --train replaces it): wikitext2-valid, tinyshakespeare,
code-python, code-rust, code-cpp, gsm8k-train, tatoeba, every document split into lines (line ends
kept). From each code
corpus every 10th document (index % 10 == 9) is held out of training and forms the held-out code
set. Evaluation: wikitext2-test, held-out code, gsm8k-test, each encoded by `tokenizers` loading
the written tokenizer.json (tokbench.metrics.load_encoder), metrics from
tokbench.metrics.corpus_metrics: bytes/token, Rényi efficiency (alpha 2.5, over log2 K), and the
plug-in conditional entropies H_1..H_3 (bits/token).

Modes per size V: classic; super with transition t = 0.5 V and t = 0.8 V (`superNN`: t = NN% of
V) or an absolute transition (`tNNNN`, e.g. t24000), max words a token and run pattern from
--max-words / --run-pattern (default 4, super-punct); chunks (TokenAdapt-style sampled chunks of
1..max words words, same run pattern); compress (16 candidates). Each training runs in its own
subprocess under `/usr/bin/time -v` (wall time and peak RSS of the child, reading corpora
included), `--repeats` times; the table gives the medians. The child also reports its own counting + merging seconds (median too).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRAIN = ["wikitext2-valid", "tinyshakespeare", "code-python", "code-rust", "code-cpp", "gsm8k-train", "tatoeba"]
CODE = ["code-python", "code-rust", "code-cpp"]
SPECIALS = ["<|endoftext|>"]


def _docs(name):
    from tokbench.assets import iter_documents

    return list(iter_documents(name))


def train_texts(names=TRAIN) -> list[str]:
    out = []
    for name in names:
        docs = _docs(name)
        if name in CODE:
            docs = [d for i, d in enumerate(docs) if i % 10 != 9]
        for d in docs:
            out.extend(d.splitlines(keepends=True))
    return out


def heldout() -> dict[str, list[str]]:
    code = [d for name in CODE for i, d in enumerate(_docs(name)) if i % 10 == 9]
    return {"wikitext2-test": _docs("wikitext2-test"), "code-heldout": code, "gsm8k-test": _docs("gsm8k-test")}


def child(mode: str, size: int, transition: int | None, out: str, max_words: int, run_pattern: str,
          train: list[str]) -> None:
    import importlib

    from tokbench.bpe import modes

    tb = importlib.import_module("tokbench.bpe.train")
    texts = train_texts(train)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    t0 = time.perf_counter()
    words = tb.new_counter("gpt2", SPECIALS)
    runs = modes.new_run_counter(run_pattern, SPECIALS) if mode in ("super", "chunks") else None
    tb.count_texts(texts, words, num_threads=2, also=[runs] if runs is not None else [])
    t1 = time.perf_counter()
    if mode == "super":
        trained = modes.train_super_counts(words, runs, size, transition, max_words=max_words,
                                           special_tokens=SPECIALS, progress=False)
    elif mode == "chunks":
        trained = modes.train_super_counts(words, runs, size, None, strategy="chunks", max_words=max_words,
                                           special_tokens=SPECIALS, progress=False)
    elif mode == "compress":
        trained = modes.train_compress_counts(words, size, candidates=16, special_tokens=SPECIALS, progress=False)
    else:
        trained = tb.train_counts(words, size, pattern=tb.resolve_pattern("gpt2"), special_tokens=SPECIALS,
                                  progress=False)
    t2 = time.perf_counter()
    trained.save(Path(out) / "tokenizer.json")
    print(json.dumps({"train_bytes": nbytes, "count_s": t1 - t0, "merge_s": t2 - t1,
                      "vocab_size": trained.vocab_size, "meta": trained.meta,
                      "distinct_pretokens": len(words), "distinct_runs": len(runs) if runs is not None else None}))


def _time_v(stderr: str) -> tuple[float, float]:
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr).group(1)
    parts = [float(x) for x in m.split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return wall, rss / 1024


def evaluate(path: Path, held: dict[str, list[str]]) -> dict:
    from tokbench.metrics import corpus_metrics, load_encoder

    enc = load_encoder(str(path))
    out = {}
    for name, docs in held.items():
        row = corpus_metrics(enc, docs, compressors=(), max_order=3, corpus=name)
        h = {r["order"]: r["conditional_entropy"] for r in row["ngrams"]}
        out[name] = {"bytes_per_token": row["bytes_per_token"], "renyi_efficiency": row["renyi_efficiency"],
                     "H1": h.get(1), "H2": h.get(2), "H3": h.get(3), "tokens": row["tokens"]}
    return out


def check_ids(root: Path, held: dict[str, list[str]]) -> None:
    """Every written tokenizer.json: tokbench.bpe.BPE ids == `tokenizers` ids on the held-out sets."""
    from tokenizers import Tokenizer

    from tokbench.bpe import BPE

    for path in sorted(root.glob("*/tokenizer.json")):
        hf = Tokenizer.from_file(str(path))
        ours = BPE.from_file(path)
        n = same = 0
        for docs in held.values():
            a = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
            b = ours.encode_ordinary_batch(docs, num_threads=2)
            n += len(docs)
            same += sum(x == y for x, y in zip(a, b))
        print(f"{path.parent.name}: {same}/{n} documents with identical ids", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8000,32000,64000")
    ap.add_argument("--modes", default="classic,super50,super80,chunks,compress")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-words", type=int, default=4, help="super/chunks: most words a token spans")
    ap.add_argument("--run-pattern", default="super-punct", help="super/chunks: run pattern name or regex")
    ap.add_argument("--train", default=",".join(TRAIN), help="training corpora (comma-separated asset names; "
                    "code corpora lose their held-out documents)")
    ap.add_argument("--out", default="/tmp/bench-superbpe")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "SIZE", "TRANSITION", "OUT"))
    ap.add_argument("--check-ids", action="store_true", help="only compare tokbench and tokenizers ids of the "
                    "tokenizers already written under --out on the held-out sets")
    args = ap.parse_args()
    if args.check_ids:
        check_ids(Path(args.out), heldout())
        return
    if args.child:
        mode, size, t, out = args.child
        child(mode, int(size), int(t) if t != "-" else None, out, args.max_words, args.run_pattern,
              args.train.split(","))
        return
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    held = heldout()
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for m in args.modes.split(","):
            mode, t = spec(m, size)
            tag = "" if mode == "classic" or (args.max_words, args.run_pattern) == (4, "super-punct") else \
                f"-w{args.max_words}-{args.run_pattern}"
            out = root / f"{m}-{size}{tag}"
            out.mkdir(exist_ok=True)
            loads, walls, rsss, secs = [], [], [], []
            for _ in range(args.repeats):
                loads.append(os.getloadavg()[0])
                cmd = ["/usr/bin/time", "-v", "nice", sys.executable, __file__, "--child", mode, str(size),
                       str(t) if t else "-", str(out), "--max-words", str(args.max_words),
                       "--run-pattern", args.run_pattern, "--train", args.train]
                p = subprocess.run(cmd, capture_output=True, text=True,
                                   env={**os.environ, "RAYON_NUM_THREADS": "2"})
                if p.returncode != 0:
                    sys.exit(f"{m} {size} failed:\n{p.stderr[-3000:]}")
                info = json.loads(p.stdout.strip().splitlines()[-1])
                wall, rss = _time_v(p.stderr)
                walls.append(wall)
                rsss.append(rss)
                secs.append(info["count_s"] + info["merge_s"])
            med = statistics.median
            row = {"mode": m, "size": size, "transition": t, "load": round(med(loads), 2),
                   "max_words": None if mode in ("classic", "compress") else args.max_words,
                   "run_pattern": None if mode in ("classic", "compress") else args.run_pattern,
                   "wall_s": round(med(walls), 2), "peak_rss_mb": round(med(rsss), 1),
                   "train_s": round(med(secs), 2), "train_s_all": [round(x, 2) for x in secs], **info,
                   "eval": evaluate(out / "tokenizer.json", held)}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "meta"}), flush=True)
            (root / "results.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)
    print_sweep(rows)


def spec(m: str, size: int) -> tuple[str, int | None]:
    """(training mode, transition) of a --modes entry: superNN (t = NN% of V), tNNNN (t = NNNN), or a mode."""
    if m.startswith("super"):
        return "super", size * int(m[5:]) // 100
    if re.fullmatch(r"t\d+", m):
        return "super", int(m[1:])
    return m, None


def print_sweep(rows) -> None:
    """Each row against classic at the same V: fewer tokens on wikitext2-test, bytes/token elsewhere."""
    classic = {r["size"]: r for r in rows if r["mode"] == "classic"}
    rows = [r for r in rows if r["mode"] != "classic" and r["size"] in classic]
    if not rows:
        return
    print("\n| V | mode | t | max words | run pattern | wikitext2-test tokens | fewer tokens vs classic | "
          "code bytes/token (vs classic) | gsm8k-test bytes/token (vs classic) | count+merge s (classic) | "
          "peak RSS MB (classic) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = classic[r["size"]]
        w, cw = r["eval"]["wikitext2-test"]["tokens"], c["eval"]["wikitext2-test"]["tokens"]
        cells = []
        for name in ("code-heldout", "gsm8k-test"):
            b, cb = r["eval"][name]["bytes_per_token"], c["eval"][name]["bytes_per_token"]
            cells.append(f"{b:.3f} ({100 * (b / cb - 1):+.1f}%)")
        print(f"| {r['size']} | {r['mode']} | {r['transition'] or '-'} | {r.get('max_words') or '-'} | "
              f"{r.get('run_pattern') or '-'} | {w:,} | {100 * (1 - w / cw):.1f}% | {cells[0]} | {cells[1]} | "
              f"{r['train_s']:.1f} ({c['train_s']:.1f}) | {r['peak_rss_mb']:.0f} ({c['peak_rss_mb']:.0f}) |")


def print_table(rows) -> None:
    print("\n| V | mode | t | count+merge s | wall s | peak RSS MB | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['mode']} | {r['transition'] or '-'} | {r['train_s']:.1f} | "
              f"{r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['load']} |")
    for corpus in rows[0]["eval"]:
        print(f"\n{corpus}\n\n| V | mode | bytes/token | Rényi eff. | H1 | H2 | H3 |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            e = r["eval"][corpus]
            print(f"| {r['size']} | {r['mode']} | {e['bytes_per_token']:.3f} | {e['renyi_efficiency']:.4f} | "
                  f"{e['H1']:.3f} | {e['H2']:.3f} | {e['H3']:.3f} |")


if __name__ == "__main__":
    main()
