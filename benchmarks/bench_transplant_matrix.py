"""Transplant matrix (issue 16 section 1): one base onto many real target tokenizers, every method.

    python benchmarks/bench_transplant_matrix.py [--base smollm2-135m]
        [--targets gpt2,llama3-hf,qwen3,mistral-v3,xlm-r,bert,domain32k] [--methods subword,tokenadapt,omp,mean]
        [--donors gpt2=tbd-gpt2-d128] [--paths T=TOKENIZER] [--max-chars 8000] [--work /tmp/tb-matrix]
        [--mergekit /tmp/mkvenv/bin/mergekit-tokensurgeon] [--mergekit-targets gpt2,llama3-hf]
        [--mergekit-methods subword,mean,omp] [--mergekit-k 8] [--table]

(also `python benchmarks/bench_transplant.py --matrix ...`, which forwards here.)

Cells run method-major (every target with the first method, then the next method), so the cheap rows come first.
Per cell (target x method): transplant (wall and CPU seconds, load average), then bits/byte of the output as a
ratio to the base's on three held-out texts, each its first --max-chars characters: English (wikitext2-test, the
acceptance run's text), GSM8K test, code (code-python, last 20% of its documents); then "loads and
greedy-generates": AutoTokenizer + AutoModelForCausalLM from the output folder, 16 greedy tokens from a prompt;
and whether the target tokenizer round-trips each text (decode(encode(text)) == text; BERT's WordPiece does not:
case, spacing and unknown characters are lost, and bits/byte then measures a lossy text). Each cell is written to
WORK/cells/TARGET--METHOD.json when done; a rerun skips cells that have a file (delete one to redo it).

`domain32k` is a byte-level BPE trained here with `tokbench train` (--vocab-size 32000, --min-frequency 1) on GSM8K
train + the first 80% of code-python's documents, written once to WORK/domain32k.

mergekit-tokensurgeon (its own venv) runs beside on --mergekit-targets: subword and mean need only the donor's
vocabulary, so targets without a donor model get a vocabulary-only donor (the target tokenizer + a 1-layer,
d = 64 Llama of random weights, WORK/vocab-donor-TARGET); its OMP needs real donor embeddings, so it runs only
where --donors names one.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transplant import _cpu, _load, _load_avg, _save  # noqa: E402

TARGETS = "gpt2,llama3-hf,qwen3,mistral-v3,xlm-r,bert,domain32k"
TEXTS = ("english", "gsm8k", "code")
PROMPT = "The capital of France is"


def eval_texts(max_chars: int) -> dict[str, str]:
    """The three held-out texts, each its first max_chars characters."""
    from tokbench.eval import load_eval_text
    from tokbench.surgery.ops import read_corpus

    code = "\n".join(read_corpus("code-python", None, "80%:100%", None, "held-out code"))
    return {"english": load_eval_text("wikitext2-test", max_chars)[0],
            "gsm8k": load_eval_text("gsm8k-test", max_chars)[0],
            "code": load_eval_text_str(code, max_chars)}


def load_eval_text_str(text: str, max_chars: int) -> str:
    from tokbench.text import clean

    return clean(text)[:max_chars]


def domain_tokenizer(work: Path) -> Path:
    """WORK/domain32k: `tokbench train` on GSM8K train + code-python's first 80% (made once)."""
    out = work / "domain32k"
    if (out / "tokenizer.json").is_file():
        return out
    from tokbench.surgery.ops import read_corpus

    corpus = work / "domain-corpus.txt"
    docs = read_corpus("gsm8k-train", None, None, None, "domain") + read_corpus("code-python", None, "0%:80%", None,
                                                                                "domain")
    corpus.write_text("\n\n".join(docs), encoding="utf-8")
    subprocess.run(["tokbench", "train", str(corpus), "--vocab-size", "32000", "--min-frequency", "1",
                    "--special", "<|endoftext|>", "-q", "-o", str(out)], check=True)
    return out


def vocab_donor(work: Path, target: str, tok_dir: Path) -> Path:
    """A donor model folder for mergekit's subword/mean: the target tokenizer + tiny random weights."""
    out = work / f"vocab-donor-{target}"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tok_dir.is_file():  # a bare tokenizer.json
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir))
    else:
        tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def round_trip(tok_dir: Path, texts: dict[str, str]) -> dict:
    """Whether the target tokenizer gives each text back, and how many unknown tokens it needs."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    out = {}
    for name, text in texts.items():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        back = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        unk = sum(1 for i in ids if tok.unk_token_id is not None and i == tok.unk_token_id)
        out[name] = {"lossless": back == text, "unk_tokens": unk, "tokens": len(ids),
                     "lowercased": text != text.lower() and back == back.lower()}
    return out


def generate(out: Path) -> dict:
    """Load the output folder with transformers and greedy-generate 16 tokens from PROMPT."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        enc = tok(PROMPT, return_tensors="pt")
        dropped = [k for k in enc if k not in ("input_ids", "attention_mask")]  # BERT's token_type_ids
        for k in dropped:
            del enc[k]
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=16, do_sample=False,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        text = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=False)
        return {"ok": True, "new_tokens": int(gen.shape[1] - enc["input_ids"].shape[1]), "text": text,
                "prompt_ids": enc["input_ids"][0].tolist(), "dropped_inputs": dropped}
    except Exception as exc:  # the cell records the failure and the matrix goes on
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


def evaluate(out: Path, texts: dict[str, str], base: dict, vocab: int) -> dict:
    from tokbench.eval import bits_per_byte

    batch = 1 if vocab > 60_000 else 4  # logits of 4 x 512 x 250k floats would not fit the memory budget
    row = {}
    for name, text in texts.items():
        ev = bits_per_byte(out, text, batch=batch, progress=False)
        row[name] = {"bits_per_byte": ev["bits_per_byte"], "ratio": ev["bits_per_byte"] / base[name],
                     "seconds": ev.get("seconds")}
    return row


def _vocab_size(tok_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tok_dir))


def run_cell(path: Path, fn) -> None:
    t0, c0, l0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN), _load_avg()
    try:
        row = fn()
    except Exception as exc:  # one failing cell does not stop the matrix
        row = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    row.update(cell_seconds=round(time.perf_counter() - t0, 2),
               cell_cpu_seconds=round(_cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - c0, 2),
               load_avg_start_end=[l0, _load_avg()])
    _save(path, row)


def _fmt(row: dict, name: str) -> str:
    if "error" in row:
        return "error"
    ev = row.get("eval", {}).get(name)
    return f"{ev['ratio']:.3f}" if ev else ""


def markdown_table(work: Path, targets: list[str], methods: list[str], mk_methods: list[str]) -> str:
    cells = work / "cells"
    lines = ["| target | method | English | GSM8K | code | loads + generates (16 greedy tokens) | transplant s (CPU s) "
             "| load avg | shared / new rows | mergekit (same method): English / GSM8K / code, s |",
             "|---|---|---:|---:|---:|---|---:|---|---:|---|"]
    for target in targets:
        for method in methods:
            row = _load(cells / f"{target}--{method}.json")
            mk = _load(cells / f"{target}--mergekit-{method}.json") if method in mk_methods else {}
            if mk and "error" not in mk:
                mks = " / ".join(_fmt(mk, n) for n in TEXTS) + f", {mk['transplant_seconds']:.0f} s"
            elif mk and mk["error"].startswith("not run"):
                mks = mk["error"]
            elif mk:
                mks = f"failed: {mk['error'].strip().splitlines()[-1][:160] if mk['error'].strip() else ''}"
            else:
                mks = ""
            if not row or "error" in row:
                why = "not run (time)" if not row else f"failed: {row['error'][:160]}"
                lines.append(f"| {target} | {method} | {why} | | | | | | | {mks} |")
                continue
            gen, c = row.get("generate", {}), row.get("counts") or {}
            g = f"yes: {json.dumps(gen['text'])}" if gen.get("ok") else f"no: {gen.get('error', '')[:120]}"
            lines.append(f"| {target} | {method} | {_fmt(row, 'english')} | {_fmt(row, 'gsm8k')} | {_fmt(row, 'code')} "
                         f"| {g} | {row['transplant_seconds']:.1f} ({row['cpu_seconds']:.0f}) "
                         f"| {', '.join(str(x) for x in row['load_avg_start_end'])} "
                         f"| {c.get('shared', '')} / {c.get('new', '')} | {mks} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--targets", default=TARGETS)
    ap.add_argument("--methods", default="subword,tokenadapt,omp,mean")
    ap.add_argument("--donors", default="gpt2=tbd-gpt2-d128", help="TARGET=DONOR,... (omp uses the donor there)")
    ap.add_argument("--paths", default="", help="TARGET=TOKENIZER,... (a tokenizer.json or HF folder instead of the "
                                                "asset, e.g. mistral-v3 converted from SentencePiece)")
    ap.add_argument("--max-chars", type=int, default=8_000)
    ap.add_argument("--work", default="/tmp/tb-matrix")
    ap.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-tokensurgeon")
    ap.add_argument("--mergekit-targets", default="gpt2,llama3-hf", help="empty to skip mergekit")
    ap.add_argument("--mergekit-methods", default="subword,mean,omp")
    ap.add_argument("--mergekit-k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--table", action="store_true", help="only print the markdown table of the cells done")
    args = ap.parse_args(argv)
    work = Path(args.work)
    targets = [t for t in args.targets.split(",") if t]
    methods = [m for m in args.methods.split(",") if m]
    mk_methods = [m for m in args.mergekit_methods.split(",") if m]
    if args.table:
        print(markdown_table(work, targets, methods, mk_methods))
        return
    import torch

    torch.set_num_threads(args.threads)
    from tokbench.assets import home, resolve
    from tokbench.eval import bits_per_byte
    from tokbench.transplant import transplant

    (work / "cells").mkdir(parents=True, exist_ok=True)
    cache = home() / "cache"
    donors = dict(d.split("=", 1) for d in args.donors.split(",") if d)
    base_dir = Path(resolve(args.base, kind="model"))
    texts = eval_texts(args.max_chars)
    meta_path = work / "meta.json"
    meta = _load(meta_path)
    if meta.get("max_chars") not in (None, args.max_chars):
        sys.exit(f"{meta_path} was made with --max-chars {meta['max_chars']}: use it or another --work")
    if "base" not in meta:
        from importlib import metadata
        import platform

        def _ver(name):
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return None

        meta = {"max_chars": args.max_chars, "base_model": args.base, "python": platform.python_version(),
                **{n: _ver(n) for n in ("tokbench", "torch", "transformers", "tokenizers", "faiss-cpu", "numpy")},
                "base": {n: bits_per_byte(base_dir, t, cache_dir=cache / "eval", progress=False)["bits_per_byte"]
                         for n, t in texts.items()},
                "chars": {n: len(t) for n, t in texts.items()}}
        _save(meta_path, meta)
    base = meta["base"]
    print(f"base {args.base}: bits/byte " + ", ".join(f"{n} {v:.4f}" for n, v in base.items()), flush=True)

    paths = dict(p.split("=", 1) for p in args.paths.split(",") if p)

    def tok_dir(target: str) -> Path:
        if target in paths:
            return Path(paths[target])
        return domain_tokenizer(work) if target == "domain32k" else Path(resolve(target))

    for method in methods:
        for target in targets:
            cell = work / "cells" / f"{target}--{method}.json"
            if cell.is_file():
                continue
            print(f"{target} x {method} ...", flush=True)

            def one(target=target, method=method):
                tdir = tok_dir(target)
                donor = donors.get(target) if method == "omp" else None
                out = work / "out" / f"{target}--{method}"
                t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
                rep = transplant(base_dir, tdir, out, method=method, overwrite=True, cache_dir=cache,
                                 donor=Path(resolve(donor, kind="model")) if donor else None, progress=False)
                row = {"transplant_seconds": round(time.perf_counter() - t0, 2),
                       "cpu_seconds": round(_cpu(resource.RUSAGE_SELF) - c0, 2), "donor": donor,
                       "counts": rep.get("counts"), "parameters": rep.get("parameters")}
                row["generate"] = generate(out)
                row["round_trip"] = round_trip(out, texts)
                row["eval"] = evaluate(out, texts, base, _vocab_size(out))
                shutil.rmtree(out, ignore_errors=True)
                return row

            run_cell(cell, one)
            _report(cell)

    mk = Path(args.mergekit)
    for target in [t for t in args.mergekit_targets.split(",") if t]:
        for method in mk_methods:
            cell = work / "cells" / f"{target}--mergekit-{method}.json"
            if cell.is_file():
                continue
            if method == "omp" and target not in donors:
                _save(cell, {"error": "not run: mergekit's OMP needs donor embeddings and no donor model exists "
                                      f"for {target}"})
                continue
            if not mk.is_file():
                _save(cell, {"error": f"not run: mergekit-tokensurgeon not found at {mk}"})
                continue
            print(f"{target} x mergekit-{method} ...", flush=True)

            def one_mk(target=target, method=method):
                tdir = tok_dir(target)
                donor = (Path(resolve(donors[target], kind="model")) if target in donors
                         else vocab_donor(work, target, tdir))
                out = work / "out" / f"{target}--mergekit-{method}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [str(mk), str(base_dir), str(donor), str(out), "--approximation-method", method, "--quiet"]
                if method == "omp":
                    cmd[4:4] = ["--k", str(args.mergekit_k)]
                t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
                proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
                row = {"transplant_seconds": round(time.perf_counter() - t0, 2),
                       "cpu_seconds": round(_cpu(resource.RUSAGE_CHILDREN) - c0, 2), "command": " ".join(cmd)}
                if proc.returncode != 0:
                    row["error"] = (proc.stderr or proc.stdout)[-2000:]
                    return row
                row["generate"] = generate(out)
                row["eval"] = evaluate(out, texts, base, _vocab_size(out))
                shutil.rmtree(out, ignore_errors=True)
                return row

            run_cell(cell, one_mk)
            _report(cell)
    print(markdown_table(work, targets, methods, mk_methods))


def _report(cell: Path) -> None:
    row = _load(cell)
    if "error" in row:
        print(f"  {cell.stem}: failed: {row['error'].strip().splitlines()[-1:]}", flush=True)
        return
    print(f"  {cell.stem}: " + ", ".join(f"{n} {_fmt(row, n)}" for n in TEXTS)
          + f"; transplant {row['transplant_seconds']:.1f} s; generates {row['generate'].get('ok')}"
          + f" {json.dumps(row['generate'].get('text', ''))}; cell {row['cell_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
