"""`align(old, new)`: which tokens two vocabularies share, which are new, how specials map by
role, and how every new token decomposes into old tokens as the old tokenizer would split it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from tokbench import limits
from tokbench.errors import TokbenchError
from tokbench.vocab.numbers import NumberPolicy, is_numeric, number_policy
from tokbench.vocab.specials import ROLES
from tokbench.vocab.vocabulary import Kind, Vocabulary


@dataclass
class Alignment:
    """Result of align(old, new). Ids are token ids of the respective vocabulary.

    shared: new id -> old id for tokens with the same bytes and word-start flag.
    new_only: new ids with text that old lacks; old_only: old ids with text that new lacks.
    roles: role -> (new id, old id or None) for bos/eos/pad/unk present in new.
    special_map: every other new special/control id -> old id with the same content, or None.
    decompositions: new-only id -> old ids (the old tokenizer's split of its bytes); bytes the
        old vocabulary cannot represent at all are left out and the id is listed in `uncovered`.
    """

    old: Vocabulary
    new: Vocabulary
    shared: dict[int, int]
    new_only: list[int]
    old_only: list[int]
    roles: dict[str, tuple[int, int | None]]
    special_map: dict[int, int | None]
    decompositions: dict[int, list[int]]
    old_numbers: NumberPolicy
    new_numbers: NumberPolicy
    numeric_new: list[int] = field(default_factory=list)
    uncovered: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def numbers_differ(self) -> bool:
        return self.old_numbers.policy != self.new_numbers.policy

    def decomposition_has_unk(self, new_id: int) -> bool:
        unk = self.old.unk_id
        return unk is not None and unk in self.decompositions.get(new_id, ())


def align(old: Vocabulary, new: Vocabulary, num_threads: int = 0) -> Alignment:
    num_threads = limits.threads(num_threads)
    t0 = time.perf_counter()
    old_keys = old.keys
    shared: dict[int, int] = {}
    new_only: list[int] = []
    for i, kind in enumerate(new.kinds):
        if kind not in (Kind.NORMAL, Kind.BYTE):
            continue
        key = new.key(i)
        if key is None:
            continue
        j = old_keys.get(key)
        if j is None:
            new_only.append(i)
        else:
            shared[i] = j
    matched_old = set(shared.values())
    old_only = [j for j in old_keys.values() if j not in matched_old]
    old_only.sort()
    t1 = time.perf_counter()

    roles: dict[str, tuple[int, int | None]] = {}
    for role in ROLES:
        if role in new.specials:
            roles[role] = (new.specials[role], old.specials.get(role))
    role_ids = {i for i, _ in roles.values()}
    old_contents = old.special_contents
    special_map: dict[int, int | None] = {}
    for content, i in new.special_contents.items():
        if i not in role_ids:
            special_map[i] = old_contents.get(content)
    t2 = time.perf_counter()

    surfaces = [old.surface(new.key(i)) for i in new_only]  # type: ignore[arg-type]
    try:
        pieces = old.segment_batch([s for s, _ in surfaces], [ws for _, ws in surfaces], num_threads)
    except ValueError as exc:  # the core refused a token (TokbenchError from building the segmenter passes)
        if isinstance(exc, TokbenchError):
            raise
        raise TokbenchError(f"cannot split the new tokens with the old tokenizer ({exc})", path=old.source,
                            fix="check that the old tokenizer file is complete and consistent") from None
    decompositions = dict(zip(new_only, pieces))
    uncovered: list[int] = []
    sentinel = old.uncovered_id
    for i, p in decompositions.items():
        if sentinel in p:
            uncovered.append(i)
            decompositions[i] = [j for j in p if j != sentinel]
    t3 = time.perf_counter()

    return Alignment(
        old=old, new=new, shared=shared, new_only=new_only, old_only=old_only, roles=roles,
        special_map=special_map, decompositions=decompositions,
        old_numbers=number_policy(old), new_numbers=number_policy(new),
        numeric_new=[i for i in new_only if is_numeric(new, i)], uncovered=uncovered,
        seconds={"match": t1 - t0, "specials": t2 - t1, "decompose": t3 - t2},
    )
