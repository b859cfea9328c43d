"""Keep policies: which tokens of a batch stay in their original tokens, as extra cuts in the boundary mask.

A model copies a word from its context (induction) only if the word's original token sequence is there: a
prefix that holds a word only as one merged token makes the continuation's copy of it expensive. A keep policy
therefore sets more cuts in the mask before merging (the kernel itself is unchanged):

    last-occurrence   in each sequence, the last occurrence of every segment (a word / pre-token of the
                      boundary mode: the ids between two cuts) keeps all its internal cuts, so at least one
                      copy of every word of the sequence stays spelled out; earlier occurrences may merge.
    last-word         the same for the segments that hold a letter only: punctuation runs (WikiText's ` @-@`)
                      and digit runs may merge in every occurrence.
    last-punct        the same for the segments without a letter or digit only (punctuation and symbol runs
                      such as ` @-@`, ` @,@`, ` (`): words and numbers may merge in every occurrence.
    recent:N          the last N base tokens of each sequence are never merged.
    none              no extra cuts (the default).

One `last-*` policy and `recent:N` combine with '+': `last-occurrence+recent:32`. The word level a % budget
refers to stays the mode's own (without the policy); the policy's exhaustion point is `keep_level` (the number
of cuts after it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokbench.errors import TokbenchError

LAST = ("occurrence", "word", "punct")
_FIX = ("write none, last-occurrence, last-word, last-punct, recent:N (N a whole number >= 1), or one last-* "
        "and recent:N joined by '+', e.g. last-occurrence+recent:32")


@dataclass(frozen=True)
class KeepPolicy:
    """A parsed keep policy: `last` ('' off, or one of LAST: which segments keep their last occurrence spelled
    out) and `recent` (0 off, or the number of final base tokens per sequence that never merge)."""

    last: str = ""
    recent: int = 0

    @property
    def active(self) -> bool:
        return bool(self.last) or self.recent > 0

    def __str__(self) -> str:
        parts = ([f"last-{self.last}"] if self.last else []) + ([f"recent:{self.recent}"] if self.recent else [])
        return "+".join(parts) or "none"

    def keeps(self, text: str) -> bool:
        """Whether the last occurrence of a segment with this text stays spelled out."""
        if self.last == "occurrence":
            return True
        if self.last == "word":
            return any(ch.isalpha() for ch in text)
        return self.last == "punct" and not any(ch.isalnum() for ch in text)


def parse_keep(spec: "str | KeepPolicy | None") -> KeepPolicy:
    """'none' | 'last-occurrence' | 'last-word' | 'last-punct' | 'recent:N' | one last-* and recent:N joined by
    '+' -> KeepPolicy; TokbenchError otherwise."""
    if isinstance(spec, KeepPolicy):
        return spec
    if spec is None:
        return KeepPolicy()
    if not isinstance(spec, str):
        raise TokbenchError(f"keep policy {spec!r} is not a string", fix=_FIX)
    last, recent = "", 0
    parts = [p.strip() for p in spec.split("+")]
    if parts == ["none"]:
        return KeepPolicy()
    for p in parts:
        if p.startswith("last-") and p[5:] in LAST and not last:
            last = p[5:]
            continue
        if p.startswith("recent:") and not recent:
            n = p[len("recent:"):]
            if n.isascii() and n.isdigit() and 1 <= int(n) <= 10_000_000:
                recent = int(n)
                continue
        raise TokbenchError(f"unknown keep policy {spec!r} (at {p!r})", fix=_FIX)
    return KeepPolicy(last, recent)


def apply_keep(ids: Sequence[Sequence[int]], cut: Sequence[Sequence[bool]], keep,
               token_bytes: Sequence[bytes | None] | None = None) -> list[list[bool]]:
    """The mask `cut` with the policy's extra cuts set (a new list; `cut` is not changed). `token_bytes` (the
    Vocabulary's bytes per id) is needed by last-word and last-punct, which look at a segment's text."""
    policy = parse_keep(keep)
    if policy.last not in ("", "occurrence") and token_bytes is None:
        raise ValueError(f"{policy} needs the tokenizer's token_bytes")
    out = [list(c) for c in cut]
    if not policy.active:
        return out
    for seq, mode_cut, c in zip(ids, cut, out):
        n = len(seq)
        if policy.recent:
            for i in range(max(0, n - policy.recent), n):
                c[i] = True
        if policy.last:
            # segments [start, end) between the mode's own cuts, from the last one backwards: the first time a
            # segment's ids are seen (i.e. its last occurrence in the sequence) all its internal cuts are set
            seen: set[tuple[int, ...]] = set()
            end = n
            for start in range(n - 1, -1, -1):
                if start and not mode_cut[start]:
                    continue
                seg = tuple(seq[start:end])
                if len(seg) > 1 and seg not in seen and (policy.last == "occurrence" or policy.keeps(
                        b"".join(token_bytes[t] or b"" for t in seg).decode("utf-8", "replace"))):
                    for i in range(start + 1, end):
                        c[i] = True
                seen.add(seg)
                end = start
    return out
