"""Seeded random strings for differential fuzzing of the encoders (tests/test_text_policy.py and
benchmarks/fuzz_encode.py): random Unicode of every plane including control characters and lone
surrogates, long runs, mixed scripts, whitespace-heavy text, contractions and digit runs."""
from __future__ import annotations

import random

# characters the split patterns tell apart: letters of many scripts and cases, marks, numbers,
# punctuation / symbols / emoji, whitespace of many kinds, apostrophes
SCRIPTS = "aZsStTrReEvVmMlLdDſKéßǅʰЖжΩω中日한ععहक่กאבԱᏣⴰꙮ𝔘𐍈"
NUMBERS = "0123456789٣४½²Ⅻ①"
MARKS = "\u0301\u0308\u094d\u0e48\u200d\u20e3\ufe0f"
PUNCT = "''.,;:!?-_/\\\"()[]{}<>@#$%^&*+=~`|«»“”…—😀🎉👩\u00ad\ufeff"
SPACES = " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2009\u200b\u2028\u2029\u202f\u205f\u3000\u0085"
CONTROLS = "".join(map(chr, range(0, 32))) + "\x7f\x80\x9f"
SURROGATES = "\ud800\udbff\udc00\udfff\ud83d\ude00"  # lone halves; "\ud83d\ude00" side by side is a pair
PIECES = ["'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'d", "'D", "''", " '", "\r\n", "\n\n", "  ",
          "123456", " the", "ing", "http://x.y/z?a=1", "<|endoftext|>", "\t\t"]
POOL = SCRIPTS + NUMBERS + MARKS + PUNCT + SPACES + CONTROLS + SURROGATES


def _any_codepoint(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return chr(rng.randrange(0x20, 0x3000))
    if r < 0.8:
        return chr(rng.randrange(0, 0x110000))  # every plane, surrogates and unassigned included
    return chr(rng.randrange(0xD800, 0xE000))


def random_string(rng: random.Random) -> str:
    """One string of one of several shapes (length 0..~300; every 64th string a long run)."""
    shape = rng.randrange(8)
    n = rng.randrange(0, 40)
    if shape == 0:
        return "".join(_any_codepoint(rng) for _ in range(n))
    if shape == 1:
        return "".join(rng.choice(POOL) for _ in range(n))
    if shape == 2:
        return "".join(rng.choice(PIECES) if rng.random() < 0.4 else rng.choice(POOL) for _ in range(n))
    if shape == 3:  # whitespace-heavy
        return "".join(rng.choice(SPACES + "ab1.'") for _ in range(n))
    if shape == 4:  # words of mixed scripts separated by spaces
        return " ".join("".join(rng.choice(SCRIPTS) for _ in range(rng.randrange(1, 8)))
                        for _ in range(rng.randrange(1, 8)))
    if shape == 5:  # digits and number-like runs
        return "".join(rng.choice(NUMBERS + ".,- ") for _ in range(n))
    if shape == 6 and rng.random() < 0.25:  # a long run of one character (or a short cycle)
        unit = "".join(rng.choice(POOL) for _ in range(rng.randrange(1, 3)))
        return unit * rng.randrange(50, 150) + rng.choice(["", " ", "x", "\n"])
    return "".join(rng.choice(CONTROLS + SURROGATES + SPACES + "ab") for _ in range(n))


def random_strings(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [random_string(rng) for _ in range(count)]
