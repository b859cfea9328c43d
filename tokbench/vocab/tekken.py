"""Mistral's `tekken.json` (Mistral NeMo, Small 3, Pixtral and later): tiktoken-style BPE ranks.

Layout (as `mistral_common`'s Tekkenizer reads it):

    {"config": {"pattern": REGEX, "num_vocab_tokens": N, "default_vocab_size": V,
                "default_num_special_tokens": S, "version": "v3" | "v7" | ...},
     "vocab": [{"rank": r, "token_bytes": BASE64, "token_str": str | null}, ...],   # rank order
     "special_tokens": [{"rank": i, "token_str": "<s>", "is_control": true}, ...],  # absent before v7
     ...image / audio settings...}

Ids: 0..S-1 are the special tokens (the listed ones, then fillers `<SPECIAL_i>`); rank r of the
first V-S vocab entries is id r + S. Text is split with `pattern` and merged by rank, exactly
tiktoken over those ranks.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from tokbench.errors import TokbenchError
from tokbench.vocab.vocabulary import Kind, SegmenterSpec, Style, Vocabulary, is_placeholder

# mistral_common's list for files that predate "special_tokens" (versions up to v7)
LEGACY_SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                   "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                   "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                   "[TOOL_CONTENT]")
_ROLE_TOKENS = {"<unk>", "<s>", "</s>", "<pad>"}
_FIX = "pass a tekken.json as Mistral ships it (config, vocab and special_tokens)"


def is_tekken(data) -> bool:
    """Whether parsed JSON has tekken's layout."""
    return (isinstance(data, dict) and isinstance(data.get("config"), dict) and "pattern" in data["config"]
            and isinstance(data.get("vocab"), list))


@dataclass
class Tekken:
    """The parts of a tekken.json that define its tokenizer."""

    ranks: dict[bytes, int]  # token bytes -> rank (id = rank + num_special)
    pattern: str
    specials: list[tuple[str, bool]]  # id order: (content, is_control), fillers included
    version: str

    @property
    def num_special(self) -> int:
        return len(self.specials)

    @property
    def special_ids(self) -> dict[str, int]:
        return {content: i for i, (content, _) in enumerate(self.specials)}

    @property
    def id_ranks(self) -> list[tuple[bytes, int]]:
        """(bytes, id) of every vocab token."""
        s = self.num_special
        return [(b, r + s) for b, r in self.ranks.items()]


def read_tekken(path: Path, data: dict) -> Tekken:
    def bad(why: str):
        raise TokbenchError(f"not a valid tekken.json ({why})", path=path, fix=_FIX)

    cfg = data["config"]
    pattern = cfg.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        bad("config.pattern is not a regex string")
    try:
        vocab_size = int(cfg["default_vocab_size"])
        n_special = int(cfg["default_num_special_tokens"])
    except (KeyError, TypeError, ValueError):
        bad("config needs integer default_vocab_size and default_num_special_tokens")
    listed = data.get("special_tokens")
    if listed is None:
        listed = [{"rank": i, "token_str": t, "is_control": True} for i, t in enumerate(LEGACY_SPECIALS)]
    if not isinstance(listed, list) or not all(isinstance(t, dict) and isinstance(t.get("token_str"), str)
                                               for t in listed):
        bad("special_tokens must be a list of {rank, token_str, is_control}")
    listed = sorted(listed, key=lambda t: int(t.get("rank", 0)))
    if [int(t.get("rank", -1)) for t in listed] != list(range(len(listed))):
        bad("special token ranks are not 0, 1, 2, ...")
    if not 0 <= len(listed) <= n_special < vocab_size:
        bad(f"{len(listed)} special tokens, default_num_special_tokens {n_special}, "
            f"default_vocab_size {vocab_size}")
    specials = [(t["token_str"], bool(t.get("is_control", True))) for t in listed]
    specials += [(f"<SPECIAL_{i}>", True) for i in range(len(listed), n_special)]
    if len({c for c, _ in specials}) != n_special:
        bad("special token strings are not unique")
    inner = vocab_size - n_special
    entries = data["vocab"]
    if len(entries) < inner:
        bad(f"{len(entries)} vocab entries for {inner} ids (default_vocab_size - default_num_special_tokens)")
    ranks: dict[bytes, int] = {}
    for r, e in enumerate(entries[:inner]):
        try:
            if int(e["rank"]) != r:
                bad(f"vocab[{r}] has rank {e['rank']}")
            ranks[base64.b64decode(e["token_bytes"], validate=True)] = r
        except (KeyError, TypeError, ValueError, binascii.Error):
            bad(f"vocab[{r}] is not {{rank, token_bytes (base64), token_str}}")
    if len(ranks) != inner:
        bad("two vocab entries have the same bytes")
    return Tekken(ranks=ranks, pattern=pattern, specials=specials, version=str(cfg.get("version")))


def load_tekken(path: Path, data: dict) -> Vocabulary:
    """Vocabulary of a tekken.json (already parsed as `data`)."""
    tk = read_tekken(path, data)
    s = tk.num_special
    size = s + len(tk.ranks)
    tokens: list[str | None] = [None] * size
    token_bytes: list[bytes | None] = [None] * size
    kinds = [Kind.UNUSED] * size
    for i, (content, control) in enumerate(tk.specials):
        tokens[i] = content
        kinds[i] = (Kind.UNUSED if is_placeholder(content) else
                    Kind.SPECIAL if content in _ROLE_TOKENS or not control else Kind.CONTROL)
    for b, r in tk.ranks.items():
        tokens[r + s] = b.decode("utf-8", errors="backslashreplace")
        token_bytes[r + s] = b
        kinds[r + s] = Kind.NORMAL
    word_start = [b is not None and len(b) > 1 and b.startswith(b" ") for b in token_bytes]
    return Vocabulary(
        source=str(path), family="bpe", format="tekken", style=Style.RAW, tokens=tokens,
        token_bytes=token_bytes, kinds=kinds, word_start=word_start,
        segmenter_spec=SegmenterSpec("bpe_ranks", units="bytes", ranks=list(range(size)), ignore_merges=True),
        pattern=tk.pattern,
    )


def tokenizer_json_from_ranks(id_ranks: list[tuple[bytes, int]], pattern: str,
                              specials: dict[str, int]) -> dict:
    """An HF `tokenizer.json` (byte-level BPE, `ignore_merges`) that gives the ids of tiktoken over
    these ranks: every split of a token into two tokens is a merge, ordered by the token's rank,
    then by the ranks of the two parts. Used to write a tekken target that `transformers` loads."""
    from tokbench.bpe.encoding import bytes_to_unicode

    b2u = bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    rank_of = {b: i for b, i in id_ranks}
    merges: list[list[str]] = []
    for b, _ in sorted(id_ranks, key=lambda x: x[1]):
        splits = [(rank_of[b[:k]], rank_of[b[k:]], k) for k in range(1, len(b))
                  if b[:k] in rank_of and b[k:] in rank_of]
        merges.extend([s(b[:k]), s(b[k:])] for _, _, k in sorted(splits))
    # the specials are model vocabulary entries too: tokenizers gives an added token that is not in the
    # vocabulary the next free id, whatever id the file names
    vocab = {**{c: i for c, i in specials.items()}, **{s(b): i for b, i in id_ranks}}
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for c, i in sorted(specials.items(), key=lambda x: x[1])]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }


def tekken_tokenizer_json(path: Path) -> dict:
    """The tokenizer.json equivalent of a tekken.json file (same ids; specials as added tokens)."""
    from tokbench.vocab.hf_json import read_tokenizer_json

    tk = read_tekken(path, read_tokenizer_json(path))
    return tokenizer_json_from_ranks(tk.id_ranks, tk.pattern, tk.special_ids)
