"""Train at scale (issue 15): tokbench's BPE trainer beside every BPE trainer that installs here.

    nice python benchmarks/bench_train_scale.py --corpus mix --vocab 32000 --vocab 128000 --runs 3
    nice python benchmarks/bench_train_scale.py --corpus big --vocab 32000 --vocab 128000 --runs 1
    python benchmarks/bench_train_scale.py --table results.jsonl      # markdown table of saved rows
    nice python benchmarks/bench_train_scale.py --merge-ab /work/main --vocab 32000 --vocab 128000 --runs 3

Corpora (written once as plain UTF-8 text files under --work; held-out text never in either):
- mix: wikitext2-valid, tinyshakespeare, code-python/rust/cpp, gsm8k-train, tatoeba, gutenberg
  (bench_train.py's 17 MB mix with WikiText-2 test swapped for Gutenberg, so that WikiText-2 test is
  held out): 18.9 MB.
- big: every registered corpus except the held-out ones (wikitext2-valid, tinyshakespeare, tinystories,
  gsm8k-train, code-python/rust/cpp, udhr, tatoeba, gutenberg, bible-mark: 30.8 MB of distinct text),
  concatenated whole --big-copies times (default 7: 215 MB). Copies 2..k repeat copy 1 exactly: for the
  trainers that count pre-tokens (all but SentencePiece) every count is k times the one-copy count, so the
  merges differ from the one-copy run only where the min-frequency cutoff bites; the run measures
  reading + counting throughput and memory at 215 MB, not what 215 MB of new text would learn.
- held out: WikiText-2 test and GSM8K test (question + answer), bytes/token = UTF-8 bytes / tokens.

Trainers, each in its own subprocess (the parent reads wall time and peak RSS, ru_maxrss, from
os.wait4; the child times its own training call: "train s" = reading the file + counting + merging,
interpreter start and saving excluded; "wall s" = the whole child):
- tokbench: count_inputs + train_counts (count and merge timed apart), GPT-2 split, min frequency 2,
  num_threads = --threads.
- hf: tokenizers.trainers.BpeTrainer, Split(GPT-2 regex) + ByteLevel, min frequency 2, RAYON_NUM_THREADS.
  (tokenizers 1.0.0rc3, /work/venv-tok1, exposes no trainer in its Python API: Tokenizer, Encoding,
  Padding, Truncation only; so it is not a training peer.)
- gigabpe: train_tokenizer(pretokenizer="bytelevel", min_frequency=2, threads).
- bpeasy: train_bpe(lines, GPT-2 regex, max_token_length=256, batch_size=1000).
- rustbpe: Tokenizer.train_from_iterator(lines, pattern=GPT-2 regex).
- ffbpe: PreTokenizer(pat_str=GPT-2 regex).word_counter().add_source(lines) + BpeTrainer(unit="byte").
- yttm (youtokentome): BPE.train(coverage=0.9995, n_threads): whitespace-split character BPE, no byte fallback (unknown
  characters become one <UNK> id, so its bytes/token is slightly flattering).
- spm (SentencePiece): model_type=bpe, byte_fallback, normalization identity, remove_extra_whitespaces
  off, character_coverage 0.9995, num_threads, input_sentence_size --spm-sentences (0 = every line),
  other settings default (split by whitespace, script and number). SentencePiece reads lines without their
  line end: its held-out count adds one token per line end (the <0x0A> byte piece it would emit).
Equal vocabulary: every trainer is asked for the same total size (byte tokens + merges + the special
<|endoftext|> where the trainer takes one); the size each reached is recorded. Every peer but tokbench, hf
and spm runs in --peers-python (a venv with them installed: see reports/benchmarks.md).
Rows are appended to --results (JSON lines) as they finish, so a long run can be stopped and resumed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>"]
MIX = ["wikitext2-valid", "tinyshakespeare", "code-python", "code-rust", "code-cpp", "gsm8k-train", "tatoeba",
       "gutenberg"]
BIG = ["wikitext2-valid", "tinyshakespeare", "tinystories", "gsm8k-train", "code-python", "code-rust", "code-cpp",
       "udhr", "tatoeba", "gutenberg", "bible-mark"]
HELD_OUT = ["wikitext2-test", "gsm8k-test"]
TRAINERS = ["tokbench", "hf", "gigabpe", "bpeasy", "rustbpe", "ffbpe", "yttm", "spm"]
PEER_VENV = {"gigabpe", "bpeasy", "rustbpe", "ffbpe", "yttm"}
JSON_OUT = {"tokbench", "hf", "gigabpe"}


# ---- corpus files (parent, project venv) -----------------------------------------------------
def _write_docs(names: list[str], path: Path, copies: int = 1) -> None:
    from tokbench.assets import iter_documents

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for _ in range(copies):
            for name in names:
                for doc in iter_documents(name):
                    f.write(doc if doc.endswith("\n") else doc + "\n")
    os.replace(tmp, path)


def corpus_file(work: Path, corpus: str, copies: int) -> Path:
    path = work / ("mix.txt" if corpus == "mix" else f"big-x{copies}.txt")
    if not path.exists():
        _write_docs(MIX if corpus == "mix" else BIG, path, 1 if corpus == "mix" else copies)
    return path


def held_out_files(work: Path) -> dict[str, str]:
    out = {}
    for name in HELD_OUT:
        p = work / f"heldout-{name}.txt"
        if not p.exists():
            _write_docs([name], p)
        out[name] = str(p)
    return out


def _lines(path: str):
    with open(path, encoding="utf-8") as f:
        yield from f


# ---- training children -----------------------------------------------------------------------
def _save_ranks(ranks: dict[bytes, int], path: str) -> None:
    import base64

    with open(path, "wb") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n")


def train_child(which: str, a) -> dict:
    out = Path(a.out)
    r: dict = {}
    if which == "tokbench":
        import tokbench
        tb = importlib.import_module("tokbench.bpe.train")

        t0 = time.perf_counter()
        counter = tb.new_counter("gpt2", SPECIALS)
        stats = tb.count_inputs([a.input], counter, num_threads=a.threads, progress=False)
        t1 = time.perf_counter()
        trained = tb.train_counts(counter, a.vocab, pattern=tb.resolve_pattern("gpt2"), special_tokens=SPECIALS,
                                  min_frequency=a.min_frequency, progress=False, stats=stats)
        t2 = time.perf_counter()
        r.update(count_s=t1 - t0, merge_s=t2 - t1, train_s=t2 - t0, distinct_pretokens=len(counter),
                 version=getattr(tokbench, "__version__", "dev"), vocab_reached=trained.vocab_size)
        r["model"] = str(trained.save(out / "tokbench.json"))
    elif which == "hf":
        import tokenizers
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        t0 = time.perf_counter()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT2), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=a.vocab, min_frequency=a.min_frequency, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train([a.input], trainer=trainer)
        r.update(train_s=time.perf_counter() - t0, version=tokenizers.__version__, vocab_reached=tok.get_vocab_size())
        tok.save(str(out / "hf.json"))
        r["model"] = str(out / "hf.json")
    elif which == "gigabpe":
        import gigabpe
        from importlib.metadata import version

        t0 = time.perf_counter()
        gigabpe.train_tokenizer([a.input], vocab_size=a.vocab, output=str(out / "gigabpe.json"),
                                special_tokens=SPECIALS, min_frequency=a.min_frequency, pretokenizer="bytelevel",
                                threads=a.threads)
        r.update(train_s=time.perf_counter() - t0, version=version("gigabpe"), model=str(out / "gigabpe.json"))
        with open(out / "gigabpe.json", encoding="utf-8") as f:
            j = json.load(f)
        r["vocab_reached"] = len(j["model"]["vocab"]) + sum(
            t["content"] not in j["model"]["vocab"] for t in j.get("added_tokens", []))
    elif which == "bpeasy":
        import bpeasy

        t0 = time.perf_counter()
        ranks = bpeasy.train_bpe(_lines(a.input), GPT2, max_token_length=256, vocab_size=a.vocab - len(SPECIALS),
                                 batch_size=1000)
        r.update(train_s=time.perf_counter() - t0, version=bpeasy.__version__, vocab_reached=len(ranks) + len(SPECIALS))
        _save_ranks(ranks, str(out / "bpeasy.tiktoken"))
        r["model"] = str(out / "bpeasy.tiktoken")
    elif which == "rustbpe":
        import rustbpe
        from importlib.metadata import version

        t0 = time.perf_counter()
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(_lines(a.input), a.vocab - len(SPECIALS), pattern=GPT2)
        r.update(train_s=time.perf_counter() - t0, version=version("rustbpe"))
        ranks = dict(tok.get_mergeable_ranks())
        r["vocab_reached"] = len(ranks) + len(SPECIALS)
        _save_ranks(ranks, str(out / "rustbpe.tiktoken"))
        r["model"] = str(out / "rustbpe.tiktoken")
    elif which == "ffbpe":
        import ffbpe

        t0 = time.perf_counter()
        counter = ffbpe.PreTokenizer(SPECIALS, pat_str=GPT2).word_counter()
        counter.add_source(_lines(a.input))
        trainer = ffbpe.BpeTrainer(SPECIALS, unit="byte")
        trainer.add_word_counter(counter)
        trainer.train(a.vocab)
        model = trainer.validate_model()
        r.update(train_s=time.perf_counter() - t0, version=ffbpe.__version__, vocab_reached=len(model.vocab))
        model.save_pretrained(str(out / "ffbpe"), pat_str=GPT2)
        r["model"] = str(out / "ffbpe")
    elif which == "yttm":
        import youtokentome as yttm
        from importlib.metadata import version

        t0 = time.perf_counter()
        yttm.BPE.train(data=a.input, model=str(out / "yttm.model"), vocab_size=a.vocab, coverage=0.9995,
                       n_threads=a.threads)
        r.update(train_s=time.perf_counter() - t0, version=version("youtokentome"), model=str(out / "yttm.model"))
        r["vocab_reached"] = yttm.BPE(str(out / "yttm.model")).vocab_size()
    elif which == "spm":
        import sentencepiece as spm

        t0 = time.perf_counter()
        spm.SentencePieceTrainer.train(
            input=a.input, model_prefix=str(out / "spm"), model_type="bpe", vocab_size=a.vocab, byte_fallback=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, character_coverage=0.9995,
            num_threads=a.threads, input_sentence_size=a.spm_sentences, shuffle_input_sentence=True,
            max_sentence_length=1 << 16, user_defined_symbols=SPECIALS, minloglevel=2)
        r.update(train_s=time.perf_counter() - t0, version=spm.__version__, model=str(out / "spm.model"))
        r["vocab_reached"] = spm.SentencePieceProcessor(model_file=str(out / "spm.model")).get_piece_size()
    else:
        raise SystemExit(f"unknown trainer {which}")
    return r


def merge_child(a) -> dict:
    """Count the corpus, then time train_counts alone (num_threads passed only when given: the
    checkout on PYTHONPATH may predate it); a hash of the merges and their counts."""
    import hashlib

    tb = importlib.import_module("tokbench.bpe.train")
    counter = tb.new_counter("gpt2", SPECIALS)
    tb.count_inputs([a.input], counter, num_threads=2, progress=False)
    kw = {} if a.merge_threads is None else {"num_threads": a.merge_threads}
    t0 = time.perf_counter()
    tr = tb.train_counts(counter, a.vocab, pattern="gpt2", special_tokens=SPECIALS, min_frequency=a.min_frequency,
                         progress=False, **kw)
    secs = time.perf_counter() - t0
    h = hashlib.sha256(repr(([(tr.tokens[x], tr.tokens[y]) for x, y in tr.merges], tr.merge_counts)).encode())
    return {"merge_s": secs, "merges": len(tr.merges), "sha": h.hexdigest()[:16]}


def merge_ab(a, inp: Path) -> None:
    """--merge-ab OLD_CHECKOUT: merge-loop seconds of OLD_CHECKOUT (its own _core) vs this checkout at 1 and
    2 threads, interleaved, --runs times; merges must hash the same."""
    import statistics

    here = str(Path(__file__).resolve().parents[1])
    arms = [("before", a.merge_ab, None), ("after, 1 thread", here, 1), ("after, 2 threads", here, 2)]
    for vocab in a.vocab or [32000]:
        secs: dict = {name: [] for name, _, _ in arms}
        shas = set()
        for _ in range(a.runs):
            for name, root, threads in arms:
                cmd = [sys.executable, os.path.abspath(__file__), "--merge-child", "--input", str(inp), "--vocab",
                       str(vocab), "--out", a.work] + ([] if threads is None else ["--merge-threads", str(threads)])
                load = os.getloadavg()[0]
                r = json.loads(subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=root), check=True,
                                              capture_output=True, text=True).stdout)
                secs[name].append(r["merge_s"])
                shas.add(r["sha"])
                print(json.dumps({"vocab": vocab, "arm": name, "load_1m": load, **r}), flush=True)
        print(f"vocab {vocab}: merges identical in every arm: {len(shas) == 1}; median merge s: " + ", ".join(
            f"{n} {statistics.median(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})" for n, v in secs.items()))


# ---- held-out bytes/token (a second child, after training: not part of the timed run) ----------
def eval_child(which: str, model: str, files: dict[str, str]) -> dict[str, float]:
    if which in JSON_OUT:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(model)
        count = lambda lines: sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
    elif which in ("bpeasy", "rustbpe"):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        enc = tiktoken.Encoding(which, pat_str=GPT2, mergeable_ranks=load_tiktoken_bpe(model), special_tokens={})
        count = lambda lines: sum(len(i) for i in enc.encode_ordinary_batch(lines))
    elif which == "ffbpe":
        import ffbpe

        enc = ffbpe.BpeEncoder.from_pretrained(model)
        count = lambda lines: sum(len(enc.encode(l)) for l in lines)
    elif which == "yttm":
        import youtokentome as yttm

        bpe = yttm.BPE(model)
        count = lambda lines: sum(len(i) for i in bpe.encode([l.rstrip("\n") for l in lines])) + sum(
            l.endswith("\n") for l in lines)
    elif which == "spm":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=model)
        count = lambda lines: sum(len(i) for i in sp.encode([l.rstrip("\n") for l in lines])) + sum(
            l.endswith("\n") for l in lines)
    out = {}
    for name, path in files.items():
        lines = list(_lines(path))
        out[name] = sum(len(l.encode("utf-8")) for l in lines) / count(lines)
    return out


# ---- parent ----------------------------------------------------------------------------------
def _python(which: str, a, evaluating: bool = False) -> str:
    if evaluating and which in JSON_OUT:  # tokenizer.json results are encoded by the project venv's tokenizers
        return sys.executable
    return a.peers_python if which in PEER_VENV else sys.executable


def _spawn(cmd: list[str], env: dict, timeout: float):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, ru.ru_maxrss / 1024
        if time.perf_counter() > deadline:
            p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            return "timeout", time.perf_counter() - t0, ru.ru_maxrss / 1024
        time.sleep(0.05)


def run_one(which: str, vocab: int, inp: Path, a, held: dict[str, str], run: int) -> dict:
    import tempfile

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(dir=a.work) as out:
        res = Path(out) / "result.json"
        cmd = [_python(which, a), os.path.abspath(__file__), "--child", which, "--input", str(inp), "--out", out,
               "--vocab", str(vocab), "--threads", str(a.threads), "--min-frequency", str(a.min_frequency),
               "--spm-sentences", str(a.spm_sentences)]
        load0 = os.getloadavg()
        rc, wall, rss = _spawn(cmd, env, a.timeout)
        row = {"trainer": which, "corpus": a.corpus, "corpus_mb": round(inp.stat().st_size / 1e6, 2), "vocab": vocab,
               "run": run, "threads": a.threads, "wall_s": round(wall, 2), "peak_rss_mb": round(rss, 1),
               "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()],
               "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
        if rc != 0:
            row["failed"] = str(rc)
            return row
        row.update(json.loads(res.read_text()))
        if run == 0 or a.eval_every_run:
            ev = Path(out) / "eval.json"
            cmd = [_python(which, a, evaluating=True), os.path.abspath(__file__), "--eval", which, "--model", row["model"],
                   "--heldout", json.dumps(held), "--out", str(ev)]
            rc, _, _ = _spawn(cmd, env, a.timeout)
            row["bytes_per_token"] = json.loads(ev.read_text()) if rc == 0 else f"eval failed ({rc})"
        row.pop("model", None)
        for k in ("train_s", "count_s", "merge_s"):
            if k in row:
                row[k] = round(row[k], 3)
        return row


def table(paths: list[str]) -> None:
    import statistics

    rows = [json.loads(l) for p in paths for l in open(p, encoding="utf-8") if l.strip()]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["corpus"], r["vocab"], r["trainer"]), []).append(r)
    print("| corpus | vocab | trainer | version | runs | train s (median) | count / merge s | wall s | peak RSS MB "
          "| reached | B/tok WikiText-2 | B/tok GSM8K | load 1m |")
    print("|---|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for (corpus, vocab, which), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], TRAINERS.index(kv[0][2]))):
        ok = [r for r in rs if "failed" not in r]
        if not ok:
            print(f"| {corpus} | {vocab} | {which} | | {len(rs)} | {rs[0]['failed']} after {rs[0]['wall_s']} s "
                  f"| | | {rs[0]['peak_rss_mb']:.0f} | | | | {rs[0]['load_before'][0]} |")
            continue
        med = lambda k: statistics.median(r[k] for r in ok)
        bpt = next((r["bytes_per_token"] for r in ok if isinstance(r.get("bytes_per_token"), dict)), {})
        cm = f"{med('count_s'):.2f} / {med('merge_s'):.2f}" if "count_s" in ok[0] else ""
        loads = ", ".join(f"{r['load_before'][0]:.1f}" for r in ok)
        print(f"| {corpus} {ok[0]['corpus_mb']:.0f} MB | {vocab} | {which} | {ok[0]['version']} | {len(ok)} "
              f"| {med('train_s'):.2f} | {cm} | {med('wall_s'):.2f} | {med('peak_rss_mb'):.0f} "
              f"| {ok[0]['vocab_reached']} | {bpt.get('wikitext2-test', float('nan')):.4f} "
              f"| {bpt.get('gsm8k-test', float('nan')):.4f} | {loads} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", choices=["mix", "big"], default="mix")
    ap.add_argument("--big-copies", type=int, default=7)
    ap.add_argument("--vocab", type=int, action="append")
    ap.add_argument("--trainers", default=",".join(TRAINERS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--eval-every-run", action="store_true",
                    help="bytes/token after every run (default: the first run only; the merges do not vary by run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--spm-sentences", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--work", default="/tmp/tokbench-trainscale")
    ap.add_argument("--results", default="/tmp/tokbench-trainscale/results.jsonl")
    ap.add_argument("--peers-python", default="/work/venv-trainpeers/bin/python")
    ap.add_argument("--table", nargs="*")
    ap.add_argument("--child")
    ap.add_argument("--eval")
    ap.add_argument("--input")
    ap.add_argument("--out")
    ap.add_argument("--model")
    ap.add_argument("--heldout")
    ap.add_argument("--merge-ab", help="an older checkout: time its merge loop beside this one's")
    ap.add_argument("--merge-child", action="store_true")
    ap.add_argument("--merge-threads", type=int)
    a = ap.parse_args()
    if a.merge_child:
        print(json.dumps(merge_child(argparse.Namespace(**{**vars(a), "vocab": a.vocab[0]}))))
        return
    if a.table is not None:
        table(a.table or [a.results])
        return
    if a.child:
        a.vocab = a.vocab[0]
        r = train_child(a.child, a)
        Path(a.out, "result.json").write_text(json.dumps(r))
        return
    if a.eval:
        Path(a.out).write_text(json.dumps(eval_child(a.eval, a.model, json.loads(a.heldout))))
        return
    Path(a.work).mkdir(parents=True, exist_ok=True)
    inp = corpus_file(Path(a.work), a.corpus, a.big_copies)
    if a.merge_ab:
        merge_ab(a, inp)
        return
    held = held_out_files(Path(a.work))
    print(f"corpus {inp} ({inp.stat().st_size / 1e6:.1f} MB), held out {list(held)}, cores {os.cpu_count()}, "
          f"python {sys.version.split()[0]}", flush=True)
    for vocab in a.vocab or [32000]:
        for run in range(a.runs):
            for which in a.trainers.split(","):
                row = run_one(which, vocab, inp, a, held, run)
                with open(a.results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
