"""Type stubs of the Rust core (rust_ext/, PyO3). Hot loops only; see DESIGN.md.

Errors: invalid arguments raise ValueError with a one-line message; Rust panics never abort
the interpreter (they arrive as pyo3 PanicException).
"""
from typing import Sequence

def core_version() -> str: ...

def token_bytes(tokens: Sequence[str], style: str) -> list[bytes | None]:
    """Exact bytes each token string stands for under a naming convention.

    style:
      "bytelevel": GPT-2 byte-to-unicode map reversed ("Ġhello" -> b" hello"); None for a token
                   holding a character outside the 256-character map.
      "metaspace": "▁" -> b" "; a whole token of the form "<0xNN>" -> the single byte 0xNN;
                   anything else UTF-8 encoded.
      "wordpiece": a leading "##" removed, rest UTF-8 encoded.
      "utf8":      UTF-8 encoded as is.
    Unknown style -> ValueError.
    """

class Segmenter:
    """Splits byte strings into ids of one vocabulary the way its tokenizer model would
    (no normalisation, no pre-tokenization: the input is one pre-token / word).

    pieces[id] is the exact bytes of token id, or None for ids that never take part in
    segmentation (specials, controls, unused). Duplicated bytes: the lowest id wins.
    byte_fallback: 256 ids, the id of "<0xNN>" for each byte value, or None.
    unk_id: emitted for input that cannot be covered (consecutive uncovered characters
    give one unk each, like sentencepiece without byte fallback), or None -> ValueError.
    """

    @staticmethod
    def bpe_merges(pieces: Sequence[bytes | None], merges: Sequence[tuple[int, int]], units: str,
                   byte_fallback: Sequence[int] | None = None, unk_id: int | None = None,
                   ignore_merges: bool = False) -> "Segmenter":
        """HF tokenizers BPE: merges[i] = (left_id, right_id) has priority i (lower first);
        the merged token is the id whose bytes are left+right. units: "bytes" (every byte is
        an initial symbol) or "chars" (UTF-8 characters; a character that is not a piece falls
        back to byte_fallback ids per byte, else unk_id). ignore_merges: a whole input that is
        itself a piece is returned as that one id (Llama 3 tokenizer.json)."""

    @staticmethod
    def bpe_ranks(pieces: Sequence[bytes | None], ranks: Sequence[int], units: str,
                  byte_fallback: Sequence[int] | None = None,
                  unk_id: int | None = None) -> "Segmenter":
        """Rank BPE (tiktoken; sentencepiece BPE with rank = position by descending score):
        repeatedly merge the adjacent pair whose concatenated bytes is a piece of lowest
        ranks[id]; ties -> leftmost pair. ranks has one entry per id."""

    @staticmethod
    def unigram(pieces: Sequence[bytes | None], scores: Sequence[float],
                byte_fallback: Sequence[int] | None = None,
                unk_id: int | None = None) -> "Segmenter":
        """Unigram LM: Viterbi over UTF-8 character boundaries maximising the sum of
        scores; an uncovered character -> byte_fallback ids per byte, else unk_id (adjacent
        unk characters fused into one unk, like sentencepiece / HF Unigram)."""

    @staticmethod
    def wordpiece(pieces: Sequence[bytes | None], word_start: Sequence[bool], unk_id: int,
                  max_chars: int = 100) -> "Segmenter":
        """WordPiece greedy longest-match-first on character boundaries: the first piece is
        taken from ids with word_start=True, the following from ids with word_start=False
        ("##" continuations); if some position cannot be matched, or the input has more than
        max_chars characters, the whole input is [unk_id]."""

    def segment(self, data: bytes, word_start: bool = True) -> list[int]:
        """Ids for data. word_start only matters for wordpiece: False -> the first piece is a
        continuation too."""

    def segment_batch(self, data: Sequence[bytes], word_start: Sequence[bool] | None = None,
                      num_threads: int = 0) -> list[list[int]]:
        """segment() over many inputs in parallel (rayon, GIL released). num_threads=0: all cores."""

class BpeEncoder:
    """Byte-level BPE encoder (rust_ext/src/bpe). tokens: (bytes, id). merges=None: tiktoken rank
    BPE (rank = id; a pair merges when its concatenation is a token, lowest rank first, whole
    piece looked up first); merges=[(left_id, right_id), ...]: HF tokenizers BPE (priority = index).
    pattern: split regex or None (no split); a pattern ending in `|\\s+(?!\\S)|\\s+` runs on
    regex-automata with a fix-up, others on regex-automata or fancy-regex (engine="auto"|"fast"|"fancy").
    individual_digits: isolate numeric characters before the regex (HF Digits). keep_unmatched:
    text the regex skips becomes pre-tokens (HF Split) instead of being dropped (tiktoken).
    specials: (string, id) matched exactly (leftmost-longest) when allowed. ValueError on bad input."""

    def __init__(self, tokens: Sequence[tuple[bytes, int]], merges: Sequence[tuple[int, int]] | None = None, *,
                 ignore_merges: bool = True, pattern: str | None = None, individual_digits: bool = False,
                 keep_unmatched: bool = False, specials: Sequence[tuple[str, int]] = (),
                 engine: str = "auto") -> None: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def engine(self) -> str: ...
    def specials(self) -> list[tuple[str, int]]: ...
    def split(self, text: str) -> list[str]: ...
    def encode_ordinary(self, text: str) -> list[int]: ...
    def encode(self, text: str, allowed: Sequence[int] = ()) -> list[int]:
        """allowed: indices into specials()."""
    def find_special(self, text: str, mask: Sequence[bool]) -> int | None: ...
    def encode_batch(self, texts: Sequence[str], allowed: Sequence[int] = (), num_threads: int = 0) -> list[list[int]]:
        """Parallel (rayon, GIL released); num_threads=0: the global pool (all cores)."""
    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...
    def all_token_bytes(self) -> list[bytes | None]: ...
