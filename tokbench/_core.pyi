"""Type stubs of the Rust core (rust_ext/, PyO3). Hot loops only; see DESIGN.md.

Errors: invalid arguments raise ValueError with a one-line message; Rust panics never abort
the interpreter (they arrive as pyo3 PanicException).

Text: a str argument holding surrogates follows tokbench.text (tiktoken's rule): read as UTF-16, a
pair becomes its character, a lone surrogate U+FFFD. Threads: num_threads >= 0 (negative: ValueError);
0 or at least the cores runs on rayon's global pool (one thread per core); a smaller count on a kept
pool of that size (at most 4 such pools live at once; rust_ext/src/pool.rs).
"""
from typing import Sequence

import numpy

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
    segmentation (specials, controls, unused). Duplicated bytes: the lowest id wins; empty
    pieces are ignored.
    byte_fallback: 256 ids, the id of "<0xNN>" for each byte value, or None. Ids listed here
    are used only as fallback, never matched as pieces (their pieces entry may hold the byte).
    unk_id: emitted for input that cannot be covered, or None: then such input makes
    segment()/segment_batch() raise ValueError. BPE: one unk per uncovered character
    (HF fuse_unk=false) unless fuse_unk=True; Unigram: adjacent ones always fused.
    Invalid UTF-8 (character-based models): each invalid byte is a character of its own.
    """

    @staticmethod
    def bpe_merges(pieces: Sequence[bytes | None], merges: Sequence[tuple[int, int]], units: str,
                   byte_fallback: Sequence[int] | None = None, unk_id: int | None = None,
                   ignore_merges: bool = False, fuse_unk: bool = False) -> "Segmenter":
        """HF tokenizers BPE: merges[i] = (left_id, right_id) has priority i (lower first);
        the merged token is the id whose bytes are left+right. units: "bytes" (every byte is
        an initial symbol) or "chars" (UTF-8 characters; a character that is not a piece falls
        back to byte_fallback ids per byte, else unk_id). ignore_merges: a whole input that is
        itself a piece is returned as that one id (Llama 3 tokenizer.json). fuse_unk: a run
        of uncovered characters gives one unk (tokenizer.json model.fuse_unk).
        A merge with an id out of range, or whose joined bytes are no piece -> ValueError; a
        merge involving an id whose piece is None can never apply and is ignored; a pair
        listed twice keeps its first priority."""

    @staticmethod
    def bpe_ranks(pieces: Sequence[bytes | None], ranks: Sequence[int], units: str,
                  byte_fallback: Sequence[int] | None = None,
                  unk_id: int | None = None, ignore_merges: bool = False,
                  fuse_unk: bool = False) -> "Segmenter":
        """Rank BPE (tiktoken; sentencepiece BPE with rank = position by descending score):
        repeatedly merge the adjacent pair whose concatenated bytes is a piece of lowest
        ranks[id]; ties -> leftmost pair. ranks has one entry per id.
        ignore_merges: a whole input that is itself a piece is that one id; tiktoken does
        this (pass True for tiktoken vocabularies: 588 Llama 3 tokens are not reached by
        their own merges). fuse_unk: adjacent uncovered characters left after merging give
        one unk; sentencepiece does this (pass True for sentencepiece BPE)."""

    @staticmethod
    def unigram(pieces: Sequence[bytes | None], scores: Sequence[float],
                byte_fallback: Sequence[int] | None = None,
                unk_id: int | None = None) -> "Segmenter":
        """Unigram LM: Viterbi over UTF-8 character boundaries maximising the sum of
        scores; an uncovered character -> byte_fallback ids per byte, else unk_id (adjacent
        unk characters fused into one unk, like sentencepiece / HF Unigram). A character no
        single-character piece covers also gets an unknown edge scored min_score - 10
        (min over the matchable pieces); ties keep the earliest-starting last piece (HF)."""

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
        """segment() over many inputs in parallel (rayon, GIL released) on num_threads threads (see
        the module docs; 0: all cores). An error in any input raises ValueError naming its index."""

# ---- n-gram statistics (rust_ext/src/ngram.rs) --------------------------------------------------
# tokens: the token ids of all documents concatenated, as little-endian uint32 bytes
# (numpy: arr.astype("<u4").tobytes()); offsets: document boundaries as little-endian uint64 bytes,
# offsets[0] == 0, non-decreasing, last == number of tokens. N-grams never cross a boundary.
# Bad lengths / offsets / max_order -> ValueError. The GIL is released while counting.

def ngram_stats(tokens: bytes, offsets: bytes, max_order: int) -> list[dict]:
    """One dict per order k = 1..max_order: order, n (k-grams inside documents), distinct,
    singletons, contexts (distinct (k-1)-prefixes; 1 for k = 1), singleton_contexts,
    block_entropy / block_entropy_mm (plug-in / Miller-Madow H of the k-gram distribution, bits),
    conditional_entropy / conditional_entropy_mm (H(k-gram) - H(prefix), same sample).
    Entropies are NaN when there is no k-gram."""

def ngram_cross_entropy(train: bytes, train_offsets: bytes, test: bytes, test_offsets: bytes,
                        max_order: int, vocab_size: int) -> list[dict]:
    """Held-out cross-entropy of interpolated Witten-Bell models of orders 1..max_order trained on
    train, scored on test. One dict per order: order, bits_per_token, total_bits, n (test tokens),
    unseen (test tokens whose id is not in train). Order 1 interpolates with the uniform
    distribution over vocab_size ids (ValueError when more distinct ids than vocab_size)."""

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
    def encode_ordinary(self, text: str, num_threads: int = 1, as_array: bool = False) -> list[int] | numpy.ndarray: ...
    def encode(self, text: str, allowed: Sequence[int] = ()) -> list[int]:
        """allowed: indices into specials()."""
    def find_special(self, text: str, mask: Sequence[bool]) -> int | None: ...
    def encode_batch(self, texts: Sequence[str], allowed: Sequence[int] = (), num_threads: int = 0) -> list[list[int]]:
        """Parallel (rayon, GIL released); num_threads=0: the global pool (all cores)."""
    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...
    def all_token_bytes(self) -> list[bytes | None]: ...

# ---- BPE trainer (rust_ext/src/bpe/count.rs, train.rs) -------------------------------------
class BpeCounter:
    """Pre-token counts (bytes -> u64) filled by the encoder's splitter; specials are cut out."""
    def __init__(self, pattern: str | None = None, *, individual_digits: bool = False,
                 specials: Sequence[str] = ...) -> None: ...
    def count(self, texts: Sequence[str], num_threads: int = 0, shard_bytes: int = 1 << 20) -> None:
        """map (count shards of about shard_bytes on num_threads) + reduce into this table; GIL released."""
    def merge(self, other: BpeCounter) -> None:
        """reduce: add other's counts into this table."""
    def add_items(self, items: Sequence[tuple[bytes, int]]) -> None: ...
    def items(self) -> list[tuple[bytes, int]]:
        """(pre-token bytes, count), sorted by bytes."""
    def total(self) -> int: ...
    def __len__(self) -> int: ...
    def to_tables(self, partitions: int) -> list[bytes]:
        """map output: this table cut into `partitions` count-table blobs by FNV-1a 64 of the key
        (rust_ext/src/table.rs: sorted keys, varint lengths and counts, checksum); GIL released."""
    def add_table(self, blob: bytes) -> None:
        """Add a count-table blob's counts into this table; ValueError on a corrupt blob."""

class TrainProgress:
    def __init__(self) -> None: ...
    @property
    def done(self) -> int: ...
    def cancel(self) -> None: ...

def bpe_train(counter: BpeCounter, target: int, min_frequency: int = 2, max_token_length: int | None = None,
              progress: TrainProgress | None = None,
              candidates: int = 1) -> tuple[list[bytes], list[tuple[int, int, int, int]]]:
    """Merges up to target tokens (bytes included): (tokens by id, [(left, right, merged, count)]).
    candidates > 1: compression-aware choice among that many most frequent pairs (tokbench.bpe.modes).
    ValueError('interrupted') after progress.cancel(). GIL released."""
def bpe_train_super(runs: BpeCounter, vocab: list[bytes], merges: list[tuple[int, int]], target: int,
                    max_words: int, min_frequency: int = 2, max_token_length: int | None = None,
                    progress: TrainProgress | None = None) -> tuple[list[bytes], list[tuple[int, int, int, int]]]:
    """Supertoken stage 2 from the stage-1 vocab and merges on run counts: (whole vocab, stage-2 merges)."""
def bpe_chunk_runs(runs: BpeCounter, pattern: str | None, max_words: int, seed: int = 0) -> BpeCounter:
    """TokenAdapt-style chunks (1..max_words pre-tokens of `pattern`, seeded) of the runs: a new count table."""

def dynamic_merge(seqs: Sequence[Sequence[int]], cut: Sequence[Sequence[bool]], base_bytes: bytes,
                  max_merges: int | None = None, target_len: int | None = None, max_constituents: int = 0,
                  max_bytes: int = 0, min_count: int = 1
                  ) -> tuple[list[list[int]], list[list[int]], list[tuple[int, int, int, int]], list[int]]:
    """Dynamic BPE over one batch (rust_ext/src/dynamic.rs): cut[s][i] forbids joining positions i-1 and i;
    base_bytes: each base token's byte length as uint32 little-endian (ids must be below their number). Each step merges the
    most frequent allowed adjacent pair (ties: smallest ids), left to right. Stops after max_merges steps, at
    total length <= target_len, or when no pair has count >= min_count; caps 0 = none.
    Returns (merged seqs, constituents of dynamic id n_base + k, [(left, right, merged, count)],
    total length after 0..k merges). ValueError on bad input. GIL released."""

def table_merge(blobs: Sequence[bytes]) -> bytes:
    """reduce: the sum of count-table blobs of one partition, as one blob (k-way merge in Rust, GIL
    released); ValueError on a corrupt blob or blobs of different partitions."""
def table_info(blob: bytes) -> dict:
    """{partition, partitions, keys, total, bytes} of a count-table blob (checksum checked)."""
def ngram_tables(tokens: bytes, offsets: bytes, max_order: int, partitions: int) -> list[bytes]:
    """map of metrics on an executor: k-gram count tables of orders 1..max_order (tokens u32 LE, document
    offsets u64 LE; keys: k ids as u32 big-endian), order-major, `partitions` blobs an order, each order
    partitioned by the hash of the (k-1)-id context (rust_ext/src/table.rs); GIL released."""
def ngram_table_stats(blob: bytes, order: int) -> dict:
    """Integer statistics of a merged partition of an order-`order` k-gram table: n, distinct, singletons,
    contexts, singleton_contexts, joint and ctx (lists of (count, how many), by count)."""
