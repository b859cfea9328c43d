"""Pruning a byte-level BPE vocabulary safely on its merge graph.

The graph: every merge (left, right) -> merged is an edge set; a token's *uses* are the kept merges that
consume it (as left or right part). A **leaf** is a token no kept merge uses. Removing a leaf together with
the merge that makes it never changes how any other kept token (or any text) is segmented into kept
tokens, except that occurrences of the leaf itself fall back to its two parts: BPE applies the
lowest-ranked applicable merge at each step, and a leaf's merge, once applied, would leave the leaf stuck
in the output, so it is never applied on the way to another kept token. Hence every token the base could
produce from its own text stays producible and every text still encodes losslessly.

`leaf_prune` removes candidates leaf by leaf, least frequent first, ties latest merge first (a removed
leaf's frequency is added to its parts, which may become leaves in turn), until no candidate leaf is left or the target size is
reached. `naive_prune` is the contrast the benchmark counts: delete every candidate and every merge that
mentions it, leaf or not (what hand edits of tokenizer.json do); tokens whose only merge used a deleted
token then become unreachable.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable


def merge_graph(merges: list[tuple[str, str]]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """(merged token -> index of the first merge producing it, token -> indices of merges using it)."""
    produced: dict[str, int] = {}
    uses: dict[str, list[int]] = {}
    for n, (a, b) in enumerate(merges):
        produced.setdefault(a + b, n)
        uses.setdefault(a, []).append(n)
        if b != a:
            uses.setdefault(b, []).append(n)
    return produced, uses


def leaf_prune(tokens: list[str], merges: list[tuple[str, str]], counts: dict[str, int], *,
               candidate: Callable[[str], bool], protected: set[str], target_size: int | None = None,
               current_size: int | None = None) -> tuple[set[str], set[int]]:
    """(tokens removed, merge indices removed). `tokens`: the model vocabulary strings; `counts`: how often
    each appears in the calibration encodings; `candidate(t)`: may t be removed (e.g. count < min_count)?
    With target_size, removal stops once current_size - removed reaches it (and then candidates are all
    tokens ordered by frequency, not only those `candidate` accepts)."""
    produced, uses = merge_graph(merges)
    live_uses = {t: len(set(u)) for t, u in uses.items()}
    freq = {t: int(counts.get(t, 0)) for t in tokens}
    removed: set[str] = set()
    removed_merges: set[int] = set()
    in_vocab = set(tokens)

    def eligible(t: str) -> bool:
        if t in protected or t not in in_vocab or t in removed:
            return False
        if target_size is None:
            return candidate(t)
        return True

    # ties (e.g. all the unseen tokens) go latest merge first: the base learned those from the rarest pairs
    rank = {t: -produced.get(t, len(merges)) for t in tokens}
    heap = [(freq[t], rank[t], t) for t in tokens if live_uses.get(t, 0) == 0 and eligible(t)]
    heapq.heapify(heap)
    size = current_size if current_size is not None else len(tokens)
    while heap:
        if target_size is not None and size <= target_size:
            break
        f, _, t = heapq.heappop(heap)
        if t in removed or f != freq[t] or live_uses.get(t, 0) != 0 or not eligible(t):
            continue
        removed.add(t)
        size -= 1
        m = produced.get(t)
        parts: list[str] = []
        for n in [m] if m is not None else []:
            removed_merges.add(n)
            parts = list(dict.fromkeys(merges[n]))
        # every other merge producing the same string (duplicates) goes too
        for p in parts:
            freq[p] = freq.get(p, 0) + freq[t]
            live_uses[p] = live_uses.get(p, 1) - 1
            if live_uses[p] == 0 and eligible(p):
                heapq.heappush(heap, (freq[p], rank.get(p, 0), p))
    # merges that produce a removed token by another route, or consume one, cannot stay
    for n, (a, b) in enumerate(merges):
        if n in removed_merges:
            continue
        if a + b in removed or a in removed or b in removed:
            removed_merges.add(n)
    return removed, removed_merges


def naive_prune(merges: list[tuple[str, str]], remove: set[str]) -> set[int]:
    """Indices of the merges a naive edit deletes: every merge mentioning or producing a removed token."""
    return {n for n, (a, b) in enumerate(merges) if a in remove or b in remove or a + b in remove}





def naive_unreachable(tokenizer_json: dict, remove: set[str], to_bytes) -> dict:
    """The contrast: delete `remove` from a BPE tokenizer.json and every merge mentioning or producing them
    (what hand edits do). Returns how many kept tokens the base could produce from their own text are then
    unreachable, with examples."""
    import copy
    import json

    from tokenizers import Tokenizer

    data = copy.deepcopy(tokenizer_json)
    model = data["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    drop = naive_prune(merges, remove)
    added = {t["content"] for t in data.get("added_tokens") or []}
    kept = [t for t, _ in sorted(model["vocab"].items(), key=lambda x: x[1]) if t not in remove]
    base = Tokenizer.from_str(json.dumps(tokenizer_json))
    base_ok = reachable(base, token_texts({t: i for t, i in model["vocab"].items() if t not in added}, to_bytes))
    vocab = {t: n for n, t in enumerate(kept)}
    for t in data.get("added_tokens") or []:
        t["id"] = vocab[t["content"]] if t["content"] in vocab else t["id"]
    model["vocab"] = vocab
    model["merges"] = [list(m) for n, m in enumerate(merges) if n not in drop]
    naive = Tokenizer.from_str(json.dumps(data))
    old_id = tokenizer_json["model"]["vocab"]
    cand = [(vocab[t], to_bytes(t).decode("utf-8")) for t in kept if t not in added and old_id[t] in base_ok]
    ok = reachable(naive, cand)
    lost = [txt for i, txt in cand if i not in ok]
    return {"removed": len(remove), "merges_removed": len(drop), "base_reachable_kept": len(cand),
            "unreachable": len(lost), "examples": lost[:10]}


def reachable(tok, items: list[tuple[int, str]], batch: int = 4096) -> set[int]:
    """Ids among `items` (id, text) that encoding their own text gives back as that single id, with the
    `tokenizers.Tokenizer` tok (no special tokens added)."""
    out: set[int] = set()
    for k in range(0, len(items), batch):
        chunk = items[k:k + batch]
        for (i, _), enc in zip(chunk, tok.encode_batch([t for _, t in chunk], add_special_tokens=False)):
            if enc.ids == [i]:
                out.add(i)
    return out


def token_texts(state_like_vocab: dict[str, int], to_bytes) -> list[tuple[int, str]]:
    """(id, text) of every model-vocab token whose bytes are valid UTF-8 (others cannot be typed)."""
    out = []
    for content, i in state_like_vocab.items():
        b = to_bytes(content)
        if not b:
            continue
        try:
            out.append((i, b.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return sorted(out)
__all__ = ["leaf_prune", "merge_graph", "naive_prune", "naive_unreachable", "reachable", "token_texts"]
