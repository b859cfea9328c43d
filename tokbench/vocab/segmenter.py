"""Build the Rust segmenter for a Vocabulary from its SegmenterSpec."""
from __future__ import annotations

from tokbench import _core
from tokbench.errors import TokbenchError
from tokbench.vocab.vocabulary import Kind, Vocabulary


def segment_pieces(vocab: Vocabulary) -> list[bytes | None]:
    """Bytes of the ids that segmentation may produce (normal tokens and byte fallbacks)."""
    return [
        b if k in (Kind.NORMAL, Kind.BYTE) else None
        for b, k in zip(vocab.token_bytes, vocab.kinds)
    ]


def build_segmenter(vocab: Vocabulary) -> "_core.Segmenter":
    try:
        return _build(vocab)
    except ValueError as exc:  # the core's check of the model (merges, ranks, ids) failed
        raise TokbenchError(f"the tokenizer's model is inconsistent ({exc})", path=vocab.source,
                            fix="check that its merges / scores match its vocabulary") from None


def _build(vocab: Vocabulary) -> "_core.Segmenter":
    spec = vocab.segmenter_spec
    if spec is None:
        raise TokbenchError("this vocabulary has no segmentation model", path=vocab.source,
                            fix="load it from a tokenizer file that includes its model")
    pieces = segment_pieces(vocab)
    unk = vocab.unk_id
    if unk is None and vocab.byte_fallback is None:
        # input this vocabulary cannot cover (e.g. a byte with no token) comes out as the id
        # one past the end, Vocabulary.uncovered_id, instead of failing the whole batch
        pieces.append(None)
        unk = vocab.uncovered_id
    if spec.algorithm == "bpe_merges":
        return _core.Segmenter.bpe_merges(pieces, spec.merges, spec.units, vocab.byte_fallback,
                                          unk, spec.ignore_merges, spec.fuse_unk)
    if spec.algorithm == "bpe_ranks":
        ranks = spec.ranks if len(spec.ranks) == len(pieces) else list(spec.ranks) + [len(pieces)]
        return _core.Segmenter.bpe_ranks(pieces, ranks, spec.units, vocab.byte_fallback, unk,
                                         spec.ignore_merges, spec.fuse_unk)
    if spec.algorithm == "unigram":
        scores = spec.scores if len(spec.scores) == len(pieces) else list(spec.scores) + [0.0]
        return _core.Segmenter.unigram(pieces, scores, vocab.byte_fallback, unk)
    if spec.algorithm == "wordpiece":
        if vocab.unk_id is None:
            raise TokbenchError("WordPiece vocabulary without an unk token", path=vocab.source,
                                fix="set model.unk_token in the tokenizer file")
        return _core.Segmenter.wordpiece(pieces, vocab.word_start, vocab.unk_id, spec.max_chars)
    raise ValueError(f"unknown segmentation algorithm {spec.algorithm!r}")
