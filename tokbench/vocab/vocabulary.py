"""`Vocabulary`: every token of a tokenizer as the exact bytes it stands for.

The token-string conventions of the tokenizer families (`Ġ` byte-level, `▁` metaspace, `##`
WordPiece continuations, `<0xNN>` byte fallback) are normalised by the loaders in this package and
nowhere else. What the rest of tokbench sees is, per id: bytes, kind, word-start flag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Iterable, Sequence


class Kind(str, Enum):
    """What an id is. Values are stable strings (they appear in JSON output)."""

    NORMAL = "normal"  # an ordinary piece of text
    SPECIAL = "special"  # an added/special token matched as a whole (bos, eos, chat tokens, unk)
    CONTROL = "control"  # control symbols: sentencepiece/tekken controls, non-special markup such as
    #                      <|fim_prefix|> or <start_of_turn> (stand for no text)
    BYTE = "byte"  # byte-fallback token <0xNN>
    UNUSED = "unused"  # a hole, a sentencepiece UNUSED piece, or a reserved placeholder
    #                    (<unusedN>, [unusedN], <|reserved_special_token_N|>, [control_N], <SPECIAL_N>)


class Style(str, Enum):
    """How the tokenizer marks word starts in its token strings."""

    BYTELEVEL = "bytelevel"  # GPT-2 byte-to-unicode map, word start = leading space (Ġ)
    METASPACE = "metaspace"  # sentencepiece "▁", word start = leading space
    WORDPIECE = "wordpiece"  # "##" marks continuations; word start = no "##"
    RAW = "raw"  # token bytes given directly (tiktoken rank files); word start = leading space


# Styles where a word start is a leading space inside the token's bytes.
SPACE_PREFIX_STYLES = (Style.BYTELEVEL, Style.METASPACE, Style.RAW)

# Reserved slots that stand for nothing yet: Gemma <unusedN>, BERT [unusedN], Llama 3
# <|reserved_special_token_N|>, Mistral v3 [control_N], tekken's <SPECIAL_N> fillers.
_PLACEHOLDER = re.compile(r"^(?:<unused\d+>|\[unused\d+\]|<\|reserved_special_token_\d+\|>"
                          r"|\[control_\d+\]|<SPECIAL_\d+>)$")
# Markup that an added token marked non-special still uses as a control symbol, not as text:
# <|fim_prefix|>-style tokens, Gemma's <start_of_turn>/<end_of_turn>/<start_of_image>, <mask>, [@BOS@].
_CONTROL_MARKUP = re.compile(r"^(?:<\|[^|\s]+\|>|<(?:start|end)_of_[a-z_]+>|<mask>|<2mass>|\[@[A-Z_]+@\])$")


def is_placeholder(token: str | None) -> bool:
    """A reserved, meaningless slot (kind UNUSED wherever a loader finds it)."""
    return token is not None and _PLACEHOLDER.match(token) is not None


def added_token_kind(content: str, special: bool) -> Kind:
    """Kind of a tokenizer.json added token: placeholders are UNUSED; special ones SPECIAL;
    non-special control markup CONTROL; any other non-special added token is text (NORMAL)."""
    if is_placeholder(content):
        return Kind.UNUSED
    if special:
        return Kind.SPECIAL
    return Kind.CONTROL if _CONTROL_MARKUP.match(content) else Kind.NORMAL


@dataclass
class SegmenterSpec:
    """What the Rust segmenter needs to split bytes the way this tokenizer's model does."""

    algorithm: str  # "bpe_merges" | "bpe_ranks" | "unigram" | "wordpiece"
    units: str = "bytes"  # "bytes" | "chars" (BPE only)
    merges: list[tuple[int, int]] | None = None
    ranks: list[int] | None = None
    scores: list[float] | None = None
    ignore_merges: bool = False  # an input that is itself a piece is that one id (tiktoken, Llama 3)
    fuse_unk: bool = False  # a run of uncovered characters gives one unk (sentencepiece)
    max_chars: int = 100


@dataclass
class Vocabulary:
    """A tokenizer's vocabulary with exact bytes per id.

    Attributes:
        source: file or folder it was loaded from.
        family: the model type as loaded ("bpe", "unigram", "wordpiece").
        format: the file format ("tokenizer.json", "sentencepiece", "tiktoken", "vocab.json+merges.txt").
        style: word-start convention of its token strings.
        tokens: the original token strings (specials as their content; None for holes).
        token_bytes: exact bytes per id (None where the id stands for no text: specials, controls, holes).
        kinds: Kind per id.
        word_start: True where the token begins a word.
        specials: role -> id for bos, eos, pad, unk (only roles the tokenizer has).
        strip_leading_space: the tokenizer removes one leading space when decoding (dummy prefix).
        pattern: pre-tokenizer split regex when known (tiktoken files, Split pre-tokenizers).
    """

    source: str
    family: str
    format: str
    style: Style
    tokens: list[str | None]
    token_bytes: list[bytes | None]
    kinds: list[Kind]
    word_start: list[bool]
    specials: dict[str, int] = field(default_factory=dict)
    segmenter_spec: SegmenterSpec | None = None
    byte_fallback: list[int] | None = None
    unk_id: int | None = None
    strip_leading_space: bool = False
    pattern: str | None = None
    normalizer: str | None = None

    def __len__(self) -> int:
        return len(self.token_bytes)

    @property
    def size(self) -> int:
        return len(self.token_bytes)

    @property
    def uncovered_id(self) -> int:
        """What segment() returns for input this vocabulary cannot cover when it has neither
        an unk token nor byte fallback (e.g. SmolLM2 has no token for byte 0xC0): size."""
        return len(self.token_bytes)

    def ids_of_kind(self, kind: Kind) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == kind]

    @cached_property
    def kind_counts(self) -> dict[str, int]:
        counts = {k.value: 0 for k in Kind}
        for k in self.kinds:
            counts[k.value] += 1
        return counts

    # --- keys used for alignment -------------------------------------------------------------
    @cached_property
    def key_list(self) -> list[tuple[bytes, bool] | None]:
        """Per id, the style-independent identity of a normal/byte token: (bytes without the
        word-start space, word_start). None for ids that stand for no text."""
        out: list[tuple[bytes, bool] | None] = [None] * len(self.token_bytes)
        space_style = self.style in SPACE_PREFIX_STYLES
        normal, byte = Kind.NORMAL, Kind.BYTE
        for i, (b, k, ws) in enumerate(zip(self.token_bytes, self.kinds, self.word_start)):
            if b is None:
                continue
            if k is normal:
                if space_style:
                    out[i] = (b[1:], True) if len(b) > 1 and b[0] == 32 else (b, False)
                else:
                    out[i] = (b, ws)
            elif k is byte:
                out[i] = (b, False)
        return out

    def key(self, i: int) -> tuple[bytes, bool] | None:
        return self.key_list[i]

    @cached_property
    def keys(self) -> dict[tuple[bytes, bool], int]:
        """key -> lowest id with that key (normal tokens first, then byte-fallback tokens)."""
        out: dict[tuple[bytes, bool], int] = {}
        kl = self.key_list
        for kind in (Kind.NORMAL, Kind.BYTE):
            for i, k in enumerate(self.kinds):
                if k is kind and kl[i] is not None and kl[i] not in out:
                    out[kl[i]] = i
        return out

    def surface(self, key: tuple[bytes, bool]) -> tuple[bytes, bool]:
        """Bytes this vocabulary would segment for a key, plus the word-start flag to pass."""
        data, ws = key
        if ws and self.style in SPACE_PREFIX_STYLES:
            return b" " + data, True
        return data, ws

    @cached_property
    def special_contents(self) -> dict[str, int]:
        """content string -> id for specials and controls."""
        return {
            t: i
            for i, (t, k) in enumerate(zip(self.tokens, self.kinds))
            if t is not None and k in (Kind.SPECIAL, Kind.CONTROL)
        }

    # --- decoding ----------------------------------------------------------------------------
    def join_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of ids (ids without text are skipped), with the family's join
        rule: WordPiece puts a space before each word-start piece but the first; tokenizers with
        a dummy prefix drop one leading space."""
        parts: list[bytes] = []
        tb, ws = self.token_bytes, self.word_start
        wordpiece = self.style == Style.WORDPIECE
        for i in ids:
            b = tb[i]
            if b is None:
                continue
            if wordpiece and ws[i] and parts:
                parts.append(b" ")
            parts.append(b)
        out = b"".join(parts)
        if self.strip_leading_space and out.startswith(b" "):
            out = out[1:]
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return self.join_bytes(ids).decode("utf-8", errors="replace")

    # --- segmentation (Rust) -----------------------------------------------------------------
    @cached_property
    def segmenter(self):
        """A tokbench._core.Segmenter splitting bytes into ids the way this tokenizer's model
        does (no normalisation, no pre-tokenization)."""
        from tokbench.vocab.segmenter import build_segmenter

        return build_segmenter(self)

    def segment(self, data: bytes, word_start: bool = True) -> list[int]:
        """Ids of data as this tokenizer's model splits one word; uncovered input gives
        uncovered_id (only for vocabularies without unk and byte fallback)."""
        return self.segmenter.segment(data, word_start)

    def segment_batch(self, data: Sequence[bytes], word_start: Sequence[bool] | None = None,
                      num_threads: int = 0) -> list[list[int]]:
        return self.segmenter.segment_batch(list(data), None if word_start is None else list(word_start),
                                            num_threads)

