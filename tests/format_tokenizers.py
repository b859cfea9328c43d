"""Tokenizers in the formats and conventions real models ship with, built inside the tests.

- `gemma_style`: a BPE `tokenizer.json` trained by `tokenizers`' own BpeTrainer on real corpora,
  laid out like Gemma's: a `Replace(" ", "▁")` normalizer, no Metaspace pre-tokenizer and no dummy
  prefix (so whitespace runs such as "▁▁▁▁" are tokens and appear in the merges), byte fallback with
  a literal "\\t" token in place of <0x09>, `<unusedN>` placeholders and `<start_of_turn>`-style
  markup in the model vocabulary, and non-special added tokens that are model tokens too.
- `write_tekken`: Mistral's `tekken.json` layout around real tiktoken ranks.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

# The split pattern that Mistral NeMo's tekken.json carries (o200k-like, single digits).
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                  r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                  r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
GEMMA_UNUSED = [f"<unused{i}>" for i in range(4)]
GEMMA_CONTROL = ["<start_of_turn>", "<end_of_turn>", "<mask>"]


def gemma_style(folder: Path, train_texts: list[str], vocab_size: int = 1500) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    # Gemma's vocabulary has "\t" where <0x09> would be
    reserved = GEMMA_SPECIALS + GEMMA_UNUSED + GEMMA_CONTROL + [f"<0x{b:02X}>" for b in range(256) if b != 9]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(reserved), special_tokens=reserved,
                                  initial_alphabet=["\t"], limit_alphabet=400, show_progress=False)
    tok.train_from_iterator(train_texts, trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    added = []
    for t in data["added_tokens"]:
        if t["content"].startswith("<0x"):
            continue  # byte-fallback pieces are plain vocabulary entries, as in Gemma
        t["special"] = t["content"] in GEMMA_SPECIALS
        added.append(t)
    # whitespace runs are added tokens too, non-special, matched on the raw text (Gemma)
    for content, i in sorted(vocab.items(), key=lambda x: x[1]):
        if len(content) > 1 and set(content) == {"\u2581"}:
            added.append({"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": False})
    data["added_tokens"] = added
    data["pre_tokenizer"] = None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
         "pad_token": "<pad>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False}), encoding="utf-8")
    return path


def write_tekken(path: Path, ranks: dict[bytes, int], *, inner: int, num_special: int = 1000,
                 specials: list[str] | None = None, version: str = "v7", pattern: str = TEKKEN_PATTERN) -> Path:
    """A tekken.json over `ranks` whose first `inner` ranks are used (default_vocab_size = inner +
    num_special); `specials` listed (omitted from the file when None, as in files before v7)."""
    entries = [{"rank": r, "token_bytes": base64.b64encode(b).decode("ascii"),
                "token_str": b.decode("utf-8") if b.isascii() else None}
               for b, r in sorted(ranks.items(), key=lambda x: x[1])]
    data = {"config": {"pattern": pattern, "num_vocab_tokens": len(entries),
                       "default_vocab_size": inner + num_special, "default_num_special_tokens": num_special,
                       "version": version},
            "vocab": entries}
    if specials is not None:
        data["special_tokens"] = [{"rank": i, "token_str": t, "is_control": True} for i, t in enumerate(specials)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
