"""Known pre-tokenizer split patterns (regex syntax of the `regex` / fancy-regex family)."""
from __future__ import annotations

from tokbench.errors import TokbenchError

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"

PATTERNS: dict[str, str] = {
    # GPT-2 / r50k / Whisper
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # Llama 3 = cl100k family: numbers in groups of up to 3 digits
    "llama3": _CONTRACTIONS + r"""|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    # Qwen2 / Qwen2.5 / Qwen3: single digits
    "qwen2": _CONTRACTIONS + r"""|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    # o200k-style: case-aware words with attached contractions
    "o200k": r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
             r"""|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
             r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    # words with their leading space; whitespace runs on their own
    "whitespace": r""" ?\S+|\s+(?!\S)|\s+""",
}
PATTERNS["cl100k"] = PATTERNS["llama3"]
NO_SPLIT = "none"


def resolve_pattern(name_or_regex: str | None) -> str | None:
    """A built-in pattern by name, "none" (no split) -> None, anything else is taken as a regex."""
    if name_or_regex is None or name_or_regex == NO_SPLIT:
        return None
    if name_or_regex in PATTERNS:
        return PATTERNS[name_or_regex]
    if name_or_regex.isidentifier() and len(name_or_regex) < 16:
        raise TokbenchError(f"unknown split pattern name {name_or_regex!r}",
                            fix=f"use one of {', '.join(sorted(PATTERNS))}, none, or a regex")
    return name_or_regex
