"""Vocabulary from a tiktoken rank file (`<base64 token> <rank>` per line)."""
from __future__ import annotations

import base64
import binascii
from pathlib import Path

from tokbench.errors import TokbenchError
from tokbench.vocab.patterns import PATTERNS, resolve_pattern
from tokbench.vocab.vocabulary import Kind, SegmenterSpec, Style, Vocabulary, is_placeholder

_WHISPER_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th "
    "ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr "
    "pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt "
    "haw ln ha ba jw su"
).split()


def _llama3_specials(start: int) -> dict[str, int]:
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
             "<|python_tag|>"]
    out = {t: start + i for i, t in enumerate(named)}
    for j in range(256 - len(named)):
        out[f"<|reserved_special_token_{j + 2}|>"] = start + len(named) + j
    return out


def _whisper_specials(start: int) -> dict[str, int]:
    names = ["<|endoftext|>", "<|startoftranscript|>"]
    names += [f"<|{lang}|>" for lang in _WHISPER_LANGUAGES]
    names += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
              "<|nocaptions|>", "<|notimestamps|>"]
    names += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    return {t: start + i for i, t in enumerate(names)}


def builtin_profile(n_ranks: int, filename: str) -> tuple[str | None, dict[str, int]]:
    """(pattern name, specials) for the rank files tokbench knows by their size."""
    if n_ranks == 50256:
        return "gpt2", {"<|endoftext|>": 50256}
    if n_ranks == 50257 and "multilingual" in filename:
        return "gpt2", _whisper_specials(50257)
    if n_ranks == 128000:
        return "llama3", _llama3_specials(128000)
    return None, {}


def read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    try:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"line {lineno} is not '<base64> <rank>'")
                ranks[base64.b64decode(parts[0])] = int(parts[1])  # lenient, as tiktoken
    except (ValueError, binascii.Error) as exc:
        raise TokbenchError(f"not a tiktoken rank file ({exc})", path=path,
                            fix="pass a .tiktoken file of '<base64 token> <rank>' lines") from None
    if not ranks:
        raise TokbenchError("empty tiktoken rank file", path=path, fix="pass a non-empty rank file")
    return ranks


def load_tiktoken(path: Path, pattern: str | None = None,
                  special_tokens: dict[str, int] | None = None) -> Vocabulary:
    ranks = read_ranks(path)
    default_pattern, default_specials = builtin_profile(len(ranks), Path(path).name)
    specials = dict(default_specials if special_tokens is None else special_tokens)
    size = max(list(ranks.values()) + list(specials.values())) + 1
    tokens: list[str | None] = [None] * size
    token_bytes: list[bytes | None] = [None] * size
    kinds = [Kind.UNUSED] * size
    for b, r in ranks.items():
        tokens[r] = b.decode("utf-8", errors="backslashreplace")
        if b:  # Whisper's multilingual file has one empty token ("=") that BPE never produces
            token_bytes[r] = b
            kinds[r] = Kind.NORMAL
    for content, i in specials.items():
        tokens[i] = content
        token_bytes[i] = None
        kinds[i] = Kind.UNUSED if is_placeholder(content) else Kind.SPECIAL  # <|reserved_special_token_N|>
    word_start = [b is not None and len(b) > 1 and b.startswith(b" ")
                  for b, k in zip(token_bytes, kinds)]
    pat = resolve_pattern(pattern) if pattern is not None else (
        PATTERNS[default_pattern] if default_pattern else None)
    ids = list(range(size))
    return Vocabulary(
        source=str(path), family="bpe", format="tiktoken", style=Style.RAW, tokens=tokens,
        token_bytes=token_bytes, kinds=kinds, word_start=word_start,
        segmenter_spec=SegmenterSpec("bpe_ranks", units="bytes", ranks=ids, ignore_merges=True), pattern=pat,
    )
