"""Pure-Python reference of the dynamic batch merge (rust_ext/src/dynamic.rs), for the tests and the
benchmark only. Written the slow, obvious way: every step recounts every pair of the whole batch.

Same contract as `tokbench._core.dynamic_merge`: returns (merged seqs, constituents per dynamic token,
merges [(left, right, merged, count)], lengths after 0..k merges).
"""
from __future__ import annotations

from collections import Counter


def reference_merge(seqs, cut, base_bytes, max_merges=None, target_len=None, max_constituents=0,
                    max_bytes=0, min_count=1):
    if isinstance(base_bytes, bytes):  # uint32 little-endian, as the kernel takes them
        base_bytes = [int.from_bytes(base_bytes[i:i + 4], "little") for i in range(0, len(base_bytes), 4)]
    n_base = len(base_bytes)
    for seq in seqs:
        for t in seq:
            if not 0 <= t < n_base:
                raise ValueError(f"id {t} is outside the vocabulary of {n_base} tokens")
    cons: list[list[int]] = []
    by_cons: dict[tuple[int, ...], int] = {}

    def constituents(t):
        return [t] if t < n_base else cons[t - n_base]

    def nbytes(t):
        return sum(base_bytes[c] for c in constituents(t))

    def allowed(a, b):
        return ((max_constituents == 0 or len(constituents(a)) + len(constituents(b)) <= max_constituents)
                and (max_bytes == 0 or nbytes(a) + nbytes(b) <= max_bytes))

    # a batch as lists of segments: symbols inside one segment may merge, never across
    segs = []
    for seq, c in zip(seqs, cut):
        parts: list[list[int]] = []
        for i, t in enumerate(seq):
            if i == 0 or c[i]:
                parts.append([])
            parts[-1].append(t)
        segs.append(parts)
    length = sum(len(s) for s in seqs)
    lengths = [length]
    merges = []
    min_count = max(min_count, 1)
    while True:
        if (max_merges is not None and len(merges) >= max_merges) or (target_len is not None and length <= target_len):
            break
        counts: Counter = Counter()
        for parts in segs:
            for part in parts:
                for a, b in zip(part, part[1:]):
                    if allowed(a, b):
                        counts[(a, b)] += 1
        if not counts:
            break
        best = max(counts.values())
        if best < min_count:
            break
        a, b = min(k for k, v in counts.items() if v == best)
        key = tuple(constituents(a) + constituents(b))
        if key not in by_cons:
            by_cons[key] = n_base + len(cons)
            cons.append(list(key))
        x = by_cons[key]
        for parts in segs:
            for j, part in enumerate(parts):
                out, i = [], 0
                while i < len(part):
                    if i + 1 < len(part) and part[i] == a and part[i + 1] == b:
                        out.append(x)
                        i += 2
                        length -= 1
                    else:
                        out.append(part[i])
                        i += 1
                parts[j] = out
        merges.append((a, b, x, best))
        lengths.append(length)
    merged = [[t for part in parts for t in part] for parts in segs]
    return merged, cons, merges, lengths
