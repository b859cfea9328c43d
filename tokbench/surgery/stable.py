"""Choose learned merges that leave a general reference corpus's ids alone (`add_tokens.learn.keep_stable`).

Continued BPE appends its merges after the base's, so a word's ids change exactly when one of the new merges
fires on the word's *base* segmentation (the base merges all have priority over the new ones, and a new merge
only ever joins tokens made before it). `select_stable` walks the candidate merges the trainer learned on the
domain corpus, in the trainer's order, and simulates each on the reference corpus's distinct words: a
candidate whose firing would push the share of reference lines with changed ids above the user's bound is
rejected (and so is every later candidate built on its token); the first `n` accepted merges are kept.

`filter_learned` applies the two domain filters before that: `require_letter` refuses candidates whose text has
no letter (punctuation and symbol glue such as GSM8K's `=$<<`: cheap bytes per token, but the model leans on the
exact pieces it was trained on), and `min_documents` refuses candidates used in fewer than that many documents
of the learning corpora (tokens concentrated in a few documents, such as one word problem's names, do not carry
over to new text). Both also refuse every later candidate built on a refused token, so every kept merge stays
reachable.

Tokens are indices of one list (base tokens first, then the trainer's new ones), as the Rust trainer gives them.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tokbench.bpe.lz import merge_word


@dataclass
class Reference:
    """The reference corpora as distinct words (token-index sequences under the base), the lines using each word
    (line indices over all corpora) and each line's corpus."""

    words: list[list[int]]
    lines_of: list[list[int]]
    corpus_of: list[int]
    n_lines: list[int]  # per corpus
    line_weight: list[float] | None = None  # per line (None: every line counts 1); the bound is then a share of weight

    @classmethod
    def of(cls, corpora: Sequence[Sequence[str]], split, encode) -> "Reference":
        """corpora: per corpus, its lines; split(line) -> pre-tokens; encode(pre-token) -> base token indices."""
        index: dict[str, int] = {}
        words: list[list[int]] = []
        lines_of: list[list[int]] = []
        corpus_of: list[int] = []
        for c, lines in enumerate(corpora):
            for line in lines:
                k = len(corpus_of)
                corpus_of.append(c)
                for w in set(split(line)):
                    j = index.get(w)
                    if j is None:
                        j = index[w] = len(words)
                        words.append(list(encode(w)))
                        lines_of.append([])
                    lines_of[j].append(k)
        return cls(words, lines_of, corpus_of, [len(lines) for lines in corpora])


@dataclass
class Selection:
    merges: list[tuple[int, int, int]]  # accepted (left, right, merged) in trainer order
    rejected: int = 0  # candidates refused for the bound
    skipped: int = 0  # candidates whose parts were refused
    changed_lines: list[int] = field(default_factory=list)  # per reference corpus
    budget_lines: list[int] = field(default_factory=list)
    n_lines: list[int] = field(default_factory=list)
    examples_rejected: list[int] = field(default_factory=list)  # merged indices of the first refused candidates


def _pairs(seq: list[int]):
    return zip(seq, seq[1:])


_apply = merge_word  # every (left, right) of seq replaced by merged, left to right


def select_stable(candidates: Sequence[tuple[int, int, int]], n: int, known: int, ref: Reference,
                  max_changed_lines_pct: float) -> Selection:
    """candidates: (left, right, merged) in training order, token indices (< known: base tokens).
    Keeps at most n merges whose combined firing changes at most max_changed_lines_pct % of the lines of each
    reference corpus."""
    weight = ref.line_weight
    if weight is None:
        budget: list[float] = [int(max_changed_lines_pct / 100.0 * m) for m in ref.n_lines]
    else:
        totals = [0.0] * len(ref.n_lines)
        for k, c in enumerate(ref.corpus_of):
            totals[c] += weight[k]
        budget = [max_changed_lines_pct / 100.0 * t for t in totals]
    used = [0] * len(budget)
    words = [list(w) for w in ref.words]
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for j, w in enumerate(words):
        for p in _pairs(w):
            where[p].add(j)
    present: set[int] = set()
    changed: set[int] = set()
    sel = Selection(merges=[], budget_lines=budget, n_lines=ref.n_lines)
    for left, right, merged in candidates:
        if len(sel.merges) >= n:
            break
        if (left >= known and left not in present) or (right >= known and right not in present):
            sel.skipped += 1
            continue
        hit = where.get((left, right), ())
        new_lines = {k for j in hit for k in ref.lines_of[j]} - changed
        extra = [0] * len(budget)
        for k in new_lines:
            extra[ref.corpus_of[k]] += 1 if weight is None else weight[k]
        if any(u + e > b for u, e, b in zip(used, extra, budget)):
            sel.rejected += 1
            if len(sel.examples_rejected) < 8:
                sel.examples_rejected.append(merged)
            continue
        present.add(merged)
        sel.merges.append((left, right, merged))
        changed |= new_lines
        used = [u + e for u, e in zip(used, extra)]
        for j in list(hit):
            old = words[j]
            for p in _pairs(old):
                s = where.get(p)
                if s is not None:
                    s.discard(j)
            words[j] = _apply(old, left, right, merged)
            for p in _pairs(words[j]):
                where[p].add(j)
        where.pop((left, right), None)
    sel.changed_lines = used
    return sel


def candidate_encoder(tok: dict, vocab_bytes, merges_idx, vocab2=None, extra=()):
    """The base BPE of tokenizer.json `tok` (vocab_bytes + merges_idx, its own pre-tokenizer and ignore_merges)
    with the `extra` candidate merges (left, right, merged) of `vocab2` appended, the k-th getting id
    len(vocab_bytes) + k."""
    from tokbench import _core
    from tokbench.bpe.encoding import _read_pre_tokenizer

    regex, digits = _read_pre_tokenizer(tok.get("pre_tokenizer"), lambda why: None)
    known = len(vocab_bytes)
    new_id = {m: known + k for k, (_, _, m) in enumerate(extra)}
    idx = lambda t: new_id.get(t, t)  # noqa: E731
    return _core.BpeEncoder([(bytes(b), k) for k, b in enumerate(vocab_bytes)]
                            + [(bytes(vocab2[m]), new_id[m]) for _, _, m in extra],
                            list(merges_idx) + [(idx(a), idx(b)) for a, b, _ in extra],
                            ignore_merges=bool(tok.get("model", {}).get("ignore_merges")), pattern=regex,
                            individual_digits=digits, keep_unmatched=True)


@dataclass
class Filtered:
    merges: list[tuple[int, int, int]]
    no_letter: int = 0  # refused by require_letter
    few_documents: int = 0  # refused by min_documents
    skipped: int = 0  # built on a refused token


def document_counts(candidates: Sequence[tuple[int, int, int]], known: int, documents: Sequence[str],
                    encode_with) -> dict[int, int]:
    """Documents of `documents` whose encoding with *all* candidates uses each candidate's token; a token that a
    later candidate is built from inherits that candidate's count (it is needed wherever the later one fires).
    encode_with(candidates) -> an encoder with encode_ordinary(text) -> ids, the k-th candidate's token getting
    id known + k."""
    enc = encode_with(candidates)
    merged_of = {known + k: m for k, (_, _, m) in enumerate(candidates)}
    df: dict[int, int] = defaultdict(int)
    for doc in documents:
        for i in set(enc.encode_ordinary(doc)):
            m = merged_of.get(i)
            if m is not None:
                df[m] += 1
    for left, right, merged in reversed(candidates):
        for part in (left, right):
            if part >= known:
                df[part] = max(df[part], df[merged])
    return df


def filter_learned(candidates: Sequence[tuple[int, int, int]], known: int, text_of, *, require_letter: bool = False,
                   min_documents: int = 1, df: dict[int, int] | None = None) -> Filtered:
    """Candidates (trainer order) that pass both filters and whose parts are base tokens or kept candidates.
    text_of(token index) -> str; df: document_counts (needed when min_documents > 1)."""
    out = Filtered(merges=[])
    kept: set[int] = set()
    for left, right, merged in candidates:
        if (left >= known and left not in kept) or (right >= known and right not in kept):
            out.skipped += 1
        elif require_letter and not any(ch.isalpha() for ch in text_of(merged)):
            out.no_letter += 1
        elif min_documents > 1 and (df or {}).get(merged, 0) < min_documents:
            out.few_documents += 1
        else:
            kept.add(merged)
            out.merges.append((left, right, merged))
    return out
