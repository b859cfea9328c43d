"""Export of a trained boundary model (`tokbench boundaries export`).

The output folder holds:
- `segmenter.safetensors` + `segmenter.json`: the byte embedding, pre-layers and boundary predictor(s) (the
  rest of the hourglass is not needed to segment), the model configuration, the predictor routes and the
  scripts trained on. `load_segmenter(folder)` runs it on CPU (tokbench.boundaries.metrics.Segmenter):
  the same boundaries as the full model, bit for bit.
- `tokenizer.json`: a static byte-level BPE distilled from the learned segments. tokbench's BPE trainer
  (tokbench.bpe.train) counts every learned segment of the training text as one piece, so merges build the
  frequent segments; the pre-tokenizer is the candidate split pattern (PRETOKENIZERS) whose tokens agree
  best with the learned segments on that training text. `tokenizers` and `transformers` load it unchanged.
- `export.json`: settings and the agreement (boundary F1) of the static tokenizer with the learned
  segmenter on held-out text, per language.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from tokbench.boundaries.metrics import Segmenter, boundary_f1
from tokbench.boundaries.model import ModelConfig, PreSegmenter
from tokbench.bpe.encoding import bytelevel_bytes
from tokbench.bpe.train import count_texts, new_counter, train_counts
from tokbench.errors import TokbenchError
from tokbench.outputs import output_folder
from tokbench.vocab.patterns import PATTERNS

FORMAT = "tokbench-boundaries-segmenter/1"
PRETOKENIZERS = {
    "whitespace": PATTERNS["whitespace"],
    "gpt2": PATTERNS["gpt2"],
    # letters with their combining marks (Indic words are not split at vowel signs)
    "words": r""" ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+""",
}


def load_segmenter(folder: str | os.PathLike, device: str = "cpu") -> Segmenter:
    """The exported segmenter of `folder` as a Segmenter (eval mode)."""
    folder = Path(folder)
    cfg_path = folder / "segmenter.json"
    if not cfg_path.is_file():
        raise TokbenchError("no segmenter.json here", path=folder,
                            fix="pass a folder written by `tokbench boundaries export`")
    meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise TokbenchError("not a tokbench boundaries segmenter", path=cfg_path,
                            fix="pass a folder written by `tokbench boundaries export`")
    model = PreSegmenter(ModelConfig.from_dict(meta["model_config"])).to(device)
    model.load_state_dict(load_file(str(folder / "segmenter.safetensors"), device=device))
    return Segmenter(model, meta["scripts"], device=device)


def token_ends(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Byte end offsets of the tokens of a byte-level HF `tokenizers.Tokenizer` per text."""
    out = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        pos, ends = 0, []
        for tok in enc.tokens:
            b = bytelevel_bytes(tok)
            pos += len(b) if b is not None else len(tok.encode("utf-8"))
            ends.append(pos)
        out.append(ends)
    return out


def _lines(texts: dict[str, str], max_bytes: int) -> dict[str, list[str]]:
    return {k: [x for x in v[:max_bytes].split("\n") if x.strip()] for k, v in texts.items()}


def distill(segmenter: Segmenter, train_texts: dict[str, str], *, vocab_size: int = 8000,
            max_bytes: int = 100_000, progress: bool = False):
    """(HF Tokenizer, tokenizer.json dict, {candidate: train F1}): BPE on the learned segments of the train
    text (each language's first max_bytes), with the best agreeing pre-tokenizer."""
    from tokenizers import Tokenizer

    lines = [x for v in _lines(train_texts, max_bytes).values() for x in v]
    ends = segmenter.ends(lines)
    pieces = []
    for text, e in zip(lines, ends):
        data = text.encode("utf-8")
        starts = [0, *e[:-1]]
        pieces.extend(data[a:b].decode("utf-8", errors="ignore") for a, b in zip(starts, e))
    counter = new_counter(None)
    count_texts((p for p in pieces if p), counter)
    trained = train_counts(counter, vocab_size, pattern=None, min_frequency=2, progress=progress)
    scores, best = {}, None
    for name, regex in PRETOKENIZERS.items():
        trained.pattern = regex
        tok = Tokenizer.from_str(json.dumps(trained.tokenizer_json()))
        scores[name] = boundary_f1(token_ends(tok, lines), ends)["f1"]
        if best is None or scores[name] > scores[best]:
            best = name
    trained.pattern = PRETOKENIZERS[best]
    data = trained.tokenizer_json()
    return Tokenizer.from_str(json.dumps(data)), data, scores, best


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, splits, *, vocab_size: int = 8000,
           max_bytes: int = 100_000, overwrite: bool = False, progress: bool = False) -> dict:
    """Write the segmenter and the distilled tokenizer.json into `out` (atomically); returns export.json."""
    from tokbench.boundaries.train import load_model

    model, state = load_model(checkpoint)
    if not model.shortens:
        raise TokbenchError("the byte-level arm has no boundary predictor to export", path=state["path"],
                            fix="export a dtp, priors or magnet run")
    scripts = sorted(set(state["priors"]["script_of"].values()))
    seg = Segmenter(model, scripts)
    tok, data, scores, best = distill(seg, splits.train, vocab_size=vocab_size, max_bytes=max_bytes,
                                      progress=progress)
    heldout = {}
    for lang, lines in sorted(_lines(splits.test, max_bytes).items()):
        if lang in state["priors"]["script_of"] and lines:
            heldout[lang] = boundary_f1(token_ends(tok, lines), seg.ends(lines))
    all_f1 = [v["f1"] for v in heldout.values()]
    report = {"checkpoint": state["path"], "arm": state["config"]["arm"], "preset": state["config"]["preset"],
              "step": state["step"], "vocab_size": vocab_size, "pretokenizer": best, "train_f1": scores,
              "heldout_f1": heldout, "heldout_f1_mean": sum(all_f1) / len(all_f1) if all_f1 else None}
    meta = {"format": FORMAT, "model_config": model.cfg.to_dict(), "scripts": scripts,
            "routes": list(model.cfg.routes), "priors": state["priors"], "source": state["path"]}
    with output_folder(out, overwrite, [checkpoint]) as tmp:
        params = {k: v.contiguous() for k, v in model.segmenter_parameters().items()}
        save_file(params, str(Path(tmp) / "segmenter.safetensors"))
        (Path(tmp) / "segmenter.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        (Path(tmp) / "export.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return report


__all__ = ["export", "load_segmenter", "distill", "token_ends", "PRETOKENIZERS", "FORMAT"]
