"""LZ-aware BPE (tokbench.bpe.lz) vs classic and compression-aware (unigram code length) BPE: compressed bits
per byte of the token stream on held-out English, code and math.

    nice python benchmarks/bench_lz_bpe.py --out /tmp/lz-bpe            # all rows below
    python benchmarks/bench_lz_bpe.py --out /tmp/lz-bpe --table         # the tables again from results.json
    python benchmarks/bench_lz_bpe.py --out /tmp/lz-bpe --diagnose      # in-sample and varint tables
    nice python benchmarks/bench_lz_bpe.py --out /tmp/lz-bpe-wide --sizes 1024 --modes classic,lz-exact \
        --lz-candidates 64 --exact-every 4                                # a wider shortlist at 1024

Training: bench_superbpe's mix (wikitext2-valid, tinyshakespeare, code-python/-rust/-cpp minus every 10th
document, gsm8k-train, tatoeba; 14.2 MB), GPT-2 split pattern, special <|endoftext|>. Every mode counts pairs
over the whole mix. The LZ sample (the stream whose compressed size scores the merges): the mix's text cut into
4 KiB slices at line ends and every n-th slice kept, n chosen so the kept slices total --sample bytes, so that
every corpus of the mix is in it and each slice keeps its local repetition.

Rows (per vocabulary size V): classic (Rust trainer), compress (unigram code length, 16 candidates), lz-exact
(--lz-candidates 16, one gzip-6 compression of the sample per candidate per merge, --exact-sample bytes; only
at V <= --exact-max; --exact-every k > 1 makes it the batched rule at level 6), lz (the proxy: --lz-candidates,
--every merges per scoring round, gzip level --proxy-level, --sample bytes). --diagnose: the gzip size of
each tokenizer's stream on the lz-exact sample itself (in-sample), and held-out gzip bits/byte with a second
serialisation (ids renumbered by frequency in the proxy sample, LEB128 varints). Each training runs in a child process under /usr/bin/time -v (wall time and peak RSS), once.

Evaluation (held-out): wikitext2-test, the held-out code documents, gsm8k-test; each set's documents are encoded
by `tokenizers` loading the written tokenizer.json (tokbench.bpe's ids are compared on every document), the ids
concatenated and serialised as fixed-width little-endian ids of id_width(V) bytes (2 bytes for 257..65536
tokens; tokbench.metrics.core.serialise), and compressed with gzip -6, zstd -3 and lzma preset 1
(tokbench.metrics.core.compress_size). bits/byte = 8 * compressed bytes / UTF-8 bytes of the set; "raw" is the
same compressor on the UTF-8 bytes themselves (the byte-level baseline). Gain over raw = 1 - tokens/raw.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_superbpe as bs  # noqa: E402  (the same training mix and held-out sets)

COMPRESSORS = ("gzip", "zstd", "lzma")
SLICE = 4096


def lz_sample(texts: list[str], n_bytes: int) -> str:
    """Every n-th 4 KiB slice (cut at line ends) of the training text, n chosen to keep ~n_bytes."""
    from bench_entropy_scale import group_lines

    slices = group_lines(texts, SLICE)
    step = max(1, len(slices) * SLICE // max(1, n_bytes))
    return "".join(slices[step // 2::step])


def child(mode: str, size: int, out: str, args) -> None:
    import importlib
    import resource

    from tokbench.bpe import lz, modes

    tb = importlib.import_module("tokbench.bpe.train")
    texts = bs.train_texts()
    t0 = time.perf_counter()
    words = tb.new_counter("gpt2", bs.SPECIALS)
    tb.count_texts(texts, words, num_threads=2)
    t1 = time.perf_counter()
    if mode == "classic":
        trained = tb.train_counts(words, size, pattern=tb.resolve_pattern("gpt2"), special_tokens=bs.SPECIALS,
                                  progress=False)
    elif mode == "compress":
        trained = modes.train_compress_counts(words, size, candidates=16, special_tokens=bs.SPECIALS, progress=False)
    else:
        exact = mode == "lz-exact"
        sample = lz_sample(texts, args.exact_sample if exact else args.sample)
        trained = lz.train_lz_counts(words, sample, size, candidates=args.lz_candidates,
                                     every=args.exact_every if exact else args.every,
                                     lz_level=6 if exact else args.proxy_level, special_tokens=bs.SPECIALS,
                                     progress=False)
    t2 = time.perf_counter()
    trained.save(Path(out) / "tokenizer.json")
    merges = max(1, len(trained.merges))
    print(json.dumps({"count_s": t1 - t0, "merge_s": t2 - t1, "s_per_merge": (t2 - t1) / merges,
                      "vocab_size": trained.vocab_size, "meta": trained.meta,
                      "peak_rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def evaluate(path: Path, held: dict[str, list[str]]) -> dict:
    from tokenizers import Tokenizer

    from tokbench.bpe import BPE
    from tokbench.metrics.core import compress_size, serialise

    hf = Tokenizer.from_file(str(path))
    ours = BPE.from_file(path)
    k = hf.get_vocab_size()
    out = {}
    for name, docs in held.items():
        ids = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
        same = sum(a == b for a, b in zip(ids, ours.encode_ordinary_batch(docs, num_threads=2)))
        stream = np.fromiter((i for d in ids for i in d), dtype=np.uint32)
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        data = serialise(stream, k)
        out[name] = {"tokens": int(stream.size), "bytes": n_bytes, "bytes_per_token": n_bytes / stream.size,
                     "ids_identical_docs": same, "docs": len(docs),
                     **{f"{c}_bpb": 8 * compress_size(data, c) / n_bytes for c in COMPRESSORS}}
    return out


def raw_baseline(held: dict[str, list[str]]) -> dict:
    from tokbench.metrics.core import compress_size

    out = {}
    for name, docs in held.items():
        raw = "".join(docs).encode("utf-8")
        out[name] = {f"{c}_bpb": 8 * compress_size(raw, c) / len(raw) for c in COMPRESSORS}
    return out


def varint(ids: np.ndarray) -> bytes:
    """LEB128: 7 bits per byte, high bit set on all but the last byte of an id."""
    out = bytearray()
    for x in ids.tolist():
        while x >= 0x80:
            out.append((x & 0x7F) | 0x80)
            x >>= 7
        out.append(x)
    return bytes(out)


def diagnose(root: Path, args) -> None:
    """In-sample sizes (the exact row's scored sample) and a second serialisation: ids renumbered by their
    frequency in the LZ proxy sample (most frequent = 0; unseen ids after, by id) as LEB128 varints."""
    from tokenizers import Tokenizer

    from tokbench.metrics.core import compress_size, serialise

    texts = bs.train_texts()
    exact, proxy = lz_sample(texts, args.exact_sample), lz_sample(texts, args.sample)
    held = bs.heldout()
    res = json.loads((root / "results.json").read_text())
    print("\n| V | mode | in-sample gzip bpb (lz-exact sample) | " +
          " | ".join(f"{n} gzip bpb, varint by rank" for n in held) + " |")
    print("|---|---|---|" + "---|" * len(held))
    raw = {n: 8 * compress_size("".join(d).encode(), "gzip") / len("".join(d).encode()) for n, d in held.items()}
    print("| - | raw bytes | " + f"{8 * compress_size(exact.encode(), 'gzip') / len(exact.encode()):.4f} | "
          + " | ".join(f"{raw[n]:.3f}" for n in held) + " |")
    for r in res["rows"]:
        tok = Tokenizer.from_file(str(root / f"{r['mode']}-{r['size']}" / "tokenizer.json"))
        k = tok.get_vocab_size()
        ids = np.array(tok.encode(exact, add_special_tokens=False).ids, dtype=np.uint32)
        ins = 8 * compress_size(serialise(ids, k), "gzip") / len(exact.encode())
        freq = np.bincount(np.array(tok.encode(proxy, add_special_tokens=False).ids), minlength=k)
        rank = np.empty(k, dtype=np.int64)
        rank[np.lexsort((np.arange(k), -freq))] = np.arange(k)
        cells = []
        for n, docs in held.items():
            s = np.fromiter((i for e in tok.encode_batch(docs, add_special_tokens=False) for i in e.ids), np.int64)
            nb = sum(len(d.encode()) for d in docs)
            cells.append(f"{8 * compress_size(varint(rank[s]), 'gzip') / nb:.3f}")
        print(f"| {r['size']} | {r['mode']} | {ins:.4f} | " + " | ".join(cells) + " |", flush=True)


def print_tables(res: dict) -> None:
    rows, raw = res["rows"], res["raw"]
    print("\n| V | mode | tokens | train s | s/merge | peak RSS MB | load | ids identical |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = sum(e["ids_identical_docs"] for e in r["eval"].values())
        n = sum(e["docs"] for e in r["eval"].values())
        print(f"| {r['size']} | {r['mode']} | {r['vocab_size']} | {r['merge_s']:.1f} | {r['s_per_merge']:.4f} | "
              f"{r['peak_rss_mb']:.0f} | {r['load']} | {same}/{n} |")
    for corpus in raw:
        print(f"\n{corpus}: bits per byte (gain over raw bytes under the same compressor)\n")
        print("| V | mode | bytes/token | gzip | zstd | lzma |")
        print("|---|---|---|---|---|---|")
        print(f"| - | raw bytes | 1 | " + " | ".join(f"{raw[corpus][c + '_bpb']:.3f}" for c in COMPRESSORS) + " |")
        for r in rows:
            e = r["eval"][corpus]
            cells = " | ".join(f"{e[c + '_bpb']:.3f} ({1 - e[c + '_bpb'] / raw[corpus][c + '_bpb']:+.1%})"
                               for c in COMPRESSORS)
            print(f"| {r['size']} | {r['mode']} | {e['bytes_per_token']:.3f} | {cells} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,8000,32000,64000")
    ap.add_argument("--modes", default="classic,compress,lz-exact,lz")
    ap.add_argument("--sample", type=int, default=128 << 10, help="LZ proxy sample bytes")
    ap.add_argument("--exact-sample", type=int, default=64 << 10, help="lz-exact sample bytes")
    ap.add_argument("--exact-max", type=int, default=1024, help="largest V that gets an lz-exact row")
    ap.add_argument("--every", type=int, default=16, help="lz proxy: merges per scoring round")
    ap.add_argument("--exact-every", type=int, default=1, help="lz-exact: merges per round (1: exact)")
    ap.add_argument("--lz-candidates", type=int, default=16, help="lz and lz-exact: shortlist size")
    ap.add_argument("--proxy-level", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench-lz-bpe")
    ap.add_argument("--table", action="store_true", help="print the tables of --out/results.json")
    ap.add_argument("--diagnose", action="store_true", help="in-sample and varint tables of --out's tokenizers")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SIZE", "OUT"))
    args = ap.parse_args()
    root = Path(args.out)
    if args.table:
        print_tables(json.loads((root / "results.json").read_text()))
        return
    if args.diagnose:
        diagnose(root, args)
        return
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args)
        return
    root.mkdir(parents=True, exist_ok=True)
    held = bs.heldout()
    res = {"settings": vars(args), "raw": raw_baseline(held), "rows": []}
    for size in [int(s) for s in args.sizes.split(",")]:
        for mode in args.modes.split(","):
            if mode == "lz-exact" and size > args.exact_max:
                continue
            out = root / f"{mode}-{size}"
            out.mkdir(exist_ok=True)
            load = os.getloadavg()[0]
            cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--child", mode, str(size), str(out),
                   "--sample", str(args.sample), "--exact-sample", str(args.exact_sample), "--every", str(args.every),
                   "--proxy-level", str(args.proxy_level), "--exact-every", str(args.exact_every),
                   "--lz-candidates", str(args.lz_candidates)]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAYON_NUM_THREADS": "2"})
            if p.returncode != 0:
                sys.exit(f"{mode} {size} failed:\n{p.stderr[-3000:]}")
            info = json.loads(p.stdout.strip().splitlines()[-1])
            wall, rss = bs._time_v(p.stderr)
            row = {"mode": mode, "size": size, "load": round(load, 2), "wall_s": round(wall, 1), "peak_rss_mb": rss,
                   **info, "eval": evaluate(out / "tokenizer.json", held)}
            res["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("meta",)}), flush=True)
            (root / "results.json").write_text(json.dumps(res, indent=1))
    print_tables(res)


if __name__ == "__main__":
    main()
