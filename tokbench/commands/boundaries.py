"""`tokbench boundaries`: MAGNET-style learned, script-aware segmentation (tokbench.boundaries)."""
from __future__ import annotations

import json
import shlex
import sys

import click

ARMS = ("dtp", "priors", "magnet", "bytes")
LANG_HELP = "Comma-separated Tatoeba language codes (English: eng), or 'all'."
DEFAULT_LANGS = "eng,fra,spa,rus,ukr,bel,hin,ben,tel"


def _need():
    from tokbench.boundaries import require_torch

    require_torch()


def _langs(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def _splits(languages: str, english_bytes: int):
    from tokbench.boundaries.data import load_splits

    return load_splits(_langs(languages), english_train_bytes=english_bytes)


def _threads(n: int):
    if n:
        import torch

        torch.set_num_threads(n)


@click.group()
def boundaries():
    """Learned segment boundaries (MAGNET): priors, training, segmentation, report, export."""


@boundaries.command("prior")
@click.option("--from", "source", type=click.Choice(["parallel", "words"]), default="parallel", show_default=True,
              help="parallel: beta_en / byte premium on Tatoeba train pairs; words: words / bytes.")
@click.option("--beta-en", default=0.2, show_default=True, type=float, help="English boundary rate (parallel).")
@click.option("--languages", default=DEFAULT_LANGS, show_default=True, help=LANG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def prior(source, beta_en, languages, as_json):
    """Boundary-rate priors per language and script, checked against MAGNET's released 0.2 / 0.1 / 0.08."""
    from tokbench.boundaries.priors import check_prior, parallel_priors, words_priors

    check_prior(beta_en, "--beta-en")
    splits = _splits(languages, 4_000_000)
    r = parallel_priors(splits.parallel_train, beta_en) if source == "parallel" else words_priors(splits.train)
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    click.echo(f"priors from {source} (Tatoeba train split{'' if source == 'parallel' else ' + UDHR + English'})")
    for lang, row in sorted(r["languages"].items()):
        extra = f"  byte premium {row['byte_premium']:.3f}" if "byte_premium" in row else ""
        click.echo(f"  {lang:6s} {row['script']:9s} beta {row['beta']:.4f}{extra}")
    for g, b in r["scripts"].items():
        c = r["check"].get(g)
        ref = f"  (MAGNET {c['magnet']}: {c['relative']:+.1%}, {'agrees' if c['agrees'] else 'differs'})" if c else ""
        click.echo(f"  script {g:9s} beta {b:.4f}{ref}")


@boundaries.command("train")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--arm", type=click.Choice(ARMS), default="magnet", show_default=True,
              help="dtp: one predictor, one prior; priors: one predictor, per-language priors; magnet: a "
                   "predictor per script; bytes: no shortening (the byte-level baseline).")
@click.option("--preset", type=click.Choice(["test", "tiny", "small"]), default="tiny", show_default=True)
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--languages", default=DEFAULT_LANGS, show_default=True, help=LANG_HELP)
@click.option("--prior-from", type=click.Choice(["parallel", "words"]), default="parallel", show_default=True)
@click.option("--beta-en", default=0.2, show_default=True, type=float)
@click.option("--prior", "prior_items", multiple=True, help="Override a prior: SCRIPT=RATE or LANG=RATE (repeatable).")
@click.option("--loss", type=click.Choice(["binomial", "hinge"]), default="binomial", show_default=True)
@click.option("--hinge-s", default=2.0, show_default=True, type=click.FloatRange(0, 100))
@click.option("--boundary-warmup", default=None, type=click.IntRange(0, 10_000_000),
              help="Steps over which the boundary loss weight ramps 0 -> 1 (default 5% of --steps).")
@click.option("--lr", default=None, type=click.FloatRange(0, 1, min_open=True))
@click.option("--batch", default=None, type=click.IntRange(1, 4096))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024), help="torch threads (0: torch's default).")
@click.option("--max-minutes", default=None, type=click.FloatRange(0, 100_000, min_open=True),
              help="Stop after this much training time (checkpointed).")
@click.option("--checkpoint-every", default=100, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--log-every", default=10, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--english-bytes", default=4_000_000, show_default=True, type=click.IntRange(1, 10**10),
              help="At most this many bytes of each English training corpus (Gutenberg, WikiText-2 valid) and "
                   "of test text (WikiText-2 test).")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="At the end, set each predictor's evaluation threshold so that its boundary rate on "
                   "training windows is its prior.")
@click.option("--windows", "window_policy", type=click.Choice(["random", "line", "mixed"]), default="random",
              show_default=True, help="Where training (and calibration) windows start: any byte, a newline "
              "(the window reads a line after its newline, as isolated sentences are evaluated), or half and half.")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in OUT.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_(out, arm, preset, steps, languages, prior_from, beta_en, prior_items, loss, hinge_s, boundary_warmup,
           lr, batch, seed, device, threads, max_minutes, checkpoint_every, log_every, english_bytes, calibrate,
           window_policy, resume, quiet):
    """Train one arm into OUT (checkpoint.pt, train.json); resumable, atomic checkpoints."""
    _need()
    from tokbench.boundaries.priors import parse_priors
    from tokbench.boundaries.train import TrainConfig, train

    cfg = TrainConfig(preset=preset, arm=arm, languages=_langs(languages), steps=steps, prior_from=prior_from,
                      beta_en=beta_en, priors=parse_priors(prior_items), loss=loss, hinge_s=hinge_s,
                      boundary_warmup=boundary_warmup, lr=lr, batch=batch, seed=seed, device=device,
                      threads=threads, log_every=log_every, checkpoint_every=checkpoint_every,
                      max_seconds=None if max_minutes is None else max_minutes * 60, calibrate=calibrate,
                      windows=window_policy).check()
    _threads(threads)
    r = train(cfg, out, resume=resume, splits=_splits(languages, english_bytes), progress=not quiet)
    last = r["log"][-1] if r["log"] else {}
    click.echo(f"{arm} ({preset}, {r['n_parameters']:,} parameters): step {r['step']}, "
               f"{r['seconds']:.0f} s, bits/byte {last.get('bits_per_byte', float('nan')):.3f}, rate "
               + ", ".join(f"{g} {v:.3f}" for g, v in last.get("rate", {}).items()) + f" -> {out}")
    for g, c in (r.get("calibration") or {}).items():
        click.echo(f"  calibrated {g}: rate on training windows {c['rate_before']:.3f} -> {c['rate_after']:.3f} "
                   f"(prior {c['target']:.3f}, threshold logit {c['offset']:+.3f})")


@boundaries.command("calibrate")
@click.argument("run")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--windows", default=1024, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Training windows per predictor, split equally between its languages.")
@click.option("--languages", default=None, help="Languages of the training text (default: the run's own).")
@click.option("--english-bytes", default=4_000_000, show_default=True, type=click.IntRange(1, 10**10))
@click.option("--starts", type=click.Choice(["random", "line", "mixed"]), default=None,
              help="Where the calibration windows start (default: as the run's training windows, train --windows).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if tokbench wrote it.")
def calibrate_(run, out, windows, languages, english_bytes, starts, overwrite):
    """Set each predictor's evaluation threshold so that its rate on training windows is its prior; writes
    the calibrated run into OUT (RUN is not modified)."""
    _need()
    from tokbench.boundaries.train import recalibrate

    r = recalibrate(run, out, languages=_langs(languages) if languages else None, english_train_bytes=english_bytes,
                    windows=windows, starts=starts, overwrite=overwrite)
    for g, c in r["calibration"].items():
        click.echo(f"{g}: rate on training windows {c['rate_before']:.3f} -> {c['rate_after']:.3f} "
                   f"(prior {c['target']:.3f}, threshold logit {c['offset']:+.3f})")
    click.echo(f"-> {out}")


@boundaries.command("segment")
@click.argument("model")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--separator", default="|", show_default=True, help="Printed between segments.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: text and segment end offsets.")
@click.option("--device", default="cpu", show_default=True)
def segment(model, input_path, separator, as_json, device):
    """Segment every line of INPUT ('-': stdin) with MODEL (a train folder or an export folder)."""
    _need()
    from pathlib import Path

    from tokbench.assets.corpus import read_text
    from tokbench.boundaries.export import load_segmenter
    from tokbench.boundaries.metrics import Segmenter
    from tokbench.boundaries.train import load_model

    if (Path(model) / "segmenter.json").is_file():
        seg = load_segmenter(model, device)
    else:
        m, state = load_model(model, device)
        seg = Segmenter(m, set(state["priors"]["script_of"].values()), device=device)
    text = sys.stdin.read() if input_path == "-" else read_text(input_path)
    lines = text.splitlines()
    for line, ends in zip(lines, seg.ends(lines)):
        if as_json:
            click.echo(json.dumps({"text": line, "ends": ends}, ensure_ascii=False))
            continue
        data = line.encode("utf-8")
        click.echo(separator.join(data[a:b].decode("utf-8", errors="replace") for a, b in zip([0, *ends[:-1]], ends)))


@boundaries.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "-o", default="reports/boundaries-run.md", show_default=True,
              help="Markdown file; its .json, .html and .png siblings are written too.")
@click.option("--languages", default=DEFAULT_LANGS, show_default=True, help=LANG_HELP)
@click.option("--baselines", default="gpt2,llama3-hf,xlm-r", show_default=True,
              help="Comma-separated tokenizer.json assets measured on the same text ('' for none).")
@click.option("--english-bytes", default=1_000_000, show_default=True, type=click.IntRange(1, 10**10))
@click.option("--max-bytes", default=200_000, show_default=True, type=click.IntRange(1, 10**10),
              help="Held-out bytes per language for bits/byte and rates.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 1024))
def report_(runs, out, languages, baselines, english_bytes, max_bytes, device, threads):
    """Evaluate RUNS on the held-out splits; tables, a figure and HTML next to --out."""
    _need()
    from tokbench.boundaries.report import report

    _threads(threads)
    command = "tokbench boundaries report " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    r = report(runs, _splits(languages, english_bytes), out, baseline_names=_langs(baselines), device=device,
               command=command, max_bytes=max_bytes)
    for run in r["runs"]:
        p = run.get("parity", {})
        click.echo(f"{run['arm']}: mean |log2 S| {p.get('mean_abs_log2')}, English bytes/segment "
                   f"{p.get('english_bytes_per_segment')}")
    click.echo(f"-> {r['markdown']}")


@boundaries.command("export")
@click.argument("checkpoint")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--method", type=click.Choice(["unigram", "bpe"]), default="unigram", show_default=True,
              help="The static tokenizer distilled from the learned segments (byte-level Unigram or BPE).")
@click.option("--vocab-size", default=16000, show_default=True, type=click.IntRange(257, 1_000_000))
@click.option("--languages", default=DEFAULT_LANGS, show_default=True, help=LANG_HELP)
@click.option("--max-bytes", default=100_000, show_default=True, type=click.IntRange(1, 10**10),
              help="Bytes per language of train text to distil from (and of held-out text to score).")
@click.option("--affixes/--no-affixes", default=True, show_default=True,
              help="Unigram: also the segments seen once and their prefixes and suffixes (a segment the "
                   "vocabulary lacks splits at an affix, not into bytes); --no-affixes: segments seen twice.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if tokbench wrote it.")
def export_(checkpoint, out, method, vocab_size, languages, max_bytes, affixes, overwrite):
    """Write the standalone segmenter (safetensors + JSON) and a distilled tokenizer.json into OUT."""
    _need()
    from tokbench.boundaries.export import export

    r = export(checkpoint, out, _splits(languages, 1_000_000), vocab_size=vocab_size, max_bytes=max_bytes,
               method=method, affixes=affixes, overwrite=overwrite)
    click.echo(f"{method}, pre-tokenizer {r['pretokenizer']}, held-out F1 vs the learned segments "
               f"{r['heldout_f1_mean']:.3f} -> {out}")
