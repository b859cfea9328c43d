"""How a vocabulary splits numbers, read from the tokens it has.

- "single": no token holds more than one digit (Llama 2, Mistral, Qwen, SmolLM2);
- "groups-of-3": digit tokens of 1..3 digits, all 1,000 three-digit strings present and nothing
  longer (Llama 3, cl100k/o200k-style \\p{N}{1,3} splitting);
- "none": digits are merged like any other text, by corpus statistics (GPT-2, BERT, XLM-R).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from tokbench.vocab.vocabulary import Kind, Vocabulary



@dataclass(frozen=True)
class NumberPolicy:
    policy: str  # "single" | "groups-of-3" | "none"
    max_digits: int  # longest all-digit token (0 if none)
    digit_tokens: int  # tokens made only of ASCII digits (after the word-start marker)
    three_digit_coverage: int  # how many of the 1,000 three-digit strings are tokens

    def to_dict(self) -> dict:
        return asdict(self)


def digit_string(vocab: Vocabulary, i: int) -> bytes | None:
    """The digits of token i if it is an all-digit token (word-start marker removed)."""
    key = vocab.key_list[i]
    if key is None or vocab.kinds[i] is not Kind.NORMAL:
        return None
    data = key[0]
    return data if data.isdigit() else None  # bytes.isdigit: ASCII digits only


def is_numeric(vocab: Vocabulary, i: int) -> bool:
    """True for tokens made of digits, optionally with the word-start space."""
    return digit_string(vocab, i) is not None


def number_policy(vocab: Vocabulary) -> NumberPolicy:
    lengths: list[int] = []
    three = set()
    for i in range(len(vocab)):
        d = digit_string(vocab, i)
        if d is None:
            continue
        lengths.append(len(d))
        if len(d) == 3:
            three.add(d)
    longest = max(lengths, default=0)
    if longest <= 1:
        policy = "single"
    elif longest == 3 and len(three) == 1000:
        policy = "groups-of-3"
    else:
        policy = "none"
    return NumberPolicy(policy, longest, len(lengths), len(three))
