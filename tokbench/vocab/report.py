"""JSON-ready summaries of a Vocabulary (`vocab inspect`) and an Alignment (`vocab align`).

The keys are stable: they are documented in README.md and read by scripts.
"""
from __future__ import annotations

from collections import Counter

from tokbench.vocab.align import Alignment
from tokbench.vocab.numbers import number_policy
from tokbench.vocab.vocabulary import Kind, Vocabulary


def show(vocab: Vocabulary, i: int | None) -> str | None:
    """A readable form of token i: its text (specials as their content), word start as a space."""
    if i is None:
        return None
    b = vocab.token_bytes[i]
    if b is None:
        return vocab.tokens[i]
    if vocab.style.value == "wordpiece" and not vocab.word_start[i]:
        return "##" + b.decode("utf-8", errors="backslashreplace")
    return b.decode("utf-8", errors="backslashreplace")


def describe(vocab: Vocabulary) -> dict:
    return {"source": vocab.source, "format": vocab.format, "family": vocab.family,
            "style": vocab.style.value, "size": vocab.size}


def inspect_report(vocab: Vocabulary) -> dict:
    singles = {b for b, k in zip(vocab.token_bytes, vocab.kinds)
               if b is not None and len(b) == 1 and k in (Kind.NORMAL, Kind.BYTE)}
    texts = [b for b, k in zip(vocab.token_bytes, vocab.kinds) if b is not None and k == Kind.NORMAL]
    lengths = [len(b) for b in texts]
    n_ws = sum(1 for w, k in zip(vocab.word_start, vocab.kinds) if w and k == Kind.NORMAL)
    return {
        **describe(vocab),
        "kinds": vocab.kind_counts,
        "word_start": {"style": vocab.style.value, "tokens": n_ws,
                       "fraction_of_normal": round(n_ws / max(1, len(texts)), 4)},
        "numbers": number_policy(vocab).to_dict(),
        "bytes": {"single_byte_tokens": len(singles), "covers_all_bytes": len(singles) == 256,
                  "byte_fallback": vocab.byte_fallback is not None,
                  "mean_token_bytes": round(sum(lengths) / max(1, len(lengths)), 3),
                  "max_token_bytes": max(lengths, default=0)},
        "specials": {role: {"id": i, "token": vocab.tokens[i]} for role, i in vocab.specials.items()},
        "special_tokens": len(vocab.special_contents),
        "normalizer": vocab.normalizer,
        "split_pattern": vocab.pattern,
        "strips_leading_space": vocab.strip_leading_space,
    }


def align_report(a: Alignment, examples: int = 8) -> dict:
    old, new = a.old, a.new
    lengths = [len(p) for p in a.decompositions.values()]
    with_unk = sum(1 for i in a.new_only if a.decomposition_has_unk(i))
    hist = Counter(min(n, 8) for n in lengths)
    unmatched = [i for i, j in a.special_map.items() if j is None]

    def pieces(i: int) -> list[str | None]:
        return [show(old, j) for j in a.decompositions[i]]

    step = max(1, len(a.new_only) // examples) if a.new_only else 1
    return {
        "old": describe(old),
        "new": describe(new),
        "counts": {
            "shared": len(a.shared),
            "new_only": len(a.new_only),
            "old_only": len(a.old_only),
            "new_specials": len({i for i, _ in a.roles.values()} | set(a.special_map)),
            "roles_matched": sum(1 for _, j in a.roles.values() if j is not None),
            "specials_matched": sum(1 for j in a.special_map.values() if j is not None),
            "specials_unmatched": len(unmatched),
            "new_numeric": len(a.numeric_new),
        },
        "shared_fraction_of_new": round(len(a.shared) / max(1, len(a.shared) + len(a.new_only)), 4),
        "roles": {role: {"new": i, "old": j, "new_token": new.tokens[i],
                         "old_token": None if j is None else old.tokens[j]}
                  for role, (i, j) in a.roles.items()},
        "special_tokens": [{"new": i, "token": new.tokens[i], "old": j}
                           for i, j in sorted(a.special_map.items())],
        "numbers": {"old": a.old_numbers.to_dict(), "new": a.new_numbers.to_dict(),
                    "differ": a.numbers_differ},
        "decomposition": {
            "tokens": len(lengths),
            "mean_pieces": round(sum(lengths) / max(1, len(lengths)), 3),
            "max_pieces": max(lengths, default=0),
            "with_unk": with_unk,
            "uncovered": len(a.uncovered),
            "pieces_histogram": {("8+" if k == 8 else str(k)): v for k, v in sorted(hist.items())},
        },
        "examples": {
            "shared": [{"new": i, "old": j, "token": show(new, i)}
                       for i, j in list(a.shared.items())[:: max(1, len(a.shared) // examples)][:examples]],
            "new_only": [{"new": i, "token": show(new, i), "old_pieces": pieces(i)}
                         for i in a.new_only[::step][:examples]],
            "old_only": [{"old": j, "token": show(old, j)}
                         for j in a.old_only[:: max(1, len(a.old_only) // examples)][:examples]],
            "numeric_new": [{"new": i, "token": show(new, i), "old_pieces": pieces(i)}
                            for i in a.numeric_new[:examples]],
        },
        "seconds": {k: round(v, 3) for k, v in a.seconds.items()},
    }
