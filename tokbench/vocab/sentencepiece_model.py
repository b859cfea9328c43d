"""Vocabulary from a SentencePiece `.model` file (BPE or Unigram; Llama 2, Mistral)."""
from __future__ import annotations

from pathlib import Path

from tokbench import _core
from tokbench.errors import TokbenchError
from tokbench.vocab.vocabulary import Kind, SegmenterSpec, Style, Vocabulary, added_token_kind, is_placeholder

# sentencepiece_model.proto: ModelProto.SentencePiece.Type and TrainerSpec.ModelType
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_UNIGRAM, _BPE = 1, 2


def parse_model_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception:  # protobuf raises DecodeError (its own hierarchy)
        proto = None
    if proto is None or not proto.pieces:
        raise TokbenchError("not a SentencePiece model (protobuf did not parse, or no pieces)",
                            path=path, fix="pass a SentencePiece .model file")
    return proto


def load_sentencepiece(path: Path) -> Vocabulary:
    proto = parse_model_proto(path)
    model_type = proto.trainer_spec.model_type
    if model_type not in (_UNIGRAM, _BPE):
        raise TokbenchError(f"SentencePiece model type {model_type} is not BPE or Unigram",
                            path=path, fix="tokbench reads BPE and Unigram SentencePiece models")
    n = len(proto.pieces)
    tokens = [p.piece for p in proto.pieces]
    types = [p.type for p in proto.pieces]
    scores = [float(p.score) for p in proto.pieces]
    kinds: list[Kind] = []
    for piece, t in zip(tokens, types):
        if t == _USER_DEFINED:  # text, except placeholders (<unusedN>) and control markup (<start_of_turn>)
            kinds.append(added_token_kind(piece, special=False))
        elif t == _CONTROL and is_placeholder(piece):  # Mistral v3's [control_N] slots
            kinds.append(Kind.UNUSED)
        else:
            kinds.append({_NORMAL: Kind.NORMAL, _UNKNOWN: Kind.SPECIAL, _CONTROL: Kind.CONTROL,
                          _UNUSED: Kind.UNUSED, _BYTE: Kind.BYTE}.get(t, Kind.NORMAL))
    normal_ids = [i for i in range(n) if kinds[i] in (Kind.NORMAL, Kind.BYTE)]
    converted = _core.token_bytes([tokens[i] for i in normal_ids], "metaspace")
    token_bytes: list[bytes | None] = [None] * n
    for i, b in zip(normal_ids, converted):
        token_bytes[i] = b
    byte_fallback = None
    byte_ids = [i for i in range(n) if kinds[i] == Kind.BYTE]
    if len(byte_ids) == 256:
        byte_fallback = sorted(byte_ids, key=lambda i: token_bytes[i])
    word_start = [k == Kind.NORMAL and b is not None and len(b) > 1 and b.startswith(b" ")
                  for b, k in zip(token_bytes, kinds)]
    unk_id = next((i for i in range(n) if types[i] == _UNKNOWN), None)

    if model_type == _BPE:
        # sentencepiece BPE merges the adjacent pair whose merged piece scores highest
        order = sorted(range(n), key=lambda i: (-scores[i], i))
        ranks = [0] * n
        for r, i in enumerate(order):
            ranks[i] = r
        spec = SegmenterSpec("bpe_ranks", units="chars", ranks=ranks, fuse_unk=True)
        family = "bpe"
    else:
        spec = SegmenterSpec("unigram", scores=scores)
        family = "unigram"

    vocab = Vocabulary(
        source=str(path), family=family, format="sentencepiece", style=Style.METASPACE,
        tokens=tokens, token_bytes=token_bytes, kinds=kinds, word_start=word_start,
        segmenter_spec=spec, byte_fallback=byte_fallback, unk_id=unk_id,
        strip_leading_space=bool(proto.normalizer_spec.add_dummy_prefix),
        normalizer=proto.normalizer_spec.name or None,
    )
    spec_ids = {"bos": proto.trainer_spec.bos_id, "eos": proto.trainer_spec.eos_id,
                "pad": proto.trainer_spec.pad_id, "unk": proto.trainer_spec.unk_id}
    vocab.specials = {r: i for r, i in spec_ids.items() if 0 <= i < n}
    return vocab
