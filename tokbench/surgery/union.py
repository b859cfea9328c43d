"""One vocabulary for several models before a merge, built as a real BPE (vocab + merges).

mergekit's ``tokenizer_source: union`` appends the tokens found only in non-base models as *added
tokens*; for a byte-level tokenizer an added ``Ġword`` is matched only by the literal characters
``Ġword``, so ordinary text can never produce it. Here the union is a byte-level BPE
``tokenizer.json`` that encodes text to every one of its tokens:

1. the base's vocabulary and merges come first, unchanged (base ids are union ids, so every base
   token stays reachable and base text encodes as before wherever no new merge applies);
2. for each other member, its merge list is walked in its own order and every merge whose result is
   not in the union yet is appended (its two parts are already there: earlier merges or bytes);
   member tokens without a merge (bytes the base lacks) are appended as plain vocabulary entries;
3. a member token that the union's merge order still cannot build (the base's higher-priority merges
   cut its bytes differently) is repaired: its bytes are segmented with the union's merges and
   merges are appended that join the pieces left to right; an intermediate piece that is no token
   yet becomes a *bridge* token (recorded; no member has a row for it);
4. added tokens (specials, control tokens) of the members that the union lacks are appended as
   added tokens, with the member's flags.

``UnionVocab.permutations[name][union_id]`` is the member's id of that token or None: the map that
re-indexes the member's embedding and head (``reindex_rows``). mergekit's ``tokens:`` block
(``source``: a model, ``{kind: model_token, model, token | token_id}`` or ``{kind: zero}``;
``force``) is accepted as mergekit writes it (``parse_tokens_block``) and turned into a per-token
row plan (``row_plan``) with mergekit's defaults. ``reachability`` audits any byte-level BPE
``tokenizer.json``; ``from_mergekit`` converts a mergekit merge config into a tokbench recipe dict.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tokbench.bpe.encoding import bytelevel_bytes, bytes_to_unicode
from tokbench.errors import TokbenchError
from tokbench.outputs import atomic_write

# bytes that valid UTF-8 never contains
_INVALID_UTF8 = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])
_B2U = bytes_to_unicode()
MAX_MEMBERS = 64


# --- reading a byte-level BPE tokenizer.json ---------------------------------------------------------
@dataclass
class BpeFile:
    """A byte-level BPE ``tokenizer.json``, parsed: vocab (string -> id), merges (string pairs),
    added tokens (the file's entries). ``data`` is the whole JSON object (not modified)."""

    source: str
    data: dict
    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    added: list[dict]

    @property
    def added_contents(self) -> dict[str, int]:
        return {a["content"]: int(a["id"]) for a in self.added}

    def id_of(self, token: str) -> int | None:
        """Id of a token string (added-token content first, then the model vocabulary)."""
        got = self.added_contents.get(token)
        return got if got is not None else self.vocab.get(token)

    def token_strings(self) -> dict[int, str]:
        out = {i: t for t, i in self.vocab.items()}
        out.update({i: t for t, i in self.added_contents.items()})
        return out


def _find_json(src: str | os.PathLike) -> Path:
    p = Path(src)
    if not p.exists():
        from tokbench.assets import resolve

        p = Path(resolve(str(src)))
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise TokbenchError("no tokenizer.json", path=p, fix="pass a model folder or a tokenizer.json")
    return p


def read_bpe(src: str | os.PathLike | dict | BpeFile, name: str | None = None) -> BpeFile:
    """Parse a byte-level BPE tokenizer.json (path, model folder, asset name or loaded dict)."""
    if isinstance(src, BpeFile):
        return src
    if isinstance(src, dict):
        data, where = src, name or "<tokenizer dict>"
    else:
        path = _find_json(src)
        from tokbench.vocab.hf_json import read_tokenizer_json

        data, where = read_tokenizer_json(path), str(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise TokbenchError(f"not a BPE tokenizer (model type {None if model is None else model.get('type')!r})",
                            path=where, fix="union and reachability need byte-level BPE tokenizer.json files")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokbenchError("BPE with byte_fallback or subword prefixes/suffixes is not byte-level", path=where,
                            fix="union needs byte-level BPE members (GPT-2 / Llama-3 / Qwen / SmolLM style)")
    vocab = {t: int(i) for t, i in model["vocab"].items()}
    added = [dict(a) for a in data.get("added_tokens") or []]
    added_set = {a["content"] for a in added}
    plain = [t for t in vocab if t not in added_set]
    if plain and sum(bytelevel_bytes(t) is not None for t in plain) < 0.9 * len(plain):
        raise TokbenchError("the vocabulary is not written in the byte-level alphabet (Ġ for space)", path=where,
                            fix="union needs byte-level BPE members; convert SentencePiece models first")
    merges: list[tuple[str, str]] = []
    for n, m in enumerate(model.get("merges") or []):
        pair = m.split(" ", 1) if isinstance(m, str) else m
        if len(pair) != 2 or pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            raise TokbenchError(f"merge {n} ({m!r}) does not build a token of the vocabulary", path=where,
                                fix="check that the tokenizer file is intact")
        merges.append((pair[0], pair[1]))
    return BpeFile(source=where, data=data, vocab=vocab, merges=merges, added=added)


def _decoded_bytes(token: str) -> bytes:
    """What the byte-level decoder turns a token string into."""
    b = bytelevel_bytes(token)
    return token.encode("utf-8") if b is None else b


# --- reachability --------------------------------------------------------------------------------------
@dataclass
class Reachability:
    """Per class, the ids of a tokenizer (see ``reachability``)."""

    reachable: list[int] = field(default_factory=list)
    fragment: list[int] = field(default_factory=list)
    invalid_bytes: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    special: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    added_unreachable: list[int] = field(default_factory=list)
    added_only: list[int] = field(default_factory=list)

    CLASSES = ("reachable", "fragment", "invalid_bytes", "unreachable", "special", "added",
               "added_unreachable")

    @property
    def never_produced(self) -> list[int]:
        """Ids ordinary text can never produce: unreachable + added_unreachable."""
        return sorted(self.unreachable + self.added_unreachable)

    def counts(self) -> dict[str, int]:
        out = {k: len(getattr(self, k)) for k in self.CLASSES}
        out["added_only"] = len(self.added_only)
        out["never_produced"] = len(self.never_produced)
        return out


def _with_file(tok: BpeFile):
    """(context) a path holding tok's JSON: its own file, or a temporary copy of an in-memory dict."""
    class _Ctx:
        def __enter__(self):
            if Path(tok.source).is_file():
                return Path(tok.source)
            self.tmp = tempfile.TemporaryDirectory(prefix="tokbench-union-")
            p = Path(self.tmp.name) / "tokenizer.json"
            p.write_text(json.dumps(tok.data, ensure_ascii=False), encoding="utf-8")
            return p

        def __exit__(self, *exc):
            if hasattr(self, "tmp"):
                self.tmp.cleanup()
    return _Ctx()


def reachability(tokenizer: str | os.PathLike | dict | BpeFile) -> Reachability:
    """Can ordinary text produce each token? Per id: decode the token (the byte-level decoder's bytes),
    encode that text with the tokenizer's own BPE (``tokbench.bpe``: pre-tokenizer, merges, added
    tokens matched in the text as ``tokenizers`` does) and check that it gives exactly that id.

    Classes: ``reachable``; ``fragment`` (bytes that are not UTF-8 on their own, e.g. one byte of a
    multi-byte character: judged by the merges alone, as they are produced inside a character);
    ``invalid_bytes`` (holds a byte valid UTF-8 never has: 0xC0, 0xC1, 0xF5-0xFF); ``unreachable``;
    ``special`` (special added tokens: produced when specials are allowed); ``added`` (non-special
    added tokens whose text encodes to them); ``added_unreachable`` (added tokens whose decoded
    text does not, e.g. mergekit's added ``Ġword``). ``added_only``: added tokens that are not in
    the model vocabulary at all (a subset of the three added classes).
    """
    from tokbench.bpe.encoding import BPE

    tok = read_bpe(tokenizer)
    out = Reachability()
    added = {int(a["id"]): a for a in tok.added}
    vocab_ids = set(tok.vocab.values())
    out.added_only = sorted(i for i in added if i not in vocab_ids)
    strings = tok.token_strings()
    ranks = _merge_ranks(tok.vocab, tok.merges)
    units = _unit_ids(tok.vocab)
    texts: list[str] = []
    text_ids: list[int] = []
    for i in sorted(strings):
        s = strings[i]
        if i in added and added[i].get("special"):
            out.special.append(i)
            continue
        raw = _decoded_bytes(s) if i in added else bytelevel_bytes(s)
        if raw is None:
            out.unreachable.append(i)  # not in the byte-level alphabet: no text maps to it
            continue
        if any(b in _INVALID_UTF8 for b in raw):
            out.invalid_bytes.append(i)
            continue
        try:
            texts.append(raw.decode("utf-8"))
            text_ids.append(i)
        except UnicodeDecodeError:
            if i not in added and _bpe_word(raw, units, ranks) == [i]:
                out.fragment.append(i)
            else:
                (out.added_unreachable if i in added else out.unreachable).append(i)
    with _with_file(tok) as path:
        bpe = BPE.from_file(path)
        encoded = bpe.encode_batch(texts, allowed_special="all")
    for i, ids in zip(text_ids, encoded):
        ok = ids == [i]
        if i in added:
            (out.added if ok else out.added_unreachable).append(i)
        else:
            (out.reachable if ok else out.unreachable).append(i)
    return out


# --- BPE on one word, in Python (for the few tokens union has to check while it adds merges) -------
def _merge_ranks(vocab: Mapping[str, int], merges: Sequence[tuple[str, str]]) -> dict[tuple[int, int], tuple[int, int]]:
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for r, (a, b) in enumerate(merges):
        out.setdefault((vocab[a], vocab[b]), (r, vocab[a + b]))
    return out


def _unit_ids(vocab: Mapping[str, int]) -> list[int | None]:
    """Per byte value, the id of its single-byte token (None where the vocabulary lacks it)."""
    return [vocab.get(_B2U[b]) for b in range(256)]


def _bpe_word(data: bytes, units: Sequence[int | None], ranks: Mapping[tuple[int, int], tuple[int, int]]) -> list[int] | None:
    """Merge-rank BPE of one pre-token (lowest rank first, leftmost on ties); None if a byte has no token."""
    ids = [units[b] for b in data]
    if any(i is None for i in ids):
        return None
    while len(ids) > 1:
        best = None
        for k in range(len(ids) - 1):
            r = ranks.get((ids[k], ids[k + 1]))
            if r is not None and (best is None or r[0] < best[0]):
                best = (r[0], k, r[1])
        if best is None:
            break
        _, k, new = best
        ids[k:k + 2] = [new]
    return ids


# --- the union -----------------------------------------------------------------------------------------
@dataclass
class UnionVocab:
    """A union vocabulary: the tokenizer.json to write, and per member the re-indexing map.

    tokens: token string per union id (model vocab strings, added-token contents); origin: per union
    id, the member it came from, "bridge" (made to keep a token reachable) or "tokens" (a key of
    mergekit's tokens: block that no member has); permutations: member name -> per union id, that
    member's id or None. members: names in order, the base (vocabulary source) first.
    """

    base: str
    members: list[str]
    tokens: list[str]
    origin: list[str]
    permutations: dict[str, list[int | None]]
    tokenizer: dict
    new_merges: int = 0
    repair_merges: int = 0
    bridges: list[int] = field(default_factory=list)
    unreachable_new: list[int] = field(default_factory=list)  # tokens the repair could not make reachable
    inherited_unreachable: list[int] = field(default_factory=list)  # new tokens their own member cannot build
    tokens_block: dict[str, "TokenEntry"] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def inverse(self, member: str) -> dict[int, int]:
        """member id -> union id (for feeding the member's encodings to a re-indexed model)."""
        return {m: u for u, m in enumerate(self.permutations[member]) if m is not None}

    def summary(self) -> dict:
        by_origin: dict[str, int] = {}
        for o in self.origin:
            by_origin[o] = by_origin.get(o, 0) + 1
        return {"size": len(self.tokens), "by_origin": by_origin, "new_merges": self.new_merges,
                "repair_merges": self.repair_merges, "bridges": len(self.bridges),
                "unreachable_new": len(self.unreachable_new),
                "inherited_unreachable": len(self.inherited_unreachable),
                "coverage": {m: sum(x is not None for x in p) for m, p in self.permutations.items()}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the union tokenizer.json (atomically; path may be a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        return atomic_write(path, json.dumps(self.tokenizer, ensure_ascii=False, indent=1))


def _component_key(data: dict) -> tuple[str, str]:
    return (json.dumps(data.get("normalizer"), sort_keys=True), json.dumps(data.get("pre_tokenizer"), sort_keys=True))


class _Builder:
    """Mutable union state: vocab, merges, and the Python ranks used to check new tokens."""

    def __init__(self, base: BpeFile):
        self.vocab = dict(base.vocab)
        self.merges = list(base.merges)
        self.ranks = _merge_ranks(self.vocab, self.merges)
        self.units = _unit_ids(self.vocab)
        self.added = [dict(a) for a in base.added]
        self.strings = base.token_strings()
        self.next_id = max(self.strings, default=-1) + 1
        self.origin: dict[int, str] = {}

    def add_token(self, s: str, origin: str) -> int:
        i = self.next_id
        self.next_id += 1
        self.vocab[s] = i
        self.strings[i] = s
        self.origin[i] = origin
        raw = bytelevel_bytes(s)
        if raw is not None and len(raw) == 1 and self.units[raw[0]] is None:
            self.units[raw[0]] = i
        return i

    def add_merge(self, a: str, b: str) -> None:
        self.ranks.setdefault((self.vocab[a], self.vocab[b]), (len(self.merges), self.vocab[a + b]))
        self.merges.append((a, b))

    def segment(self, s: str) -> list[int] | None:
        raw = bytelevel_bytes(s)
        return None if raw is None else _bpe_word(raw, self.units, self.ranks)

    def repair(self, s: str, bridges: list[int]) -> bool:
        """Append merges (and bridge tokens) until s segments to itself; False if it cannot."""
        for _ in range(64):
            seg = self.segment(s)
            if seg is None or len(seg) < 2:
                return seg == [self.vocab[s]]
            a, b = self.strings[seg[0]], self.strings[seg[1]]
            if a + b not in self.vocab:
                bridges.append(self.add_token(a + b, "bridge"))
            self.add_merge(a, b)
        return False


def build_union(members: Mapping[str, str | os.PathLike | dict | BpeFile], base: str, *,
                vocab: str = "union", tokens: Mapping[str, Any] | None = None,
                check_pretokenizer: bool = True) -> UnionVocab:
    """Build one vocabulary for the members (name -> tokenizer.json / model folder / asset / dict).

    base: the member whose ids are kept (mergekit's base_model). vocab: "union" (every member's
    tokens), "base" (the base's vocabulary only; other members are re-indexed onto it) or a member
    name (that member's vocabulary). tokens: mergekit's ``tokens:`` block (``parse_tokens_block``);
    its keys are always in the result (a key no member has is added: as real merges when it is
    byte-level text, as a non-special added token when it looks like a control token ``<...>``).
    check_pretokenizer: refuse members whose normalizer or pre-tokenizer differs from the vocabulary
    source's (their merges would be learned on other pre-tokens).
    """
    if not members:
        raise TokbenchError("no members to unite", fix="pass at least one tokenizer")
    if len(members) > MAX_MEMBERS:
        raise TokbenchError(f"{len(members)} members; at most {MAX_MEMBERS}", fix="unite fewer models at once")
    if base not in members:
        raise TokbenchError(f"base {base!r} is not one of the members ({', '.join(members)})",
                            fix="name the base model among the members")
    parsed = {n: read_bpe(m, name=n) for n, m in members.items()}
    if vocab == "union":
        source, joining = base, [n for n in parsed if n != base]
    elif vocab == "base":
        source, joining = base, []
    elif vocab in parsed:
        source, joining = vocab, []
    else:
        raise TokbenchError(f"vocab {vocab!r} is neither union, base nor a member",
                            fix=f"use union, base or one of {', '.join(parsed)}")
    src = parsed[source]
    if check_pretokenizer:
        for n in joining:
            if _component_key(parsed[n].data) != _component_key(src.data):
                raise TokbenchError(f"member {n} splits text differently from {source} (normalizer or "
                                    "pre-tokenizer differ)", path=parsed[n].source,
                                    fix="unite models of one tokenizer family, or pass check_pretokenizer=False")
    b = _Builder(src)
    bridges: list[int] = []
    new_merges = 0
    pending: list[tuple[str, str]] = []
    for n in joining:
        m = parsed[n]
        member_added = set(m.added_contents)
        for x, y in m.merges:
            r = x + y
            if r in b.vocab or r in member_added:
                continue
            b.add_token(r, n)
            if x in b.vocab and y in b.vocab:  # always, in a well-formed merge order
                b.add_merge(x, y)
                new_merges += 1
            pending.append((r, n))
        for t, _ in sorted(m.vocab.items(), key=lambda kv: kv[1]):
            if t not in b.vocab and t not in member_added:
                b.add_token(t, n)
                pending.append((t, n))
    repair_from = len(b.merges)
    unreachable_new = []
    inherited: list[int] = []
    member_ranks = {n: (_merge_ranks(parsed[n].vocab, parsed[n].merges), _unit_ids(parsed[n].vocab)) for n in joining}
    for s, n in pending:
        raw = bytelevel_bytes(s)
        ranks, units = member_ranks[n]
        if raw is None or _bpe_word(raw, units, ranks) != [parsed[n].vocab[s]]:
            inherited.append(b.vocab[s])  # its own member cannot build it either: nothing to repair
        elif not b.repair(s, bridges):
            unreachable_new.append(b.vocab[s])
    block = parse_tokens_block(tokens)
    for key in block:
        if key in b.vocab or any(a["content"] == key for a in b.added):
            continue
        raw = bytelevel_bytes(key)
        if raw is not None and not (key.startswith("<") and key.endswith(">")):
            b.add_token(key, "tokens")
            if not b.repair(key, bridges):
                unreachable_new.append(b.vocab[key])
    repair_merges = len(b.merges) - repair_from
    # added tokens: the source's stay where they are; the others' are appended
    have = {a["content"] for a in b.added}
    for n in joining:
        for a in parsed[n].added:
            if a["content"] not in have and a["content"] not in b.vocab:
                entry = dict(a, id=b.next_id)
                b.strings[b.next_id] = a["content"]
                b.origin[b.next_id] = n
                b.next_id += 1
                b.added.append(entry)
                have.add(a["content"])
    for key in block:
        if key not in have and key not in b.vocab:
            b.added.append({"id": b.next_id, "content": key, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": False})
            b.strings[b.next_id] = key
            b.origin[b.next_id] = "tokens"
            b.next_id += 1
            have.add(key)
    size = b.next_id
    holes = [i for i in range(size) if i not in b.strings]
    if holes:
        raise TokbenchError(f"the vocabulary source has id gaps (first {holes[0]})", path=src.source,
                            fix="compact the tokenizer's ids before uniting")
    token_list = [b.strings[i] for i in range(size)]
    origin = [b.origin.get(i, source) for i in range(size)]
    perms: dict[str, list[int | None]] = {}
    for n, m in parsed.items():
        contents = m.added_contents
        perms[n] = [contents.get(s, m.vocab.get(s)) for s in token_list]
    data = copy.deepcopy(src.data)
    old_merges = (src.data.get("model") or {}).get("merges") or []
    as_strings = bool(old_merges) and isinstance(old_merges[0], str)
    data["model"]["vocab"] = dict(sorted(b.vocab.items(), key=lambda kv: kv[1]))
    data["model"]["merges"] = [f"{x} {y}" if as_strings else [x, y] for x, y in b.merges]
    data["added_tokens"] = sorted(b.added, key=lambda a: a["id"])
    return UnionVocab(base=source, members=[source, *[n for n in parsed if n != source]], tokens=token_list,
                      origin=origin, permutations=perms, tokenizer=data, new_merges=new_merges,
                      repair_merges=repair_merges, bridges=bridges, unreachable_new=unreachable_new,
                      inherited_unreachable=inherited,
                      tokens_block=block)


# --- mergekit's tokens: block and the row plan ------------------------------------------------------
@dataclass(frozen=True)
class TokenEntry:
    """One entry of mergekit's ``tokens:`` block. kind: "default" (no source: mergekit's defaults),
    "model" (that model's row of the same token), "model_token" (a model's row of token/token_id),
    "zero"."""

    kind: str
    model: str | None = None
    token: str | None = None
    token_id: int | None = None
    force: bool = False


def parse_tokens_block(block: Mapping[str, Any] | None, where: str = "tokenizer.tokens") -> dict[str, TokenEntry]:
    """Validate mergekit's ``tokens:`` mapping (as mergekit's YAML has it) into TokenEntry values."""
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise TokbenchError(f"{where} must be a mapping of token -> {{source, force}}",
                            fix="write e.g. tokens: {'<|im_start|>': {source: base}}")
    out: dict[str, TokenEntry] = {}
    for key, cfg in block.items():
        at = f"{where}[{key!r}]"
        if not isinstance(key, str) or not key:
            raise TokbenchError(f"{where}: token keys must be non-empty strings", fix="quote the token")
        cfg = {} if cfg is None else cfg
        if not isinstance(cfg, Mapping):
            raise TokbenchError(f"{at} must be a mapping with source and/or force", fix="write {source: ..., force: false}")
        extra = set(cfg) - {"source", "force"}
        if extra:
            raise TokbenchError(f"{at}.{sorted(extra)[0]} is not a mergekit token field", fix="use source and force")
        force = cfg.get("force", False)
        if not isinstance(force, bool):
            raise TokbenchError(f"{at}.force must be true or false", fix="write force: true")
        src = cfg.get("source")
        if src is None:
            out[key] = TokenEntry("default", force=force)
        elif isinstance(src, str):
            out[key] = TokenEntry("model", model=src, force=force)
        elif isinstance(src, Mapping):
            kind = src.get("kind")
            if kind == "zero" and set(src) == {"kind"}:
                out[key] = TokenEntry("zero", force=force)
            elif kind == "model_token":
                extra = set(src) - {"kind", "model", "token", "token_id"}
                if extra:
                    raise TokbenchError(f"{at}.source.{sorted(extra)[0]} is not a model_token field",
                                        fix="use model and one of token / token_id")
                if not isinstance(src.get("model"), str):
                    raise TokbenchError(f"{at}.source.model is missing", fix="name the model to copy the row from")
                has_tok, has_id = src.get("token") is not None, src.get("token_id") is not None
                if has_tok == has_id:
                    raise TokbenchError(f"{at}.source needs exactly one of token / token_id",
                                        fix="write token: '<s>' or token_id: 1")
                if has_id and (not isinstance(src["token_id"], int) or isinstance(src["token_id"], bool)
                               or src["token_id"] < 0):
                    raise TokbenchError(f"{at}.source.token_id must be a non-negative integer", fix="write token_id: 1")
                out[key] = TokenEntry("model_token", model=src["model"], token=src.get("token"),
                                      token_id=src.get("token_id"), force=force)
            else:
                raise TokbenchError(f"{at}.source.kind {kind!r} is not model_token or zero",
                                    fix="write {kind: zero} or {kind: model_token, model: M, token: T}")
        else:
            raise TokbenchError(f"{at}.source must be a model name or a mapping", fix="write source: base")
    return out


@dataclass(frozen=True)
class RowSource:
    """How one row of a re-indexed matrix is made: "copy" of refs[0], "mean" of refs, or "zero".
    refs: (member name, member id)."""

    kind: str
    refs: tuple[tuple[str, int], ...] = ()
    why: str = ""


def _model_name(ref: str, union: UnionVocab, aliases: Mapping[str, str]) -> str:
    name = aliases.get(ref, ref)
    if name == "base":
        return union.base if union.base in union.permutations else next(iter(union.permutations))
    if name not in union.permutations:
        raise TokbenchError(f"tokens block names model {ref!r}, which is not a member",
                            fix=f"use one of {', '.join(union.permutations)}")
    return name


def row_plan(union: UnionVocab, tokens: Mapping[str, Any] | None = None, *, base: str | None = None,
             member_tokens: Mapping[str, BpeFile] | None = None,
             aliases: Mapping[str, str] | None = None) -> dict[str, list[RowSource]]:
    """Per member, per union id, where its re-indexed row comes from (mergekit's rules).

    Default source of a token: present in exactly one member -> that member's row; in none -> zero;
    in the base -> the base's row; otherwise the mean of the rows of all members that have it. A
    member uses its own row when it has the token, unless the token's entry says ``force: true``;
    otherwise the entry's source (or the default). tokens: mergekit's block (default: the one given
    to build_union). base: mergekit's base model (default: the union's vocabulary source).
    member_tokens: the members' parsed tokenizers, needed only for ``model_token`` with ``token:``.
    aliases: model reference (as written in mergekit) -> member name.
    """
    block = parse_tokens_block(tokens) if tokens is not None else union.tokens_block
    aliases = dict(aliases or {})
    base = base or union.base
    names = list(union.permutations)
    index = {s: u for u, s in enumerate(union.tokens)}
    missing = [k for k in block if k not in index]
    if missing:
        raise TokbenchError(f"token {missing[0]!r} of the tokens block is not in the union",
                            fix="build the union with the same tokens block")
    explicit: dict[int, TokenEntry] = {index[k]: e for k, e in block.items()}
    plans: dict[str, list[RowSource]] = {n: [] for n in names}
    for u, s in enumerate(union.tokens):
        have = [(n, union.permutations[n][u]) for n in names if union.permutations[n][u] is not None]
        entry = explicit.get(u)
        if entry is None or entry.kind == "default":
            if len(have) == 1:
                default = RowSource("copy", (have[0],), f"only in {have[0][0]}")
            elif not have:
                default = RowSource("zero", (), "in no model")
            elif union.permutations.get(base, [None] * len(union))[u] is not None:
                default = RowSource("copy", ((base, union.permutations[base][u]),), "base row")
            else:
                default = RowSource("mean", tuple(have), "mean of the models that have it")
        elif entry.kind == "zero":
            default = RowSource("zero", (), "tokens: zero")
        elif entry.kind == "model":
            m = _model_name(entry.model, union, aliases)
            mid = union.permutations[m][u]
            if mid is None:
                raise TokbenchError(f"tokens[{s!r}].source: model {entry.model!r} has no token {s!r}",
                                    fix="use {kind: model_token, model: M, token: OTHER} or {kind: zero}")
            default = RowSource("copy", ((m, mid),), f"tokens: {m}")
        else:
            m = _model_name(entry.model, union, aliases)
            if entry.token_id is not None:
                mid = entry.token_id
            else:
                if member_tokens is None or m not in member_tokens:
                    raise TokbenchError(f"tokens[{s!r}].source.token needs {m}'s tokenizer",
                                        fix="pass member_tokens=, or use token_id")
                mid = read_bpe(member_tokens[m]).id_of(entry.token)
                if mid is None:
                    raise TokbenchError(f"tokens[{s!r}].source: {m} has no token {entry.token!r}",
                                        fix="name a token of that model's vocabulary")
            default = RowSource("copy", ((m, int(mid)),), f"tokens: {m} token {entry.token or mid}")
        forced = entry is not None and entry.force
        for n in names:
            own = union.permutations[n][u]
            plans[n].append(RowSource("copy", ((n, own),), "own row") if own is not None and not forced else default)
    return plans


def reindex_rows(plan: Sequence[RowSource], rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """One re-indexed matrix (embedding or head): row u made as plan[u] says from the members' matrices
    (name -> array with that member's ids as rows; all of one width). float32."""
    widths = {a.shape[1] for a in rows.values()}
    if len(widths) != 1:
        raise TokbenchError(f"members have different hidden sizes {sorted(widths)}",
                            fix="unite only models of one architecture size")
    out = np.zeros((len(plan), widths.pop()), dtype=np.float32)
    for u, src in enumerate(plan):
        if src.kind == "zero":
            continue
        vals = []
        for n, i in src.refs:
            mat = rows.get(n)
            if mat is None:
                raise TokbenchError(f"row plan needs the rows of {n}", fix="pass every member's matrix")
            if not 0 <= i < mat.shape[0]:
                raise TokbenchError(f"{n} has no row {i} ({mat.shape[0]} rows)", fix="check token_id")
            vals.append(mat[i])
        out[u] = vals[0] if src.kind == "copy" else np.mean(vals, axis=0)
    return out


# --- mergekit config -> recipe ----------------------------------------------------------------------
_MK_BUILTIN_TEMPLATES = ("alpaca", "chatml", "exaone", "llama3", "mistral")
# ChatML, written for tokbench (mergekit's builtin `chatml` renders the same format)
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
                   " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                   "{% endif %}")


def _model_ref(m: Any) -> str:
    if isinstance(m, str):
        return m
    if isinstance(m, Mapping):
        inner = m.get("model")
        if isinstance(inner, str):
            return inner
        if isinstance(inner, Mapping) and isinstance(inner.get("model"), str):
            return inner["model"]
        if isinstance(m.get("path"), str):
            return m["path"]
    raise TokbenchError(f"cannot read a model reference from {m!r}", fix="write model: org/name or a path")


def _mk_models(config: Mapping[str, Any]) -> list[str]:
    refs: list[str] = []
    for m in config.get("models") or []:
        refs.append(_model_ref(m))
    for sl in config.get("slices") or []:
        for src in (sl or {}).get("sources") or []:
            refs.append(_model_ref(src))
    if config.get("base_model"):
        refs.insert(0, _model_ref(config["base_model"]))
    return list(dict.fromkeys(refs))


def _name_for(ref: str, used: set[str]) -> str:
    stem = ref.rstrip("/").split("/")[-1].split("@")[0].split("+")[0] or "model"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    k, out = 2, name
    while out in used:
        out, k = f"{name}_{k}", k + 1
    used.add(out)
    return out


def _read_mergekit(config: Mapping[str, Any] | str | os.PathLike) -> tuple[Mapping[str, Any], str]:
    if isinstance(config, Mapping):
        return config, "mergekit config"
    import yaml

    path = Path(config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TokbenchError(f"cannot read the mergekit config ({str(exc).splitlines()[0]})", path=path,
                            fix="pass a mergekit merge YAML file") from None
    if not isinstance(data, Mapping):
        raise TokbenchError("not a YAML mapping", path=path, fix="pass a mergekit merge YAML file")
    return data, str(path)


def bundled_template(name: str, where: str, templates: str | os.PathLike | None = None) -> str:
    """The Jinja text of one of mergekit's bundled chat templates (`llama3`, `mistral`, ...), read from
    `templates` (a folder of NAME.jinja files) or else from the installed mergekit package's own data;
    tokbench ships none of them."""
    if templates is not None:
        path = Path(templates) / f"{name}.jinja"
        if not path.is_file():
            raise TokbenchError(f"chat_template {name!r}: no {name}.jinja in the templates folder", path=where,
                                fix=f"pass the folder holding mergekit's chat_templates/{name}.jinja")
        return path.read_text(encoding="utf-8")
    from importlib import resources

    try:
        res = resources.files("mergekit._data.chat_templates") / f"{name}.jinja"
        return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        raise TokbenchError(f"chat_template {name!r} names one of mergekit's bundled templates and mergekit is not "
                            "installed here", path=where,
                            fix="install mergekit, pass its chat_templates folder (--mergekit-templates), or put the "
                                "Jinja text itself in chat_template") from None


def _template_op(template: Any, where: str, files: Path | None, templates=None) -> dict:
    """mergekit's chat_template -> a chat_template op (keep / file)."""
    if not isinstance(template, str):
        raise TokbenchError("chat_template must be a string", path=where, fix="write auto, chatml or a Jinja template")
    if template == "auto":  # mergekit: the most common template of the models; tokbench: the base's
        return {"op": "chat_template", "source": "keep"}
    if template == "chatml":
        text = CHATML_TEMPLATE
    elif template in _MK_BUILTIN_TEMPLATES:
        text = bundled_template(template, where, templates)
    else:
        text = template
    if files is None:
        raise TokbenchError("the chat template has to be written to a file for the recipe", path=where,
                            fix="pass files= (the folder the recipe will live in)")
    dest = atomic_write(files / "chat_template.jinja", text)
    return {"op": "chat_template", "source": "file", "path": dest.name}


def from_mergekit(config: Mapping[str, Any] | str | os.PathLike, files: str | os.PathLike | None = None,
                  templates: str | os.PathLike | None = None) -> dict:
    """Convert the tokenizer part of a mergekit merge config into a tokbench surgery recipe dict.

    Reads ``tokenizer_source:`` (union / base / a model) or ``tokenizer:`` (``source``, ``tokens``,
    ``pad_to_multiple_of``) and ``chat_template:``; the merge method, slices and weights are not a
    tokenizer matter and are left out. Result (the schema of ``tokbench.surgery.recipe``)::

        {"version": 1, "base": BASE, "models": {name: {"path": ref}},
         "ops": [{"op": "union", "with": [names], "tokens": {...}, "emit": "permuted"},
                 {"op": "chat_template", "source": "keep" | "file", "path": "chat_template.jinja"},
                 {"op": "pad_vocab", "multiple_of": N, "init": "mean"}]}

    (ops only for what the config sets). The ``tokens:`` block is copied verbatim with its model
    references rewritten to member names (``base`` for the base model). A ``source`` other than union
    becomes ``"vocab": "base"`` or ``"vocab": <name>`` on the union op. ``chat_template: auto`` keeps
    the base's template; ``chatml``, a Jinja string or one of mergekit's bundled template names (``llama3``,
    ``mistral``, ``alpaca``, ``exaone``: read from ``templates``, a folder of NAME.jinja files, or else from the
    installed mergekit package) is written to ``files/chat_template.jinja`` (files:
    the recipe's folder; paths in a recipe are relative to it). ``pad_vocab`` uses mergekit's mean rows.
    A config path is read with ``yaml.safe_load``.
    """
    config, where = _read_mergekit(config)
    if config.get("tokenizer") is not None and config.get("tokenizer_source") is not None:
        raise TokbenchError("tokenizer and tokenizer_source are both set", path=where,
                            fix="keep one (mergekit refuses both as well)")
    refs = _mk_models(config)
    if not refs:
        raise TokbenchError("no models (base_model, models or slices)", path=where, fix="name the models to merge")
    used: set[str] = {"base"}
    names = {ref: _name_for(ref, used) for ref in refs}
    base_ref = _model_ref(config["base_model"]) if config.get("base_model") else refs[0]
    recipe: dict[str, Any] = {"version": 1, "base": base_ref,
                              "models": {names[r]: {"path": r} for r in refs if r != base_ref}, "ops": []}
    tok = config.get("tokenizer")
    source = config.get("tokenizer_source")
    tokens = None
    pad = None
    if tok is not None:
        if not isinstance(tok, Mapping):
            raise TokbenchError("tokenizer must be a mapping (source, tokens, pad_to_multiple_of)", path=where,
                                fix="write tokenizer: {source: union}")
        extra = set(tok) - {"source", "tokens", "pad_to_multiple_of"}
        if extra:
            raise TokbenchError(f"tokenizer.{sorted(extra)[0]} is not a mergekit tokenizer field", path=where,
                                fix="use source, tokens, pad_to_multiple_of")
        source = tok.get("source", "union")
        tokens = tok.get("tokens")
        pad = tok.get("pad_to_multiple_of")

    def member(ref: str) -> str:
        return "base" if ref in ("base", base_ref) else names.get(ref, ref)

    if source is not None:
        if isinstance(source, str) and source in ("union", "base"):
            vocab = source
        else:
            ref = _model_ref(source)
            if ref != base_ref and ref not in names:
                raise TokbenchError(f"tokenizer source {ref!r} is not one of the merged models", path=where,
                                    fix="name the base_model or a model of the merge")
            vocab = member(ref)
        op: dict[str, Any] = {"op": "union", "with": [names[r] for r in refs if r != base_ref], "emit": "permuted"}
        if vocab != "union":
            op["vocab"] = vocab
        if tokens is not None:
            parse_tokens_block(tokens, where="tokenizer.tokens")
            rewritten = {}
            for key, raw in tokens.items():
                entry = dict(raw or {})
                src = entry.get("source")
                if isinstance(src, str):
                    entry["source"] = member(src)
                elif isinstance(src, Mapping) and src.get("kind") == "model_token":
                    entry["source"] = dict(src, model=member(src["model"]))
                rewritten[key] = entry
            op["tokens"] = rewritten
        recipe["ops"].append(op)
    if config.get("chat_template") is not None:
        recipe["ops"].append(_template_op(config["chat_template"], where, None if files is None else Path(files),
                                          templates))
    if pad is not None:
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 1:
            raise TokbenchError("tokenizer.pad_to_multiple_of must be a positive integer", path=where,
                                fix="write pad_to_multiple_of: 64")
        recipe["ops"].append({"op": "pad_vocab", "multiple_of": pad, "init": "mean"})
    return recipe


__all__ = ["BpeFile", "Reachability", "RowSource", "TokenEntry", "UnionVocab", "build_union", "bundled_template",
           "from_mergekit",
           "CHATML_TEMPLATE", "parse_tokens_block", "reachability", "read_bpe", "reindex_rows", "row_plan"]
