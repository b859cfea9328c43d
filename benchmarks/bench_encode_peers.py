"""Exact BPE encode throughput, tokbench against every installable peer, in one run.

    python benchmarks/bench_encode_peers.py --data ~/.cache/tokbench/data [--runs 5]
        [--vocab gpt2 --vocab llama3 --vocab o200k] [--set long --set short] [--threads 1 --threads 2]
        [--peer-python tokenizers1=/work/venv-tok1/bin/python]
        [--peer-python peers=/work/venv-encpeers/bin/python]

Each encoder runs in its own subprocess (its own interpreter: `tokenizers` 1.0 cannot share a
virtual environment with the 0.x that tokbench depends on) over the same texts, read from one
JSON file. Every worker times its call `--runs` times (full GC before each, median reported),
then writes the ids as a flat little-endian uint32 file plus per-text lengths; the parent checks
them against tokbench's ids byte for byte. RAYON_NUM_THREADS / TOKENIZERS_PARALLELISM / the
per-call thread arguments fix the thread count (FASTOKENS_BPE_THREADS for fastokens, which otherwise
splits one text across every core).

Text sets (built by `texts()`, documented in reports/benchmarks.md):
- long: documents cut into pieces of at most 20,000 characters at line boundaries from English
  (the seven Gutenberg books, Tiny Shakespeare), WikiText-2 test + valid (whole lines joined),
  and eight other languages (UDHR + the Tatoeba non-English side of deu, fra, spa, rus, cmn,
  jpn, ara (UDHR arb), hin; Bible-Mark Ukrainian, Armenian, Gujarati, Swahili, Basque, Estonian, Latvian,
  Zulu).
- short: every non-empty line of WikiText-2 test, Tiny Shakespeare and Tatoeba (as above).

1 thread: each encoder's per-text call (`encode` / `encode_ordinary`) over the texts, in a Python
loop, one thread. 2 threads: the encoder's batch call with two worker threads (tokbench
`encode_ordinary_batch(num_threads=2)`, tiktoken `encode_ordinary_batch(num_threads=2)`,
tokenizers / riptoken / kitoken / fastokens their batch call on a 2-thread rayon pool); tokbench
also `split`: each long text cut across the threads (`encode_ordinary(t, num_threads=2)`), and at
1 thread `array`: `encode_ordinary(t, as_array=True)` (a numpy array, no Python int per id). The
ratio column compares tokbench's plain list call with the fastest peer with identical ids.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve()
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
])
# vocab -> (tiktoken rank file, pattern, tokenizer.json or None), relative to --data
VOCABS = {
    "gpt2": ("tokenizers/gpt2/gpt2.tiktoken", GPT2_PAT, "tokenizers/gpt2/tokenizer.json"),
    "llama3": ("tokenizers/llama3-tiktoken/tokenizer.model", LLAMA3_PAT,
               "tokenizers/llama3-tiktoken/tokenizer.json"),
    "o200k": (None, O200K_PAT, None),  # rank file: o200k_base.tiktoken.gz shipped in bpe-openai
}
# UDHR code prefix -> Tatoeba code
LANGS = {"deu": "deu", "fra": "fra", "spa": "spa", "rus": "rus", "cmn": "cmn", "jpn": "jpn", "arb": "ara", "hin": "hin"}
BIBLE = ["ukr", "hye", "guj", "swh", "eus", "est", "lav", "zul"]
PIECE = 20_000
# engine -> interpreter key (which --peer-python runs it)
ENGINES = {"tokbench": "self", "tiktoken": "self", "tokenizers1": "tokenizers1", "riptoken": "peers",
           "kitoken": "peers", "fastokens": "peers", "bpe-openai": "peers"}


# ------------------------------------------------------------------------------------------------
# texts
# ------------------------------------------------------------------------------------------------
def _pieces(text: str, limit: int = PIECE) -> list[str]:
    """`text` cut at line ends into pieces of at most `limit` characters (a longer line is cut)."""
    out, cur, n = [], [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            out.append(line[:limit])
            line = line[limit:]
        if n + len(line) > limit and cur:
            out.append("".join(cur))
            cur, n = [], 0
        cur.append(line)
        n += len(line)
    if cur:
        out.append("".join(cur))
    return [p for p in out if p.strip()]


def texts(data: Path, which: str) -> list[str]:
    c = data / "corpora"
    tat = {lang: (c / f"multilingual/tatoeba-laser-v1/tatoeba.{t}-eng.{t}").read_text(encoding="utf-8")
           for lang, t in LANGS.items()}
    wiki = [(c / f"english/wikitext-2-{s}.tokens.txt").read_text(encoding="utf-8") for s in ("test", "valid")]
    shakes = (c / "english/tinyshakespeare.txt").read_text(encoding="utf-8")
    if which == "short":
        return [ln for t in [wiki[0], shakes, *tat.values()] for ln in t.splitlines() if ln.strip()]
    docs = [p.read_text(encoding="utf-8") for p in sorted((c / "english/gutenberg").glob("*.txt"))]
    docs += [shakes, *wiki]
    udhr = {}
    for line in (c / "multilingual/udhr/udhr.jsonl").open(encoding="utf-8"):
        rec = json.loads(line)
        code = rec.get("code", "")
        for lang in LANGS:
            if code.startswith(lang) and lang not in udhr:
                paras = [p for v in (rec.get("sections") or {}).values() if isinstance(v, list)
                         for p in v if isinstance(p, str)]
                udhr[lang] = "\n".join(paras)
    docs += [udhr.get(lang, "") + "\n" + tat[lang] for lang in LANGS]
    for line in (c / "multilingual/bible-mark/bible-mark.jsonl").open(encoding="utf-8"):
        rec = json.loads(line)
        if rec["iso639_3"] in BIBLE:
            docs.append("\n".join(rec["verses"].values()))
    return [p for d in docs for p in _pieces(d)]


def o200k_file() -> Path:
    """o200k_base.tiktoken, unpacked from the copy bpe-openai ships (no network)."""
    out = Path(tempfile.gettempdir()) / "tokbench-bench-o200k_base.tiktoken"
    if not out.exists():
        for py in PEER_PYTHONS.values():
            r = subprocess.run([py, "-c", "import bpe_openai,os;print(os.path.dirname(bpe_openai.__file__))"],
                               capture_output=True, text=True)
            gz = Path(r.stdout.strip()) / "data/o200k_base.tiktoken.gz"
            if r.returncode == 0 and gz.exists():
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(gzip.decompress(gz.read_bytes()))
                tmp.replace(out)
                break
        else:
            raise SystemExit("o200k needs bpe-openai installed in a --peer-python (it ships o200k_base)")
    return out


PEER_PYTHONS: dict[str, str] = {}


# ------------------------------------------------------------------------------------------------
# worker: one engine, one vocab, one text set, one thread count
# ------------------------------------------------------------------------------------------------
def _ranks(path: str) -> dict[bytes, int]:
    import base64
    out = {}
    for line in open(path, "rb"):
        if line.strip():
            tok, rank = line.split()
            out[base64.b64decode(tok)] = int(rank)
    return out


def _build(engine: str, rank: str, pat: str, js: str | None, vocab: str):
    """(version, encode one text -> ids, encode a batch on n threads -> list of ids)."""
    if engine == "tokbench":
        import tokbench
        from tokbench.bpe import BPE
        from tokbench import _core
        enc = BPE.from_file(rank, pattern=pat)
        return (f"{getattr(tokbench, '__version__', '?')} (core {_core.core_version()}, engine {enc.engine})",
                enc.encode_ordinary, lambda ts, n: enc.encode_ordinary_batch(ts, num_threads=n))
    if engine == "tokbench-split":
        import tokbench
        from tokbench.bpe import BPE
        enc = BPE.from_file(rank, pattern=pat)
        return (f"{getattr(tokbench, '__version__', '?')} split", enc.encode_ordinary,
                lambda ts, n: [enc.encode_ordinary(t, num_threads=n) for t in ts])
    if engine == "tokbench-array":
        import tokbench
        from tokbench.bpe import BPE
        enc = BPE.from_file(rank, pattern=pat)
        return (f"{getattr(tokbench, '__version__', '?')} as_array", lambda t: enc.encode_ordinary(t, as_array=True),
                lambda ts, n: [enc.encode_ordinary(t, num_threads=n, as_array=True) for t in ts])
    if engine == "tiktoken":
        import tiktoken
        enc = tiktoken.Encoding(vocab, pat_str=pat, mergeable_ranks=_ranks(rank), special_tokens={})
        return (tiktoken.__version__, enc.encode_ordinary,
                lambda ts, n: enc.encode_ordinary_batch(ts, num_threads=n))
    if engine == "riptoken":
        import importlib.metadata as md
        import riptoken
        enc = riptoken.CoreBPE(_ranks(rank), {}, pat)
        return md.version("riptoken"), enc.encode_ordinary, lambda ts, n: enc.encode_ordinary_batch(ts)
    if engine == "tokenizers1":
        import tokenizers
        if js is None:
            raise RuntimeError("no tokenizer.json for this vocab")
        tk = tokenizers.Tokenizer.from_file(js)
        return (tokenizers.__version__, lambda t: tk.encode(t, add_special_tokens=False).ids,
                lambda ts, n: [e.ids for e in tk.encode_batch(ts, add_special_tokens=False)])
    if engine == "kitoken":
        import importlib.metadata as md
        import kitoken
        enc = kitoken.Kitoken.from_tokenizers_file(js) if js else kitoken.Kitoken.from_tiktoken_file(rank)
        return md.version("kitoken"), enc.encode, lambda ts, n: enc.encode_all(ts)
    if engine == "fastokens":
        import importlib.metadata as md
        import fastokens
        tk = (fastokens.Tokenizer.from_file(js) if js else
              fastokens.Tokenizer.from_tiktoken(rank, pattern=pat, special_tokens={}))
        return (md.version("fastokens"), lambda t: tk.encode(t, add_special_tokens=False).ids,
                lambda ts, n: [e.ids for e in tk.encode_batch(ts, add_special_tokens=False)])
    if engine == "bpe-openai":
        import importlib.metadata as md
        from bpe_openai import _bindings
        if vocab != "o200k":
            raise RuntimeError("bpe-openai ships only cl100k_base, o200k_base and voyage3_base")
        tk = _bindings.tokenizer_for_encoding("o200k_base")
        return md.version("bpe-openai"), tk.encode, None
    raise RuntimeError(f"unknown engine {engine}")


def worker(args) -> int:
    ts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    try:
        version, one, batch = _build(args.engine, args.rank, args.pattern, args.json, args.vocab)
    except Exception as exc:  # noqa: BLE001 -- reported as a row, not a crash of the run
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}))
        return 0
    n = args.threads
    if n == 1:
        def f():
            return [one(t) for t in ts]
    elif batch is None:
        print(json.dumps({"error": "no batch call", "version": version}))
        return 0
    else:
        def f():
            return batch(ts, n)
    times, out = [], None
    f()  # warm-up (page faults, lazy tables); every peer gets one
    for _ in range(args.runs):
        out = None
        gc.collect()
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    lens = array("I", map(len, out))
    ids = array("I", (i for row in out for i in row))
    Path(args.ids).write_bytes(lens.tobytes() + ids.tobytes())
    print(json.dumps({"version": version, "times": times, "tokens": len(ids)}))
    return 0


# ------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------
def run_one(py: str, engine: str, vocab: str, textfile: Path, threads: int, runs: int,
            rank: str, pat: str, js: str | None, idsfile: Path) -> dict:
    # fastokens cuts one long text across its own fork-join threads (every core unless told):
    # FASTOKENS_BPE_THREADS holds it to the thread count of the row like every other engine
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true" if threads > 1 else "false",
               OMP_NUM_THREADS="1", FASTOKENS_BPE_THREADS=str(threads))
    cmd = [py, str(HERE), "--worker", "--engine", engine, "--vocab", vocab, "--texts", str(textfile),
           "--threads", str(threads), "--runs", str(runs), "--rank", rank, "--pattern", pat, "--ids", str(idsfile)]
    if js:
        cmd += ["--json", js]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {r.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine"), ap.add_argument("--texts"), ap.add_argument("--ids")
    ap.add_argument("--rank"), ap.add_argument("--pattern"), ap.add_argument("--json")
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache/tokbench/data")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vocab", action="append", choices=list(VOCABS))
    ap.add_argument("--set", action="append", choices=["long", "short"], dest="sets")
    ap.add_argument("--threads", action="append", type=int)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    ap.add_argument("--peer-python", action="append", default=[],
                    help="KEY=PATH: interpreter for the engines of KEY (tokenizers1, peers)")
    args = ap.parse_args()
    if args.worker:
        args.threads, args.vocab = args.threads[0], args.vocab[0]
        return worker(args)

    PEER_PYTHONS.update({"self": sys.executable, "tokenizers1": "/work/venv-tok1/bin/python",
                         "peers": "/work/venv-encpeers/bin/python"})
    for kv in args.peer_python:
        k, _, v = kv.partition("=")
        PEER_PYTHONS[k] = v
    engines = [e for e in args.engines.split(",") if e]
    tmp = Path(tempfile.mkdtemp(prefix="tokbench-bench-peers-"))
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cpus; "
          f"median of {args.runs} runs after one warm-up; MB = 10^6 bytes of UTF-8")
    rows = []
    for which in args.sets or ["long", "short"]:
        ts = texts(args.data, which)
        textfile = tmp / f"{which}.json"
        textfile.write_text(json.dumps(ts), encoding="utf-8")
        mb = sum(len(t.encode("utf-8")) for t in ts) / 1e6
        print(f"\n## {which}: {len(ts)} texts, {mb:.2f} MB")
        for vocab in args.vocab or list(VOCABS):
            rank_rel, pat, js_rel = VOCABS[vocab]
            rank = str(o200k_file() if rank_rel is None else args.data / rank_rel)
            js = str(args.data / js_rel) if js_rel else None
            for threads in args.threads or [1, 2]:
                ref_ids, res = None, {}
                eng_list = engines + (["tokbench-array"] if threads == 1 else
                                      ["tokbench-split"] if which == "long" else [])
                for eng in eng_list:
                    key = ENGINES.get(eng, "self")
                    idsfile = tmp / f"{eng}.ids"
                    r = run_one(PEER_PYTHONS[key], eng, vocab, textfile, threads, args.runs, rank, pat, js, idsfile)
                    if "times" in r:
                        got = idsfile.read_bytes()
                        if eng == "tokbench":
                            ref_ids = got
                        r["same"] = None if ref_ids is None else got == ref_ids
                        r["mbs"] = mb / statistics.median(r["times"])
                        idsfile.unlink()
                    res[eng] = r
                    print(f"  {vocab} {threads}t {eng:15s} " +
                          (f"{r['mbs']:7.1f} MB/s  ids {'same' if r['same'] else 'DIFFER'}  ({r['version']})"
                           if "mbs" in r else f"-- {r.get('error')}"), flush=True)
                rows.append((which, vocab, threads, res))
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| set | vocab | threads | " + " | ".join(engines) + " | tokbench / best peer (list) |")
    print("|---|---|---|" + "---:|" * (len(engines) + 1))
    for which, vocab, threads, res in rows:
        cells, best = [], 0.0
        for e in engines:
            r = res.get(e, {})
            if "mbs" in r:
                cells.append(f"{r['mbs']:.1f}" + ("" if r["same"] in (True, None) else " (ids differ)"))
                if e != "tokbench" and r["same"]:
                    best = max(best, r["mbs"])
            else:
                cells.append("-")
        ours = res["tokbench"].get("mbs", 0.0)
        split = "".join(f" ({e.split('-')[1]} {res[e]['mbs']:.1f})" for e in ("tokbench-split", "tokbench-array")
                        if "mbs" in res.get(e, {}))
        ratio = f"{ours / best:.2f}x" if best else "-"
        print(f"| {which} | {vocab} | {threads} | " + " | ".join(cells) + split + f" | {ratio} |")
    print("\nversions: " + "; ".join(sorted({f"{e} {r['version']}" for *_, res in rows
                                             for e, r in res.items() if "version" in r})))
    errors = sorted({f"{e}: {r['error']}" for *_, res in rows for e, r in res.items() if "error" in r})
    if errors:
        print("not run: " + "; ".join(errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
