"""Fast byte-level BPE encoding (the Rust `BpeEncoder`) behind a tiktoken-like API.

Two kinds of files:
- tiktoken rank files (`<base64 token> <rank>` lines): rank BPE, ids identical to tiktoken.
- HF `tokenizer.json` with a byte-level BPE model: the merges of the file drive the merge
  order (priority = merge index), so ids are identical to `tokenizers`; the Split regex of the
  pre-tokenizer, `Digits(individual_digits=True)`, `ByteLevel(use_regex=True)` (GPT-2 regex),
  an NFC normalizer and `ignore_merges` are honoured.

Text with lone surrogates follows tiktoken (tokbench.text): a lone surrogate encodes as U+FFFD, so
`encode("\\ud800")` is tiktoken's `[4210]` for GPT-2. Batch calls take `num_threads` >= 0 (0: all
cores; more than the cores runs on all of them, on one shared pool).
"""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import AbstractSet, Literal

from tokbench import _core, limits
from tokbench.errors import TokbenchError
from tokbench.text import clean
from tokbench.vocab.patterns import PATTERNS, resolve_pattern

# The GPT-2 regex as `tokenizers`' ByteLevel(use_regex=True) writes it (same language as
# PATTERNS["gpt2"]).
HF_BYTELEVEL_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

SpecialSet = AbstractSet[str] | Literal["all"]


class DisallowedSpecialError(TokbenchError, ValueError):
    """The text holds a special token that the call did not allow (tiktoken raises ValueError)."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE vocabularies."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def bytelevel_bytes(token: str) -> bytes | None:
    """Raw bytes of a byte-level token string ("Ġhello" -> b" hello"); None if not byte-level."""
    try:
        return bytes(_UNICODE_TO_BYTE[c] for c in token)
    except KeyError:
        return None


@functools.lru_cache(maxsize=1)
def _tokenizers_nfc():
    from tokenizers.normalizers import NFC

    return NFC().normalize_str


def nfc(text: str) -> str:
    """NFC exactly as `tokenizers` does it. Its Unicode tables are older than Python's: characters they
    do not know are left alone (Python's unicodedata reorders e.g. U+0819 U+08D1), so text that is not
    already NFC by Python's check goes through the library's own normalizer."""
    if unicodedata.is_normalized("NFC", text):
        return text
    return _tokenizers_nfc()(text)


class BPE:
    """A byte-level BPE encoder. Build it with `BPE.from_file`."""

    def __init__(self, core: "_core.BpeEncoder", *, name: str, pattern: str | None,
                 nfc: bool = False, source: str = ""):
        self._core = core
        self.name = name
        self.pattern = pattern
        self.nfc = nfc
        self.source = source
        self._specials: list[tuple[str, int]] = core.specials()
        self._special_index = {s: i for i, (s, _) in enumerate(self._specials)}
        if not nfc:  # the hot per-text call goes straight to Rust (same result, no Python frame;
            # a negative num_threads is a ValueError there, a LimitError here)
            self.encode_ordinary = core.encode_ordinary

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, pattern: str | None = None, *,
                  special_tokens: dict[str, int] | None = None, engine: str = "auto") -> "BPE":
        """Load a tiktoken rank file, Mistral's `tekken.json` or a byte-level BPE `tokenizer.json` (or a
        folder holding one), by path or asset name (`gpt2`, `llama3`, `qwen3`, ...).

        pattern: a built-in name (gpt2, llama3 = cl100k, qwen2, o200k, whitespace), "none"
        (no split) or a regex. Default: the file's own (tokenizer.json) or the pattern known
        for the rank file's size (GPT-2, Llama 3); an unknown rank file needs one.
        special_tokens: {string: id}; default: those of the file / the known profile.
        engine: "auto" (a hand-written scanner for the built-in gpt2 / llama3 (cl100k) / qwen2 /
        o200k patterns, recognised by their exact text; else a fast regex with a lookahead fix-up when
        the pattern allows; else fancy-regex), "hand", "fast" or "fancy" (for measurements).
        """
        path = Path(path).expanduser()
        if not path.exists():
            from tokbench.assets import resolve

            path = Path(resolve(str(path), kind="tokenizer"))
        if path.is_dir():
            found = [path / "tokenizer.json"] + sorted(path.glob("tekken*.json"))
            path = next((f for f in found if f.is_file()), None) or path
            if path.is_dir():
                raise TokbenchError("folder has no tokenizer.json or tekken.json", path=path,
                                    fix="pass the tokenizer.json, tekken.json or a .tiktoken rank file")
        if not path.is_file():
            raise TokbenchError("no such file", path=path, fix="check the path")
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        try:
            if path.suffix == ".json" or head.startswith(b"{"):
                return cls._from_tokenizer_json(path, pattern, special_tokens, engine)
            return cls._from_tiktoken(path, pattern, special_tokens, engine)
        except TokbenchError:
            raise
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # a file of the wrong schema
            raise TokbenchError(f"not a tokenizer file this encoder can read ({type(exc).__name__}: {exc})",
                                path=path, fix="pass a byte-level BPE tokenizer.json or a .tiktoken rank file") from None

    @classmethod
    def from_ranks(cls, ranks: dict[bytes, int], pattern: str | None,
                   special_tokens: dict[str, int] | None = None, *, name: str = "ranks",
                   engine: str = "auto") -> "BPE":
        """tiktoken semantics over `ranks` (bytes -> rank = id)."""
        regex = resolve_pattern(pattern)
        try:
            core = _core.BpeEncoder(list(ranks.items()), None, pattern=regex,
                                    specials=sorted((special_tokens or {}).items(), key=lambda x: x[1]),
                                    engine=engine)
        except ValueError as exc:
            raise TokbenchError(f"cannot build the encoder ({exc})",
                                fix="check the pattern and the special tokens") from None
        return cls(core, name=name, pattern=regex, source="tiktoken")

    @classmethod
    def _from_tiktoken(cls, path: Path, pattern, special_tokens, engine) -> "BPE":
        from tokbench.vocab.tiktoken_file import builtin_profile, read_ranks

        ranks = read_ranks(path)
        known_pattern, known_specials = builtin_profile(len(ranks), path.name)
        if pattern is None:
            if known_pattern is None:
                raise TokbenchError("no split pattern is known for this rank file", path=path,
                                    fix=f"pass pattern= one of {', '.join(sorted(PATTERNS))}, none, or a regex")
            pattern = known_pattern
        specials = known_specials if special_tokens is None else special_tokens
        try:
            return cls.from_ranks(ranks, pattern, specials, name=path.name, engine=engine)
        except TokbenchError as exc:
            raise TokbenchError(str(exc), path=path) from None

    @classmethod
    def _from_tekken(cls, path: Path, data: dict, pattern, special_tokens, engine) -> "BPE":
        """tekken.json: tiktoken over its ranks with its pattern; id = rank + number of specials."""
        from tokbench.vocab.tekken import read_tekken

        tk = read_tekken(path, data)
        regex = resolve_pattern(pattern) if pattern is not None else tk.pattern
        specials = tk.special_ids if special_tokens is None else special_tokens
        try:
            core = _core.BpeEncoder(tk.id_ranks, None, pattern=regex,
                                    specials=sorted(specials.items(), key=lambda x: x[1]), engine=engine)
        except ValueError as exc:
            raise TokbenchError(f"cannot build the encoder ({exc})", path=path,
                                fix="check the pattern and the special tokens") from None
        return cls(core, name=path.stem, pattern=regex, source="tekken")

    @classmethod
    def _from_tokenizer_json(cls, path: Path, pattern, special_tokens, engine) -> "BPE":
        from tokbench.vocab.hf_json import read_tokenizer_json
        from tokbench.vocab.tekken import is_tekken

        data = read_tokenizer_json(path)
        if is_tekken(data):
            return cls._from_tekken(path, data, pattern, special_tokens, engine)
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or "vocab" not in model:
            raise TokbenchError("no model.vocab, so not a tokenizers tokenizer.json", path=path,
                                fix="pass a tokenizer.json saved by HF tokenizers")

        def refuse(why: str):
            raise TokbenchError(f"not a byte-level BPE tokenizer this encoder supports: {why}",
                                path=path, fix="use tokbench.vocab for other tokenizer models")

        if model.get("type", "BPE") != "BPE" or not isinstance(model["vocab"], dict) \
                or "merges" not in model:
            refuse(f"model type {model.get('type')!r}")
        if model.get("byte_fallback"):
            refuse("byte_fallback is set")
        if model.get("dropout"):
            refuse("BPE dropout is set")
        for k in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(k):
                refuse(f"{k}={model[k]!r}")
        nfc = False
        norm = data.get("normalizer")
        if norm is not None:
            kinds = [n.get("type") for n in _components(norm, "normalizers")]
            if kinds in (["NFC"], ["Sequence", "NFC"]):
                nfc = True
            elif kinds not in ([], ["Sequence"]):
                refuse(f"normalizer {'+'.join(map(str, kinds))}")
        regex, digits = _read_pre_tokenizer(data.get("pre_tokenizer"), refuse)
        if pattern is not None:
            regex = resolve_pattern(pattern)

        to_bytes: dict[str, bytes] = {}
        tokens: list[tuple[bytes, int]] = []
        for tok, i in model["vocab"].items():
            b = bytelevel_bytes(tok)
            if b is None:
                continue  # not byte-level: such a token can never be produced
            to_bytes[tok] = b
            tokens.append((b, int(i)))
        if len(tokens) < 0.9 * max(1, len(model["vocab"])):
            refuse("the vocabulary is not written in the byte-level alphabet")
        vocab = model["vocab"]
        merges: list[tuple[int, int]] = []
        for m in model["merges"]:
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in to_bytes and b in to_bytes:
                merges.append((int(vocab[a]), int(vocab[b])))
        if special_tokens is None:
            special_tokens = {t["content"]: int(t["id"]) for t in data.get("added_tokens") or []}
        specials = sorted(special_tokens.items(), key=lambda x: x[1])
        try:
            core = _core.BpeEncoder(tokens, merges, ignore_merges=bool(model.get("ignore_merges")),
                                    pattern=regex, individual_digits=digits, keep_unmatched=True,
                                    specials=specials, engine=engine)
        except ValueError as exc:
            raise TokbenchError(f"cannot build the encoder ({exc})", path=path,
                                fix="check that the merges match the vocabulary") from None
        return cls(core, name=path.parent.name or path.name, pattern=regex, nfc=nfc,
                   source="tokenizer.json")

    # ---- properties ---------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self._core.n_vocab

    @property
    def engine(self) -> str:
        """The pre-tokenizer engine in use: hand, fast+fixup, fast, fancy or none."""
        return self._core.engine

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    def __repr__(self) -> str:
        return f"BPE({self.name!r}, n_vocab={self.n_vocab}, engine={self.engine!r})"

    # ---- encoding -----------------------------------------------------------------------
    def _norm(self, text: str) -> str:
        # the Rust core applies tokbench.text's surrogate rule itself; NFC must see the clean text
        return nfc(clean(text)) if self.nfc else text

    def _allowed(self, allowed_special: SpecialSet) -> list[int]:
        if allowed_special == "all":
            return list(range(len(self._specials)))
        try:
            return [self._special_index[s] for s in allowed_special]
        except KeyError as exc:
            raise TokbenchError(f"{exc.args[0]!r} is not a special token of {self.name}",
                                fix="allow only strings listed in .special_tokens") from None

    def _disallowed_mask(self, allowed: list[int], disallowed_special: SpecialSet) -> list[bool] | None:
        if not self._specials:
            return None
        if disallowed_special == "all":
            mask = [True] * len(self._specials)
            for i in allowed:
                mask[i] = False
        else:
            mask = [False] * len(self._specials)
            for i in self._allowed(disallowed_special):
                mask[i] = True
        return mask if any(mask) else None

    def _check(self, text: str, mask: list[bool] | None) -> None:
        if mask is None:
            return
        hit = self._core.find_special(text, mask)
        if hit is not None:
            tok = self._specials[hit][0]
            raise DisallowedSpecialError(
                f"the text contains the special token {tok!r}, which is not allowed",
                fix=f"pass allowed_special={{{tok!r}}} (or 'all') to encode it as a special, "
                    "or disallowed_special=() to encode it as ordinary text")

    def pre_tokenize(self, text: str) -> list[str]:
        """The pre-tokens of text (after NFC when the tokenizer normalises), specials not split."""
        return self._core.split(self._norm(text))

    def encode_ordinary(self, text: str, *, num_threads: int = 1, as_array: bool = False):
        """Ids of text; special-token strings are ordinary text.

        num_threads > 1 (0: all cores) encodes one long text on that many threads: it is cut where
        the pre-tokenizer always has a boundary (GPT-2, cl100k / Llama 3, Qwen2 and o200k patterns; other
        patterns run on one thread) and the spans are encoded in parallel, with the same ids.
        as_array=True returns a read-only numpy uint32 array instead of a list (no Python int per
        id: the fastest way to get many ids out)."""
        return self._core.encode_ordinary(self._norm(text), limits.threads(num_threads), as_array)

    def encode(self, text: str, *, allowed_special: SpecialSet = frozenset(),
               disallowed_special: SpecialSet = "all") -> list[int]:
        """Ids of text (tiktoken semantics): allowed specials become their ids; a disallowed
        special in the text raises DisallowedSpecialError; other specials are ordinary text.
        `allowed_special="all"` gives the ids of `tokenizers` for a tokenizer.json."""
        text = self._norm(text)
        allowed = self._allowed(allowed_special)
        self._check(text, self._disallowed_mask(allowed, disallowed_special))
        return self._core.encode(text, allowed)

    def encode_ordinary_batch(self, texts: Sequence[str], *, num_threads: int = 0) -> list[list[int]]:
        """encode_ordinary over many texts in parallel (num_threads=0: all cores), GIL released."""
        num_threads = limits.threads(num_threads)
        texts = [self._norm(t) for t in texts] if self.nfc else texts if isinstance(texts, list) else list(texts)
        return self._core.encode_batch(texts, [], num_threads)

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 0,
                     allowed_special: SpecialSet = frozenset(),
                     disallowed_special: SpecialSet = "all") -> list[list[int]]:
        """encode over many texts in parallel (num_threads=0: all cores), GIL released."""
        num_threads = limits.threads(num_threads)
        texts = [self._norm(t) for t in texts] if self.nfc else list(texts)
        allowed = self._allowed(allowed_special)
        mask = self._disallowed_mask(allowed, disallowed_special)
        if mask is not None:
            for t in texts:
                self._check(t, mask)
        return self._core.encode_batch(texts, allowed, num_threads)

    # ---- decoding -----------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        try:
            return self._core.decode_bytes(list(ids))
        except (ValueError, OverflowError) as exc:
            raise TokbenchError(f"cannot decode: {exc}", fix=f"ids must be in 0..{self.n_vocab - 1}") from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def token_bytes(self) -> list[bytes | None]:
        """The bytes of every id (None where an id has no token)."""
        return self._core.all_token_bytes()


def _components(node, key: str) -> list[dict]:
    if not isinstance(node, dict):
        return []
    out = [node]
    for child in node.get(key) or []:
        out.extend(_components(child, key))
    return out


def _read_pre_tokenizer(pre, refuse) -> tuple[str | None, bool]:
    """(split regex, individual digits) of a byte-level pre-tokenizer; refuse() anything else."""
    parts = [p for p in _components(pre, "pretokenizers") if p.get("type") != "Sequence"]
    regex: str | None = None
    digits = False
    bytelevel = False
    for p in parts:
        kind = p.get("type")
        if kind == "Split":
            if regex is not None:
                refuse("more than one regex split")
            pat = p.get("pattern") or {}
            if "Regex" not in pat:
                refuse("a Split on a literal string")
            if p.get("behavior", "Isolated") != "Isolated" or p.get("invert"):
                refuse(f"a Split with behavior {p.get('behavior')} invert={p.get('invert')}")
            regex = pat["Regex"]
        elif kind == "Digits":
            if not p.get("individual_digits"):
                refuse("Digits(individual_digits=False)")
            if regex is not None:
                refuse("Digits after a regex split")
            digits = True
        elif kind == "ByteLevel":
            bytelevel = True
            if p.get("add_prefix_space"):
                refuse("ByteLevel(add_prefix_space=True)")
            if p.get("use_regex", True):
                if regex is not None:
                    refuse("a regex split and ByteLevel(use_regex=True)")
                regex = HF_BYTELEVEL_REGEX
        else:
            refuse(f"pre-tokenizer {kind}")
    if not bytelevel:
        refuse("no ByteLevel pre-tokenizer")
    return regex, digits


def load(path: str | Path, pattern: str | None = None, **kwargs) -> BPE:
    """Shorthand for BPE.from_file."""
    return BPE.from_file(path, pattern, **kwargs)


__all__ = ["BPE", "DisallowedSpecialError", "bytes_to_unicode", "bytelevel_bytes", "load",
           "HF_BYTELEVEL_REGEX"]

