"""Export of a trained boundary model (`tokbench boundaries export`).

The output folder holds:
- `segmenter.safetensors` + `segmenter.json`: the byte embedding, pre-layers and boundary predictor(s) (the
  rest of the hourglass is not needed to segment), the model configuration, the predictor routes and the
  scripts trained on. `load_segmenter(folder)` runs it on CPU (tokbench.boundaries.metrics.Segmenter):
  the same boundaries as the full model, bit for bit.
- `tokenizer.json`: a static tokenizer distilled from the learned segments of the training text, one of
  - `unigram` (the default): a byte-level Unigram model whose vocabulary is the learned segments plus the
    256 bytes, each scored by the log of its relative frequency; Viterbi then picks the most probable split
    of each piece, which reproduces a segment wherever the learned segmenter draws it, across spaces
    included (the segments need not be word-aligned). With `affixes` (the default) the vocabulary also
    holds the prefixes and suffixes of the segments (seen at least twice, scored AFFIX_WEIGHT times their
    count, so a whole segment wins), and segments seen once: a segment the vocabulary lacks is then split
    into a prefix and a suffix, each ending or starting at a learned boundary, rather than into bytes, each
    byte a false boundary. Without it: the segments seen twice or more (the export of stop 22). The
    vocabulary keeps the `vocab_size - 256` entries seen most often;
  - `bpe`: a byte-level BPE trained by tokbench's trainer (tokbench.bpe.train) on the learned segments
    counted as pieces, so merges build the frequent segments.
  The pre-tokenizer is the candidate (PRETOKENIZERS for bpe, UNIGRAM_SPLITS for unigram) whose tokens agree
  best with the learned segments on that training text. `tokenizers` and `transformers` load it unchanged.
- `export.json`: settings and the agreement (boundary F1) of the static tokenizer with the learned
  segmenter on held-out text, per language.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from collections import Counter
from typing import Mapping, Sequence

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


# byte-level pre-tokenizers for the Unigram model: the whole line as one piece, or GPT-2's split
UNIGRAM_SPLITS = {"line": False, "gpt2": True}
METHODS = ("unigram", "bpe")
UNSEEN_BYTE = 0.5  # pseudo-count of a byte never seen as a segment of its own
AFFIX_WEIGHT = 1e-4  # an affix's score counts this fraction of its occurrences: whole segments come first


def _learned(segmenter: Segmenter, train_texts: dict[str, str], max_bytes: int):
    """(train lines, their learned end offsets, the learned segments as bytes)."""
    lines = [x for v in _lines(train_texts, max_bytes).values() for x in v]
    ends = segmenter.ends(lines)
    pieces = []
    for text, e in zip(lines, ends):
        data = text.encode("utf-8")
        pieces.extend(data[a:b] for a, b in zip([0, *e[:-1]], e))
    return lines, ends, pieces


def _affix_counts(counts: Mapping[bytes, int]) -> Counter:
    """Occurrences of the proper prefixes and suffixes (2 bytes or more) of the segments in `counts`."""
    out: Counter = Counter()
    for p, c in counts.items():
        for i in range(2, len(p)):
            out[p[:i]] += c
            out[p[len(p) - i:]] += c
    return out


def unigram_json(pieces: Sequence[bytes], vocab_size: int, use_regex: bool, affixes: bool = True) -> dict:
    """A byte-level Unigram tokenizer.json: the 256 bytes and the vocab_size - 256 most frequent multi-byte
    segments of `pieces` (without `affixes`: seen at least twice; with it: seen once or more, and their
    prefixes and suffixes seen twice or more, weighted AFFIX_WEIGHT), scored log(weighted count / total)."""
    import math

    from tokbench.bpe.encoding import bytes_to_unicode

    if vocab_size < 257:
        raise TokbenchError(f"a Unigram vocabulary of {vocab_size} holds no segment beyond the 256 bytes",
                            fix="pass --vocab-size 1000 or more")
    table = bytes_to_unicode()
    counts = Counter(pieces)
    # (occurrences, 1 for an affix, piece, weighted count): the most frequent first, a segment before an affix
    multi = [(c, 0, p, c) for p, c in counts.items() if len(p) > 1 and c >= (1 if affixes else 2)]
    if affixes:
        multi += [(c, 1, p, c * AFFIX_WEIGHT) for p, c in _affix_counts(counts).items()
                  if c >= 2 and p not in counts]
    multi.sort(key=lambda x: (-x[0], x[1], x[2]))
    kept = [(w, p) for _, _, p, w in multi[:vocab_size - 256]]
    singles = [(counts.get(bytes([b]), 0) or UNSEEN_BYTE, bytes([b])) for b in range(256)]
    total = sum(c for c, _ in kept) + sum(c for c, _ in singles)
    vocab = [["".join(table[b] for b in p), math.log(c / total)] for c, p in singles + kept]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": use_regex}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": byte_level, "post_processor": None, "decoder": {**byte_level, "use_regex": False},
            "model": {"type": "Unigram", "unk_id": None, "vocab": vocab, "byte_fallback": False}}


def _lines(texts: dict[str, str], max_bytes: int) -> dict[str, list[str]]:
    return {k: [x for x in v[:max_bytes].split("\n") if x.strip()] for k, v in texts.items()}


def distill(segmenter: Segmenter, train_texts: dict[str, str], *, vocab_size: int = 16000,
            max_bytes: int = 100_000, method: str = "unigram", affixes: bool = True, progress: bool = False):
    """(HF Tokenizer, tokenizer.json dict, {candidate: train F1}, best candidate): the static tokenizer of
    `method` distilled from the learned segments of the train text (each language's first max_bytes), with
    the pre-tokenizer that agrees best with them (`affixes`: see unigram_json)."""
    from tokenizers import Tokenizer

    if method not in METHODS:
        raise TokbenchError(f"unknown distillation method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    lines, ends, pieces = _learned(segmenter, train_texts, max_bytes)
    if method == "unigram":
        candidates = ((name, unigram_json(pieces, vocab_size, r, affixes)) for name, r in UNIGRAM_SPLITS.items())
    else:
        counter = new_counter(None)
        count_texts((p.decode("utf-8", errors="ignore") for p in pieces if p), counter)
        trained = train_counts(counter, vocab_size, pattern=None, min_frequency=2, progress=progress)

        def bpe_candidates():
            for name, regex in PRETOKENIZERS.items():
                trained.pattern = regex
                yield name, trained.tokenizer_json()

        candidates = bpe_candidates()
    scores, best, best_data = {}, None, None
    for name, data in candidates:
        tok = Tokenizer.from_str(json.dumps(data))
        scores[name] = boundary_f1(token_ends(tok, lines), ends)["f1"]
        if best is None or scores[name] > scores[best]:
            best, best_data = name, data
    return Tokenizer.from_str(json.dumps(best_data)), best_data, scores, best


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, splits, *, vocab_size: int = 16000,
           max_bytes: int = 100_000, method: str = "unigram", affixes: bool = True, overwrite: bool = False,
           progress: bool = False) -> dict:
    """Write the segmenter and the distilled tokenizer.json into `out` (atomically); returns export.json."""
    from tokbench.boundaries.train import load_model

    model, state = load_model(checkpoint)
    if not model.shortens:
        raise TokbenchError("the byte-level arm has no boundary predictor to export", path=state["path"],
                            fix="export a dtp, priors or magnet run")
    scripts = sorted(set(state["priors"]["script_of"].values()))
    seg = Segmenter(model, scripts)
    tok, data, scores, best = distill(seg, splits.train, vocab_size=vocab_size, max_bytes=max_bytes,
                                      method=method, affixes=affixes, progress=progress)
    heldout = {}
    for lang, lines in sorted(_lines(splits.test, max_bytes).items()):
        if lang in state["priors"]["script_of"] and lines:
            heldout[lang] = boundary_f1(token_ends(tok, lines), seg.ends(lines))
    all_f1 = [v["f1"] for v in heldout.values()]
    report = {"checkpoint": state["path"], "arm": state["config"]["arm"], "preset": state["config"]["preset"],
              "step": state["step"], "method": method, "affixes": affixes if method == "unigram" else None,
              "vocab_size": vocab_size, "pretokenizer": best, "train_f1": scores,
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


__all__ = ["export", "load_segmenter", "distill", "token_ends", "unigram_json", "PRETOKENIZERS", "UNIGRAM_SPLITS",
           "METHODS", "FORMAT"]
