"""Training of the hourglass boundary models (`tokbench boundaries train`).

`train(TrainConfig(...), out)` trains one arm on the splits of tokbench.boundaries.data and writes into the
folder `out`:
- `checkpoint.pt`: model, optimiser, step, sampler and noise states, the configuration and the log;
  replaced atomically (temporary sibling + rename, fsync) every `checkpoint_every` steps and at the end, so
  a killed run leaves the last complete checkpoint, never a half-written one;
- `train.json`: the configuration, the priors and the log (loss, bits/byte, boundary rate per script).

A run on a folder that holds a checkpoint resumes it (`resume=True`) when the preset, arm and languages
agree, and refuses otherwise with one line.

Stabilisers: the predictor bias starts at logit(prior); the boundary loss weight ramps linearly from 0 to 1
over `boundary_warmup` steps; the training noise of the relaxed Bernoulli is annealed to 0
(`noise_anneal`), so the end of training draws the evaluation's deterministic boundaries; the training boundary rate per script is logged every `log_every` steps, and a
run fails fast (TokbenchError, the last checkpoint kept) when a script's rate leaves
[prior / COLLAPSE_FACTOR, min(0.99, prior * COLLAPSE_FACTOR)] for `collapse_patience` logs in a row after
the warm-up, or when the loss is not finite.

Calibration: at the end of a run (`calibrate=True`), each predictor route's evaluation threshold is set so
that its deterministic rate on windows of its training text is its prior (tokbench.boundaries.calibrate; the
result is in train.json under "calibration").

Batches: each sequence is a window of `seq_len` bytes of one language's train text; the language is drawn
uniformly, so a small language is seen as often as English. Where a window starts is the run's `windows`
policy (tokbench.boundaries.calibrate.POLICIES): `random` (any byte; the default, and what a checkpoint
without the setting did), `line` (at a newline byte or the text's start: the window reads "\n" + a line,
as the isolated-sentence evaluation does) or `mixed` (half and half). Calibration draws its windows under
the same policy, so that it sets the thresholds on the distribution the predictors were trained on.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tokbench import limits
from tokbench.boundaries.calibrate import WINDOWS, byte_array, calibrate, check_policy, draw_starts, line_starts
from tokbench.boundaries.data import DEFAULT_LANGUAGES, ENGLISH, Splits, load_splits
from tokbench.boundaries.model import HourglassLM, ModelConfig, n_parameters
from tokbench.boundaries.predictors import ARMS, LOSSES, prior_loss
from tokbench.boundaries.priors import check_prior, parallel_priors, parse_priors, words_priors
from tokbench.boundaries.scripts import dominant_group
from tokbench.errors import TokbenchError
from tokbench.outputs import atomic_write, output_folder

CHECKPOINT = "checkpoint.pt"
LOG = "train.json"
FORMAT = "tokbench-boundaries-checkpoint/1"
COLLAPSE_FACTOR = 4.0
ALL_ARMS = (*ARMS, "bytes")

# name -> (model settings, training settings)
PRESETS: dict[str, dict] = {
    # for tests: a few thousand parameters, seconds per 50 steps
    "test": {"model": dict(d_model=32, n_heads=2, d_ff=64, layers=(1, 1, 1), seq_len=64, d_predictor=32),
             "batch": 8, "lr": 3e-3},
    # about 1.3M parameters: the CPU preset of the issue (2 cores)
    "tiny": {"model": dict(d_model=128, n_heads=4, d_ff=512, layers=(2, 2, 2), seq_len=256, d_predictor=256),
             "batch": 16, "lr": 1e-3},
    # about 8M parameters: for a GPU (--device cuda)
    "small": {"model": dict(d_model=256, n_heads=4, d_ff=1024, layers=(2, 6, 2), seq_len=512, d_predictor=512),
              "batch": 32, "lr": 6e-4},
}


@dataclass
class TrainConfig:
    preset: str = "tiny"
    arm: str = "magnet"
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    steps: int = 1000
    prior_from: str = "parallel"  # parallel | words
    beta_en: float = 0.2
    priors: dict[str, float] = field(default_factory=dict)  # overrides, by script group or language
    loss: str = "binomial"
    hinge_s: float = 2.0
    boundary_warmup: int | None = None  # steps; None: 5 % of steps
    lr: float | None = None
    batch: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    collapse_patience: int = 5
    max_seconds: float | None = None  # stop (and checkpoint) after this much training time
    # the training noise scale is 1 until this fraction of the run, then falls linearly to 0 at the second
    # fraction (train/eval agreement, see predictors.py); (1, 1): no annealing
    noise_anneal: tuple[float, float] = (0.3, 0.8)
    # at the end, set each route's evaluation threshold so that its rate on training windows is its prior
    # (tokbench.boundaries.calibrate)
    calibrate: bool = True
    # where training (and calibration) windows start: random | line | mixed (tokbench.boundaries.calibrate)
    windows: str = "random"

    def check(self) -> "TrainConfig":
        if self.preset not in PRESETS:
            raise TokbenchError(f"unknown preset {self.preset!r}", fix=f"use one of {', '.join(PRESETS)}")
        if self.arm not in ALL_ARMS:
            raise TokbenchError(f"unknown arm {self.arm!r}", fix=f"use one of {', '.join(ALL_ARMS)}")
        if self.prior_from not in ("parallel", "words"):
            raise TokbenchError(f"unknown prior source {self.prior_from!r}", fix="use parallel or words")
        if self.loss not in LOSSES:
            raise TokbenchError(f"unknown boundary loss {self.loss!r}", fix=f"use one of {', '.join(LOSSES)}")
        check_policy(self.windows)
        check_prior(self.beta_en, "beta_en")
        self.priors = parse_priors(self.priors)
        limits.at_least("steps", self.steps, 1)
        limits.optional("boundary_warmup", self.boundary_warmup, 0)
        limits.optional("batch", self.batch, 1, 4096)
        limits.at_least("log_every", self.log_every, 1)
        limits.at_least("checkpoint_every", self.checkpoint_every, 1)
        limits.at_least("collapse_patience", self.collapse_patience, 1)
        limits.threads(self.threads, "threads")
        lo, hi = self.noise_anneal
        limits.real("noise_anneal start", lo, 0.0, 1.0)
        limits.real("noise_anneal end", hi, lo, 1.0)
        self.noise_anneal = (float(lo), float(hi))
        if self.lr is not None:
            limits.real("lr", self.lr, 0.0, 1.0, lo_open=True)
        if not self.languages:
            raise TokbenchError("no languages to train on", fix="pass --languages eng,fra,...")
        return self

    @property
    def warmup(self) -> int:
        return self.boundary_warmup if self.boundary_warmup is not None else max(1, self.steps // 20)


def derive_priors(cfg: TrainConfig, splits: Splits) -> dict:
    """{'languages': {lang: beta}, 'scripts': {group: beta}, 'script_of': {lang: group}, 'source': ...}."""
    if cfg.prior_from == "parallel":
        raw = parallel_priors({k: v for k, v in splits.parallel_train.items() if k in splits.train}, cfg.beta_en)
    else:
        raw = words_priors(splits.train)
    langs = {k: v["beta"] for k, v in raw["languages"].items() if k in splits.train}
    script_of = {k: (raw["languages"][k]["script"] if k in raw["languages"] else dominant_group(v[:20000]))
                 for k, v in splits.train.items()}
    scripts = dict(raw["scripts"])
    for name, value in cfg.priors.items():
        if name in script_of:
            langs[name] = value
        else:
            scripts[name] = value
    for lang, group in script_of.items():
        if group not in scripts:
            raise TokbenchError(f"no prior for script {group} (language {lang})",
                                fix=f"pass --prior {group}=RATE")
        langs.setdefault(lang, scripts[group])
    return {"source": cfg.prior_from, "beta_en": cfg.beta_en, "languages": langs,
            "scripts": {g: scripts[g] for g in sorted(set(script_of.values()))}, "script_of": script_of,
            "check": raw.get("check", {})}


def model_config(cfg: TrainConfig, priors: dict) -> ModelConfig:
    m = PRESETS[cfg.preset]["model"]
    if cfg.arm == "magnet":
        routes = sorted(priors["scripts"])
        route_priors = [priors["scripts"][g] for g in routes]
    else:
        routes = ["all"]
        base = priors["languages"].get(ENGLISH, cfg.beta_en)
        route_priors = [base if cfg.arm == "dtp" else float(np.mean(list(priors["languages"].values())))]
    return ModelConfig(**m, arm=cfg.arm, routes=routes, route_priors=route_priors)


def sequence_prior(cfg: TrainConfig | str, priors: dict, lang: str) -> float:
    """The prior a sequence of `lang` is pushed towards under the arm."""
    arm = cfg if isinstance(cfg, str) else cfg.arm
    if arm == "dtp":
        return priors["languages"].get(ENGLISH, priors["beta_en"])
    if arm == "priors":
        return priors["languages"][lang]
    return priors["scripts"][priors["script_of"][lang]]


class Sampler:
    """Windows of one language each, starting under `policy` (numpy Generator; its state goes into the
    checkpoint)."""

    def __init__(self, texts: dict[str, str], seq_len: int, seed: int, policy: str = "random"):
        self.langs = sorted(texts)
        self.policy = check_policy(policy)
        self.data, self.lines = {}, {}
        for k in self.langs:
            self.data[k] = byte_array(texts[k], seq_len + 1)
            if policy != "random":
                self.lines[k] = line_starts(self.data[k], seq_len + 1)
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[np.ndarray, list[str]]:
        langs = [self.langs[i] for i in self.rng.integers(0, len(self.langs), n)]
        out = np.empty((n, self.seq_len + 1), dtype=np.int64)
        for i, k in enumerate(langs):
            a = self.data[k]
            s = int(draw_starts(a, self.seq_len + 1, None, self.rng, self.policy, self.lines.get(k)))
            out[i] = a[s:s + self.seq_len + 1]
        return out, langs


def _save(out: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(out / CHECKPOINT, buf.getvalue(), fsync=True)
    summary = {k: state.get(k) for k in ("format", "config", "model_config", "priors", "step", "n_parameters",
                                         "log", "finished", "seconds", "calibration")}
    atomic_write(out / LOG, json.dumps(summary, indent=1, ensure_ascii=False))


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The checkpoint dict of a boundaries run (a folder or its checkpoint.pt); one-line errors."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise TokbenchError("no boundaries checkpoint here", path=p, fix="pass a folder written by "
                            "`tokbench boundaries train`")
    try:
        state = torch.load(p, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise TokbenchError(f"not a readable checkpoint ({type(exc).__name__})", path=p,
                            fix="pass a checkpoint.pt written by `tokbench boundaries train`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TokbenchError("not a tokbench boundaries checkpoint", path=p,
                            fix="pass a checkpoint.pt written by `tokbench boundaries train`")
    state["path"] = str(p)
    return state


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[HourglassLM, dict]:
    """(model in eval mode, checkpoint dict)."""
    state = load_checkpoint(path, device)
    model = HourglassLM(ModelConfig.from_dict(state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), state


def _check_resume(state: dict, cfg: TrainConfig, path: Path) -> None:
    old = {"windows": "random", **state["config"]}  # a checkpoint from before the policy drew random windows
    for key in ("preset", "arm", "languages", "prior_from", "loss", "windows"):
        if old[key] != getattr(cfg, key):
            raise TokbenchError(f"the checkpoint is from another run ({key} {old[key]!r}, not "
                                f"{getattr(cfg, key)!r})", path=path,
                                fix=f"pass --{key.replace('_', '-')} {old[key]} to resume it, or another folder")


def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = True, splits: Splits | None = None,
          progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or resume) one arm; returns the final summary (the contents of train.json). `stop_at`: stop
    (checkpointed) after that step, to be resumed later: the resumed run is the same run."""
    cfg = replace(cfg, languages=list(cfg.languages), priors=dict(cfg.priors)).check()
    out = Path(out)
    ckpt = out / CHECKPOINT
    state = None
    if ckpt.exists():
        state = load_checkpoint(ckpt, cfg.device)
        if not resume:
            raise TokbenchError("this folder already holds a checkpoint", path=out,
                                fix="pass --resume to continue it, or another folder")
        _check_resume(state, cfg, ckpt)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if splits is None:
        splits = load_splits(cfg.languages)
    priors = state["priors"] if state else derive_priors(cfg, splits)
    mcfg = ModelConfig.from_dict(state["model_config"]) if state else model_config(cfg, priors)
    preset = PRESETS[cfg.preset]
    batch, lr = cfg.batch or preset["batch"], cfg.lr or preset["lr"]
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = HourglassLM(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sampler = Sampler(splits.train, mcfg.seq_len, cfg.seed, cfg.windows)
    noise = torch.Generator(device=device)
    noise.manual_seed(cfg.seed + 1)
    log: list[dict] = []
    step, seconds = 0, 0.0
    calibration = None
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.rng.bit_generator.state = state["sampler"]
        noise.set_state(state["noise"].to("cpu") if device.type == "cpu" else state["noise"])
        log, step, seconds = state["log"], state["step"], state["seconds"]
    route_of = {lang: (mcfg.routes.index(priors["script_of"][lang]) if cfg.arm == "magnet" else 0)
                for lang in splits.train}
    sched = lambda s: lr * min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)

    def snapshot(finished: bool) -> dict:
        return {"format": FORMAT, "config": asdict(cfg), "model_config": mcfg.to_dict(), "priors": priors,
                "step": step, "n_parameters": n_parameters(model), "log": log, "finished": finished,
                "seconds": seconds, "calibration": calibration, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "sampler": sampler.rng.bit_generator.state, "noise": noise.get_state()}

    model.train()
    acc = {"loss": 0.0, "ce": 0.0, "bl": 0.0, "n": 0, "rate": {}, "count": {}}
    bad = 0
    bar = tqdm(total=cfg.steps, initial=step, desc=f"boundaries {cfg.arm}", unit="step", disable=not progress)
    try:
        while step < min(cfg.steps, stop_at or cfg.steps):
            if cfg.max_seconds is not None and seconds >= cfg.max_seconds:
                break
            t0 = time.perf_counter()
            xb, langs = sampler.batch(batch)
            x = torch.from_numpy(xb).to(device)
            route = torch.tensor([route_of[k] for k in langs], device=device)
            beta = torch.tensor([sequence_prior(cfg, priors, k) for k in langs], device=device)
            for g in opt.param_groups:
                g["lr"] = sched(step)
            model.noise_scale = _noise(cfg, step, seconds)
            o = model(x[:, :-1], route, generator=noise)
            ce = F.cross_entropy(o["logits"].reshape(-1, 256), x[:, 1:].reshape(-1))
            loss = ce
            bl = torch.zeros((), device=device)
            if o["boundaries"] is not None:
                bl = prior_loss(cfg.loss, o["boundaries"], beta, s=cfg.hinge_s)
                loss = ce + min(1.0, step / max(1, cfg.warmup)) * bl
            if not torch.isfinite(loss):
                raise TokbenchError(f"the loss is not finite at step {step}", path=out,
                                    fix="lower --lr; the last complete checkpoint is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            seconds += time.perf_counter() - t0
            acc["loss"] += loss.item()
            acc["ce"] += ce.item()
            acc["bl"] += bl.item()
            acc["n"] += 1
            if o["boundaries"] is not None:
                rates = o["boundaries"].detach().mean(-1).tolist()
                for k, r in zip(langs, rates):
                    g = priors["script_of"][k]
                    acc["rate"][g] = acc["rate"].get(g, 0.0) + r
                    acc["count"][g] = acc["count"].get(g, 0) + 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = max(1, acc["n"])
                rate = {g: acc["rate"][g] / acc["count"][g] for g in sorted(acc["rate"])}
                entry = {"step": step, "loss": acc["loss"] / n, "ce": acc["ce"] / n, "boundary_loss": acc["bl"] / n,
                         "bits_per_byte": acc["ce"] / n / math.log(2), "rate": rate, "seconds": round(seconds, 3),
                         "noise": round(model.noise_scale, 4)}
                log.append(entry)
                bar.set_postfix(bpb=f"{entry['bits_per_byte']:.3f}",
                                rate=",".join(f"{g[:3]}{r:.3f}" for g, r in rate.items()))
                acc = {"loss": 0.0, "ce": 0.0, "bl": 0.0, "n": 0, "rate": {}, "count": {}}
                if step > cfg.warmup and cfg.arm != "bytes":
                    bad = bad + 1 if _collapsed(cfg, priors, rate) else 0
                    if bad >= cfg.collapse_patience:
                        g, r = _collapsed(cfg, priors, rate)
                        raise TokbenchError(f"the boundary rate of {g} collapsed to {r:.4f} (prior "
                                            f"{_script_prior(cfg, priors, g):.4f}) at step {step}", path=out,
                                            fix="lower --lr, lengthen --boundary-warmup or use --loss hinge; "
                                            "the last complete checkpoint is kept")
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                _save(out, snapshot(False))
    finally:
        bar.close()
    if cfg.calibrate and model.shortens:
        calibration = calibrate(model, *calibration_targets(cfg.arm, priors, splits.train), seed=cfg.seed,
                                policy=cfg.windows)
    _save(out, snapshot(step >= cfg.steps))
    return json.loads((out / LOG).read_text(encoding="utf-8"))


def calibration_targets(arm: str, priors: dict, train_texts: dict[str, str]) -> tuple[dict, dict]:
    """(route -> training texts, route -> target rate) for tokbench.boundaries.calibrate: a script's
    prior for MAGNET's routes; the English prior (dtp) or the mean of the languages' priors (priors) for
    the one predictor of the other arms (languages weigh equally, as in training)."""
    langs = [k for k in sorted(train_texts) if k in priors["script_of"]]
    if arm == "magnet":
        groups = sorted({priors["script_of"][k] for k in langs})
        texts = {g: [train_texts[k] for k in langs if priors["script_of"][k] == g] for g in groups}
        return texts, {g: priors["scripts"][g] for g in groups}
    target = float(np.mean([sequence_prior(arm, priors, k) for k in langs]))
    return {"all": [train_texts[k] for k in langs]}, {"all": target}


def recalibrate(checkpoint: str | os.PathLike, out: str | os.PathLike, splits: Splits | None = None, *,
                languages: list[str] | None = None, english_train_bytes: int = 4_000_000,
                windows: int = WINDOWS, starts: str | None = None, overwrite: bool = False) -> dict:
    """Calibrate a trained run again (e.g. one trained with calibrate=False, or with more windows) into the
    folder `out` (checkpoint.pt and train.json, written atomically; the input run is not modified). Without
    `splits`, the training text of `languages` (default: the run's own) is loaded. `starts`: the window
    policy of the calibration windows (default: the run's training policy). Returns the new train.json."""
    limits.at_least("windows", windows, 1, 1_000_000)
    model, state = load_model(checkpoint)
    if not model.shortens:
        raise TokbenchError("the byte-level arm has no boundary predictor to calibrate", path=state["path"],
                            fix="calibrate a dtp, priors or magnet run")
    if splits is None:
        splits = load_splits(languages or state["config"]["languages"], english_train_bytes=english_train_bytes)
    texts, targets = calibration_targets(state["config"]["arm"], state["priors"], splits.train)
    calibration = calibrate(model, texts, targets, windows=windows, seed=state["config"]["seed"],
                            policy=starts or state["config"].get("windows", "random"))
    new = {**state, "model": model.state_dict(), "calibration": calibration}
    new.pop("path", None)
    with output_folder(out, overwrite, [state["path"]]) as tmp:
        _save(Path(tmp), new)
    return json.loads((Path(out) / LOG).read_text(encoding="utf-8"))


def _noise(cfg: TrainConfig, step: int, seconds: float) -> float:
    """The noise scale at this point of the run (fraction done: of the steps or of max_seconds)."""
    done = step / cfg.steps
    if cfg.max_seconds:
        done = max(done, seconds / cfg.max_seconds)
    lo, hi = cfg.noise_anneal
    if done <= lo or hi >= 1.0 and lo >= 1.0:
        return 1.0
    return max(0.0, 1.0 - (done - lo) / max(1e-9, hi - lo))


def _script_prior(cfg: TrainConfig, priors: dict, group: str) -> float:
    if cfg.arm == "dtp":
        return priors["languages"].get(ENGLISH, priors["beta_en"])
    if cfg.arm == "priors":
        vals = [priors["languages"][k] for k, g in priors["script_of"].items() if g == group]
        return float(np.mean(vals))
    return priors["scripts"][group]


def _collapsed(cfg: TrainConfig, priors: dict, rate: dict):
    """(group, rate) of the first script whose rate left the band around its prior, else None."""
    for g, r in rate.items():
        p = _script_prior(cfg, priors, g)
        if r < p / COLLAPSE_FACTOR or r > min(0.99, p * COLLAPSE_FACTOR):
            return g, r
    return None


__all__ = ["PRESETS", "TrainConfig", "train", "load_checkpoint", "load_model", "derive_priors", "model_config",
           "sequence_prior", "Sampler", "CHECKPOINT", "ALL_ARMS", "calibration_targets",
           "recalibrate"]
