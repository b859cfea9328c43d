"""Train benchmark: 32,000-token byte-level BPE with the GPT-2 split, tokbench vs HF tokenizers.

    RAYON_NUM_THREADS=2 python benchmarks/bench_train.py [--vocab-size 32000] [--threads 2]

Corpora mix (tokbench corpus assets): wikitext2-test, wikitext2-valid, tinyshakespeare,
code-python, code-rust, code-cpp (JSONL texts), gsm8k-train, tatoeba. Both trainers get the
same texts: every document split into lines (line ends kept). Each trainer runs in its own
subprocess (RAYON_NUM_THREADS=2, tokbench num_threads=2); the parent reads the child's wall
time and peak RSS from os.wait4, and the child reports its own training time (reading the
corpora excluded) and bytes/token of its result on WikiText-2 test. Bars: tokbench >= 3x faster,
peak RSS no higher, bytes/token within 1% of HF's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CORPORA = ["wikitext2-test", "wikitext2-valid", "tinyshakespeare", "code-python", "code-rust", "code-cpp",
           "gsm8k-train", "tatoeba"]
SPECIALS = ["<|endoftext|>"]


def texts() -> list[str]:
    from tokbench.assets import iter_documents

    out = []
    for name in CORPORA:
        for doc in iter_documents(name):
            out.extend(doc.splitlines(keepends=True))
    return out


def wikitext_test() -> list[str]:
    from tokbench.assets import iter_documents

    return [l for d in iter_documents("wikitext2-test") for l in d.splitlines(keepends=True)]


def child(which: str, vocab_size: int, threads: int, out: str) -> None:
    data = texts()
    nbytes = sum(len(t.encode("utf-8")) for t in data)
    if which == "tokbench":
        from tokbench.bpe.encoding import HF_BYTELEVEL_REGEX  # noqa: F401  (import cost paid here)
        import importlib

        tb = importlib.import_module("tokbench.bpe.train")

        t0 = time.perf_counter()
        counter = tb.new_counter("gpt2", SPECIALS)
        tb.count_texts(data, counter, num_threads=threads)
        trained = tb.train_counts(counter, vocab_size, pattern=tb.resolve_pattern("gpt2"),
                                  special_tokens=SPECIALS, min_frequency=2, progress=False)
        secs = time.perf_counter() - t0
        path = trained.save(os.path.join(out, "tokbench.json"))
        import tokbench

        version = getattr(tokbench, "__version__", "dev")
        enc = trained.encoder()
        ids = enc.encode_ordinary_batch(wikitext_test(), num_threads=threads)
    else:
        import tokenizers
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, decoders, trainers
        from tokbench.vocab.patterns import PATTERNS

        t0 = time.perf_counter()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PATTERNS["gpt2"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(data, trainer=trainer, length=len(data))
        secs = time.perf_counter() - t0
        path = os.path.join(out, "hf.json")
        tok.save(path)
        version = tokenizers.__version__
        ids = [e.ids for e in tok.encode_batch(wikitext_test(), add_special_tokens=False)]
    wt = wikitext_test()
    bpt = sum(len(t.encode("utf-8")) for t in wt) / sum(len(i) for i in ids)
    with open(os.path.join(out, f"{which}.result.json"), "w") as f:
        json.dump({"train_s": secs, "version": version, "bytes_per_token": bpt, "corpus_bytes": nbytes,
                   "vocab": vocab_size, "path": str(path)}, f)


def run(which: str, args, out: str) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, __file__, "--child", which, "--vocab-size", str(args.vocab_size),
                          "--threads", str(args.threads), "--out", out], env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{which} child failed ({status})")
    with open(os.path.join(out, f"{which}.result.json")) as f:
        r = json.load(f)
    r.update(wall_s=wall, peak_rss_mb=ru.ru_maxrss / 1024)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child")
    ap.add_argument("--out")
    ap.add_argument("--order", default="tokbench,hf")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.vocab_size, args.threads, args.out)
        return
    with tempfile.TemporaryDirectory() as out:
        res = {}
        for which in args.order.split(","):
            load = os.getloadavg()
            res[which] = run(which, args, out)
            res[which]["load_before"] = load
            res[which]["load_after"] = os.getloadavg()
    tb, hf = res["tokbench"], res["hf"]
    print(f"corpus: {tb['corpus_bytes'] / 1e6:.2f} MB ({', '.join(CORPORA)}), vocab {args.vocab_size}, "
          f"threads {args.threads}, cores {os.cpu_count()}")
    print(f"tokbench {tb['version']}  |  tokenizers {hf['version']}  |  python {sys.version.split()[0]}")
    print(f"{'':10} {'train s':>8} {'child wall s':>12} {'peak RSS MB':>12} {'bytes/token':>12} {'load 1m before/after':>22}")
    for k, r in (("tokbench", tb), ("hf", hf)):
        print(f"{k:10} {r['train_s']:8.2f} {r['wall_s']:12.2f} {r['peak_rss_mb']:12.1f} {r['bytes_per_token']:12.4f} "
              f"{r['load_before'][0]:10.2f}/{r['load_after'][0]:.2f}")
    speed = hf["train_s"] / tb["train_s"]
    mem = tb["peak_rss_mb"] / hf["peak_rss_mb"]
    bpt = tb["bytes_per_token"] / hf["bytes_per_token"] - 1
    print(f"speed-up (train s) {speed:.2f}x [bar >= 3x: {'PASS' if speed >= 3 else 'FAIL'}]  "
          f"peak RSS ratio {mem:.2f} [bar <= 1: {'PASS' if mem <= 1 else 'FAIL'}]  "
          f"bytes/token diff {bpt:+.2%} [bar within 1%: {'PASS' if abs(bpt) <= 0.01 else 'FAIL'}]")


if __name__ == "__main__":
    main()
