"""Entropy of the token stream vs tokenizer training scale (issue 15; Erdogan et al. 2026, finding 1).

    nice python benchmarks/bench_entropy_scale.py --out /tmp/entropy-scale          # train + measure
    python benchmarks/bench_entropy_scale.py --out /tmp/entropy-scale --plot reports/entropy-scale.png

Classic byte-level BPE (GPT-2 split, one special `<|endoftext|>`) at a fixed vocabulary (--vocab,
default 16000; min frequency 1 so that the smallest samples fill it too -- with 2, 0.15 MB of
prose stops at 5,461 tokens), trained on nested samples of two mixes of tokbench corpus
assets, and measured on fixed test sets with tokbench.metrics.corpus_metrics (orders 1..5).

Mixes. Every document of a corpus is cut into blocks of whole lines of at least 2,000 bytes
(a GSM8K record is one block); every 10th block of each corpus (index % 10 == 9) is held out and
forms the mix's in-domain test set `heldout`. The other blocks of all corpora of the mix are
shuffled together once (seed 0); the training sample of size s is the shortest prefix of that
order holding s bytes, so every sample contains every smaller one.
  prose: wikitext2-valid, tinyshakespeare, gutenberg, tinystories (English prose only)
  mix:   prose + gsm8k-train + udhr + bible-mark (the largest mix that leaves code and Tatoeba
         unseen: every registered corpus except code-*, tatoeba and the test sets)
Sizes: the full training part, then halved down to --min-mb.

Test sets (never trained on by either mix): wikitext2-test (English prose), the mix's own
`heldout`, code (code-python, code-rust, code-cpp: out of domain for both), gsm8k-test
(English math: out of domain for prose, in domain for mix), tatoeba (the 112 non-English
Tatoeba files: out of domain for prose; other text in languages that udhr and bible-mark
partly cover, for mix). Code and Tatoeba are used whole (5.8 and 3.8 MB) so that the
held-out estimator has more text to fit on.

Estimators (reports/metrics.md): plug-in H_k = Ĥ(X_1..X_k) - Ĥ(X_1..X_{k-1}) over the whole
test set (k-1 tokens of context, documents not crossed); held-out = cross-entropy of an
interpolated Witten-Bell k-gram model fitted on the test set's train part and scored on its
held-out part (the corpus_metrics split). Per byte: plug-in H_k * tokens / bytes of the test set;
held-out bits summed over the held-out tokens / the bytes those tokens stand for.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np

MIXES = {
    "prose": ["wikitext2-valid", "tinyshakespeare", "gutenberg", "tinystories"],
    "mix": ["wikitext2-valid", "tinyshakespeare", "gutenberg", "tinystories", "gsm8k-train", "udhr", "bible-mark"],
}
CODE = ["code-python", "code-rust", "code-cpp"]
SPECIALS = ["<|endoftext|>"]
BLOCK_BYTES = 2000
ORDERS = 5


def _docs(name: str) -> list[str]:
    from tokbench.assets import iter_documents

    return list(iter_documents(name))


def group_lines(lines, n_bytes: int) -> list[str]:
    """Consecutive lines joined into blocks of at least n_bytes bytes (the last one may be shorter)."""
    out, cur, size = [], [], 0
    for line in lines:
        cur.append(line)
        size += len(line.encode("utf-8"))
        if size >= n_bytes:
            out.append("".join(cur))
            cur, size = [], 0
    if cur:
        out.append("".join(cur))
    return out


def blocks(doc: str) -> list[str]:
    """Whole lines of doc grouped into blocks of at least BLOCK_BYTES bytes (the last one may be shorter)."""
    return group_lines(doc.splitlines(keepends=True), BLOCK_BYTES)


def split_mix(corpora: list[str]) -> tuple[list[str], list[str]]:
    """(training blocks in sampling order, held-out blocks)."""
    train, held = [], []
    for name in corpora:
        bl = [b for d in _docs(name) for b in blocks(d)]
        train += [b for i, b in enumerate(bl) if i % 10 != 9]
        held += [b for i, b in enumerate(bl) if i % 10 == 9]
    random.Random(0).shuffle(train)
    return train, held


def prefix(train: list[str], nbytes: int) -> list[str]:
    out, size = [], 0
    for b in train:
        if size >= nbytes:
            break
        out.append(b)
        size += len(b.encode("utf-8"))
    return out


def test_sets() -> dict[str, list[str]]:
    return {
        "wikitext2-test": _docs("wikitext2-test"),
        "code": [d for name in CODE for d in _docs(name)],
        "gsm8k-test": _docs("gsm8k-test"),
        "tatoeba": _docs("tatoeba"),
    }


def train(texts: list[str], vocab: int):
    tb = importlib.import_module("tokbench.bpe.train")  # the module (tokbench.bpe.train is also a function)
    counter = tb.new_counter("gpt2", SPECIALS)
    tb.count_texts(texts, counter, num_threads=2)
    return tb.train_counts(counter, vocab, pattern=tb.resolve_pattern("gpt2"), special_tokens=SPECIALS,
                           min_frequency=1, progress=False)


def measure(encoder, docs: list[str], name: str) -> dict:
    """tokbench.metrics.flat_rows' row (H{k}_plugin, H{k}_mm, H{k}_heldout, singleton_ctx{k}, ...)
    plus the bytes of the held-out tokens and every entropy per byte."""
    from tokbench.metrics import flat_rows
    from tokbench.metrics.core import corpus_metrics, encode_documents, heldout_cuts, token_byte_lengths

    enc = encode_documents(encoder, docs)
    row = corpus_metrics(encoder, docs, enc, compressors=(), max_order=ORDERS, corpus=name)
    out = flat_rows({"results": [row]})[0]
    cuts, _ = heldout_cuts(enc)
    held = np.zeros(enc.n_tokens, dtype=bool)
    for c, e in zip(cuts.astype(np.int64), enc.offsets[1:].astype(np.int64)):
        held[c:e] = True
    out["heldout_bytes"] = int(token_byte_lengths(encoder)[enc.tokens[held]].sum())
    out["heldout_split"] = row["heldout_split"]
    for k in range(1, ORDERS + 1):
        out[f"H{k}_plugin_per_byte"] = out[f"H{k}_plugin"] * enc.n_tokens / enc.n_bytes
        out[f"H{k}_heldout_per_byte"] = out[f"H{k}_heldout"] * out["heldout_tokens"] / out["heldout_bytes"]
    return out


def run(args) -> None:
    from tokbench.metrics import load_encoder

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    tests = test_sets()
    rows = []
    for mix in args.mixes.split(","):
        tr, held = split_mix(MIXES[mix])
        total = sum(len(b.encode("utf-8")) for b in tr)
        sets = {**tests, "heldout": held}
        sizes = []
        s = total
        while s >= args.min_mb * 1e6 * 0.99:
            sizes.append(s)
            s //= 2
        print(f"{mix}: {len(tr)} training blocks, {total / 1e6:.2f} MB; held out {len(held)} blocks, "
              f"{sum(len(b.encode()) for b in held) / 1e6:.2f} MB", flush=True)
        for size in sorted(sizes):
            texts = prefix(tr, size)
            nbytes = sum(len(t.encode("utf-8")) for t in texts)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            trained = train(texts, args.vocab)
            t_train = time.perf_counter() - t0
            path = root / f"{mix}-{nbytes}" / "tokenizer.json"
            path.parent.mkdir(exist_ok=True)
            trained.save(path)
            encoder = load_encoder(str(path))
            row = {"mix": mix, "train_bytes": nbytes, "vocab_size": trained.vocab_size, "train_s": round(t_train, 2),
                   "load": round(load, 2), "eval": {}}
            for name, docs in sets.items():
                row["eval"][name] = measure(encoder, docs, name)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "eval"}), flush=True)
            (root / "results.json").write_text(json.dumps(rows, indent=1))
    print_tables(rows)
    print_summary(rows)
    print_summary(rows, 0.5, 5.0)


def print_tables(rows) -> None:
    for mix in dict.fromkeys(r["mix"] for r in rows):
        rs = [r for r in rows if r["mix"] == mix]
        for name in rs[0]["eval"]:
            e0 = rs[0]["eval"][name]
            print(f"\n{mix} -> {name} ({e0['bytes'] / 1e6:.2f} MB; held-out split: {e0['heldout_split']})\n")
            print("| train MB | V | tokens | bytes/tok | singleton 4-token contexts | "
                  + " | ".join(f"H{k}" for k in range(1, ORDERS + 1)) + " | "
                  + " | ".join(f"H{k} ho" for k in range(1, ORDERS + 1)) + " | H1 bits/B | "
                  + " | ".join(f"H{k} ho bits/B" for k in range(1, ORDERS + 1)) + " |")
            print("|" + "---|" * (5 + 3 * ORDERS))
            for r in rs:
                e = r["eval"][name]
                cells = [f"{r['train_bytes'] / 1e6:.2f}", str(r["vocab_size"]), f"{e['tokens']:,}",
                         f"{e['bytes_per_token']:.3f}", f"{e[f'singleton_ctx{ORDERS}']:.2f}"]
                cells += [f"{e[f'H{k}_plugin']:.3f}" for k in range(1, ORDERS + 1)]
                cells += [f"{e[f'H{k}_heldout']:.3f}" for k in range(1, ORDERS + 1)]
                cells += [f"{e['H1_plugin_per_byte']:.3f}"]
                cells += [f"{e[f'H{k}_heldout_per_byte']:.3f}" for k in range(1, ORDERS + 1)]
                print("| " + " | ".join(cells) + " |")


def best_heldout_per_byte(e: dict) -> tuple[float, int]:
    """(bits/byte, order) of the order whose held-out model scores best (the tightest upper bound)."""
    return min((e[f"H{k}_heldout_per_byte"], k) for k in range(1, ORDERS + 1))


def print_summary(rows, lo_mb: float = 0.0, hi_mb: float = float("inf")) -> None:
    """From the smallest sample in [lo_mb, hi_mb] that fills the vocabulary to the largest one in it."""
    rows = [r for r in rows if lo_mb <= r["train_bytes"] / 1e6 <= hi_mb]
    print("\n| mix | test set | train MB | bytes/token | H1 | H3 plug-in | H5 plug-in | H3 held-out | "
          "H5 held-out | best held-out bits/byte (order) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mix in dict.fromkeys(r["mix"] for r in rows):
        rs = [r for r in rows if r["mix"] == mix]
        full = [r for r in rs if r["vocab_size"] == max(x["vocab_size"] for x in rs)]
        a, b = full[0], full[-1]
        for name in a["eval"]:
            ea, eb = a["eval"][name], b["eval"][name]

            def ch(key):
                return f"{ea[key]:.3f} -> {eb[key]:.3f}"

            pa, pb = best_heldout_per_byte(ea), best_heldout_per_byte(eb)
            bpt = 100 * (eb["bytes_per_token"] / ea["bytes_per_token"] - 1)
            print(f"| {mix} | {name} | {a['train_bytes'] / 1e6:.2f} -> {b['train_bytes'] / 1e6:.2f} | "
                  f"{ch('bytes_per_token')} ({bpt:+.1f}%) | {ch('H1_plugin')} | {ch('H3_plugin')} | "
                  f"{ch('H5_plugin')} | "
                  f"{ch('H3_heldout')} | {ch('H5_heldout')} | {pa[0]:.3f} (H{pa[1]}) -> {pb[0]:.3f} (H{pb[1]}) "
                  f"({100 * (pb[0] / pa[0] - 1):+.1f}%) |")


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["heldout", "wikitext2-test", "gsm8k-test", "code", "tatoeba"]
    fig, axes = plt.subplots(4, len(names), figsize=(4 * len(names), 13), sharex=True)
    styles = {"prose": "-", "mix": "--"}
    colors = plt.cm.viridis(np.linspace(0, 0.85, ORDERS))
    for j, name in enumerate(names):
        for mix, ls in styles.items():
            rs = [r for r in rows if r["mix"] == mix]
            if not rs:
                continue
            x = [r["train_bytes"] / 1e6 for r in rs]
            ev = [r["eval"][name] for r in rs]
            axes[0, j].plot(x, [e["H1_plugin"] for e in ev], ls, color=colors[0], marker="o", label=f"{mix}")
            for k in range(2, ORDERS + 1):
                axes[1, j].plot(x, [e[f"H{k}_plugin"] for e in ev], ls, color=colors[k - 1], marker="x",
                                label=f"{mix}: H{k}")
                axes[2, j].plot(x, [e[f"H{k}_heldout"] for e in ev], ls, color=colors[k - 1], marker="o",
                                label=f"{mix}: H{k}")
            axes[3, j].plot(x, [e["H1_plugin_per_byte"] for e in ev], ls, color="C0", marker="s", label=f"{mix}: H1")
            axes[3, j].plot(x, [best_heldout_per_byte(e)[0] for e in ev], ls, color="C3", marker="o",
                            label=f"{mix}: best held-out H_k")
        axes[0, j].set_title(name + (" (of each mix)" if name == "heldout" else ""))
        axes[3, j].set_xlabel("tokenizer training data (MB)")
        for i in range(4):
            axes[i, j].set_xscale("log")
            axes[i, j].grid(alpha=0.3)
    axes[0, 0].set_ylabel("H1 bits/token")
    axes[1, 0].set_ylabel("H2..H5 plug-in, bits/token")
    axes[2, 0].set_ylabel("H2..H5 held-out (Witten-Bell), bits/token")
    axes[3, 0].set_ylabel("bits/byte")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=6, ncol=2)
    axes[2, 0].legend(fontsize=6, ncol=2)
    axes[3, 0].legend(fontsize=7)
    v = max(r["vocab_size"] for r in rows)
    fig.suptitle(f"Classic BPE, V = {v}: token-stream entropies of fixed test sets vs tokenizer training scale "
                 "(solid: English prose mix, dashed: large mix)")
    fig.tight_layout()
    fig.savefig(path, dpi=65)


def size_check(root: Path, rows) -> None:
    """Plug-in vs held-out on the first 25/50/100% (lines) of wikitext2-test, for the smallest
    prose sample that fills the vocabulary and the largest: how much the test stream's length
    alone moves each estimate, next to what the tokenizer moves."""
    from tokbench.metrics import load_encoder
    from tokbench.metrics.core import corpus_metrics

    lines = _docs("wikitext2-test")[0].splitlines(keepends=True)
    rs = [r for r in rows if r["mix"] == "prose" and r["vocab_size"] == max(x["vocab_size"] for x in rows)]
    print("\n| prose sample MB | wikitext2-test part | tokens | " + " | ".join(f"H{k}" for k in range(1, ORDERS + 1))
          + " | " + " | ".join(f"H{k} ho" for k in range(1, ORDERS + 1)) + " |")
    print("|" + "---|" * (3 + 2 * ORDERS))
    for r in (rs[0], rs[-1]):
        enc = load_encoder(str(root / f"prose-{r['train_bytes']}" / "tokenizer.json"))
        for frac in (0.25, 0.5, 1.0):
            docs = ["".join(lines[: int(len(lines) * frac)])]
            m = corpus_metrics(enc, docs, compressors=(), max_order=ORDERS, corpus="wikitext2-test")
            g = m["ngrams"]
            print(f"| {r['train_bytes'] / 1e6:.2f} | first {int(frac * 100)}% | {m['tokens']:,} | "
                  + " | ".join(f"{x['conditional_entropy']:.3f}" for x in g) + " | "
                  + " | ".join(f"{x['heldout_bits_per_token']:.3f}" for x in g) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--mixes", default="prose,mix")
    ap.add_argument("--min-mb", type=float, default=0.15)
    ap.add_argument("--out", default="/tmp/bench-entropy-scale")
    ap.add_argument("--plot", help="only draw the figure from --out/results.json into this PNG (and print "
                    "the tables and the test-length check)")
    args = ap.parse_args()
    if args.plot:
        rows = json.loads((Path(args.out) / "results.json").read_text())
        plot(rows, args.plot)
        print_tables(rows)
        print_summary(rows)
        print_summary(rows, 0.5, 5.0)
        size_check(Path(args.out), rows)
        return
    run(args)


if __name__ == "__main__":
    main()
