"""The tokenizer half of a GGUF file (tokenizer.ggml.* keys) from a Hugging Face model folder.

Two tokenizer families, told apart by their tokenizer.json:
- byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM): GGUF model `gpt2`, tokens as tokenizer.json spells them, merges,
  and the pre-tokenizer name llama.cpp knows (PRE_TOKENIZERS; an unknown one is refused unless named explicitly);
- SentencePiece-style BPE (Metaspace or a Replace(" ", "▁") normaliser, usually byte fallback: Llama 2,
  Mistral, tbd-mistral-d128): GGUF model `llama`, pre-tokenizer `default`, token scores, BYTE types for the
  <0xXX> tokens, add_space_prefix from the Metaspace / Prepend step, and the merges (transformers' GGUF loader
  rebuilds the tokenizer from them). Scores: the folder's tokenizer.model's own piece scores when it is there and
  spells the same tokens (what llama.cpp's converter writes), else derived from the merge ranks (the token made by
  merge r scores -(r + 1), so llama.cpp's highest-score-first merging follows the merge order; tokens no merge
  makes score below every merge; control, unknown and byte tokens 0).
Token types: special added tokens CONTROL, other added tokens USER_DEFINED, reserved placeholders and ids without a
token UNUSED, the SentencePiece unknown token UNKNOWN, <0xXX> byte tokens BYTE.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tokbench.errors import TokbenchError
from tokbench.vocab import Kind, load_vocabulary
from tokbench.vocab.chat import end_of_turn
from tokbench.vocab.model_io import _text_config

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType (= SentencePiece types)
SPM_BPE = 2  # sentencepiece TrainerSpec.ModelType
SPACE = "\u2581"

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
# pre-tokenizer steps (normalised, see _pre_signature) -> llama.cpp's tokenizer.ggml.pre name
PRE_TOKENIZERS = {
    (("split", _GPT2), ("bytelevel",)): "gpt-2",
    (("split", _LLAMA3), ("bytelevel",)): "llama-bpe",
    (("split", _QWEN2), ("bytelevel",)): "qwen2",
    (("digits",), ("split", _GPT2), ("bytelevel",)): "smollm",
}
def _pre_signature(pre: dict | None) -> tuple:
    out: list[tuple] = []
    for s in _steps(pre, "pretokenizers"):
        t = s.get("type")
        if t == "Split" and isinstance(s.get("pattern"), dict) and "Regex" in s["pattern"]:
            out.append(("split", s["pattern"]["Regex"]))
        elif t == "ByteLevel":
            if s.get("use_regex", True):
                out.append(("split", _GPT2))
            out.append(("bytelevel",))
        elif t == "Digits" and s.get("individual_digits"):
            out.append(("digits",))
        else:
            out.append((str(t),))
    return tuple(out)


def pre_tokenizer_name(tokenizer_json: dict) -> str | None:
    """llama.cpp's name for the tokenizer.json pre-tokenizer, or None when it is not a known one."""
    return PRE_TOKENIZERS.get(_pre_signature(tokenizer_json.get("pre_tokenizer")))


def _first(v):
    return v[0] if isinstance(v, list) and v else (v if isinstance(v, int) else None)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TokbenchError(f"not readable JSON ({exc})", path=path, fix="restore the file") from None
    return data if isinstance(data, dict) else {}


def _steps(step: dict | None, key: str) -> list[dict]:
    step = step if isinstance(step, dict) else {}
    return [s for s in step.get(key, []) if isinstance(s, dict)] if step.get("type") == "Sequence" else [step]


def sentencepiece_style(tj: dict) -> bool:
    """A BPE tokenizer.json that marks spaces with \u2581 (Metaspace or a Replace normaliser), as SentencePiece."""
    if (tj.get("model") or {}).get("type") != "BPE":
        return False
    if any(s.get("type") == "Metaspace" for s in _steps(tj.get("pre_tokenizer"), "pretokenizers")):
        return True
    return any(s.get("type") == "Replace" and s.get("content") == SPACE for s in _steps(tj.get("normalizer"),
                                                                                      "normalizers"))


def _space_prefix(tj: dict) -> bool:
    for s in _steps(tj.get("pre_tokenizer"), "pretokenizers"):
        if s.get("type") == "Metaspace":
            return s.get("prepend_scheme", "always" if s.get("add_prefix_space", True) else "never") != "never"
    return any(s.get("type") == "Prepend" and s.get("prepend") == SPACE for s in _steps(tj.get("normalizer"),
                                                                                       "normalizers"))


def _merges(model: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _token_types(vocab, rows: int, added: dict[int, dict], unk: int | None) -> tuple[list[str], list[int]]:
    tokens: list[str] = []
    types: list[int] = []
    for i in range(rows):
        tok = vocab.tokens[i] if i < len(vocab) else None
        kind = vocab.kinds[i] if i < len(vocab) else Kind.UNUSED
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tokens.append(tok)
        if kind == Kind.UNUSED:
            types.append(UNUSED)  # reserved placeholders
        elif i == unk:
            types.append(UNKNOWN)
        elif i in added:
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif kind in (Kind.SPECIAL, Kind.CONTROL):
            types.append(CONTROL)
        elif kind == Kind.BYTE:
            types.append(BYTE)
        else:
            types.append(NORMAL)
    return tokens, types


def _proto(folder: Path):
    """The folder's tokenizer.model (SentencePiece BPE) as parsed protobuf, or None."""
    spm = folder / "tokenizer.model"
    if not spm.is_file() or importlib.util.find_spec("sentencepiece") is None:
        return None
    from tokbench.vocab.sentencepiece_model import parse_model_proto

    proto = parse_model_proto(spm)
    return proto if proto.trainer_spec.model_type == SPM_BPE else None


def _spm_scores(folder: Path, tokens: list[str], types: list[int], merges: list[str]) -> tuple[list[float], str]:
    proto = _proto(folder)
    if proto is not None and len(proto.pieces) <= len(tokens) and all(
            p.piece == tokens[i] for i, p in enumerate(proto.pieces)):
        scores = [float(p.score) for p in proto.pieces]
        return scores + [0.0] * (len(tokens) - len(scores)), "tokenizer.model"
    made: dict[str, int] = {}
    for r, m in enumerate(merges):
        made.setdefault(m.replace(" ", "", 1), r)
    floor = -float(len(merges) + 1)
    scores = [0.0 if t in (UNKNOWN, CONTROL, BYTE, UNUSED) else -float(made[tok] + 1) if tok in made else floor
              for tok, t in zip(tokens, types)]
    return scores, "merge ranks"


def _model_file_metadata(folder: Path, rows: int, pre: str | None) -> dict:
    """A folder with a SentencePiece BPE tokenizer.model and no tokenizer.json: pieces, scores and types as
    the model file gives them (its piece types are GGUF's token types); transformers' GGUF loader derives the
    merges from the scores."""
    path = folder / "tokenizer.model"
    if importlib.util.find_spec("sentencepiece") is None:
        raise TokbenchError("reading tokenizer.model needs the Python package sentencepiece", path=path,
                            fix="pip install sentencepiece")
    proto = _proto(folder)
    if proto is None:
        raise TokbenchError("GGUF export reads BPE SentencePiece models only (this one is Unigram)", path=path,
                            fix="convert Unigram models with llama.cpp's convert_hf_to_gguf.py")
    vocab = load_vocabulary(folder)
    if len(proto.pieces) > rows or len(vocab) > rows:
        raise TokbenchError(f"the tokenizer has {max(len(vocab), len(proto.pieces)):,} ids but the embedding only "
                            f"{rows:,} rows", path=path, fix="export a folder whose tokenizer belongs to its weights")
    tokens = [p.piece for p in proto.pieces] + [f"[PAD{i}]" for i in range(len(proto.pieces), rows)]
    types = [int(p.type) for p in proto.pieces] + [UNUSED] * (rows - len(proto.pieces))
    scores = [float(p.score) for p in proto.pieces] + [0.0] * (rows - len(proto.pieces))
    return {"model": "llama", "pre": pre or "default", "tokens": tokens, "types": types, "merges": [],
            "vocab": vocab, "tokenizer_json": {}, "scores": scores, "scores_from": "tokenizer.model",
            "add_space_prefix": bool(proto.normalizer_spec.add_dummy_prefix)}


def tokenizer_metadata(folder: Path, rows: int, *, pre: str | None = None) -> dict:
    """The tokenizer.ggml.* values for the folder's tokenizer.json, padded to `rows` ids."""
    tj_path = folder / "tokenizer.json"
    if not tj_path.is_file() and (folder / "tokenizer.model").is_file():
        return _model_file_metadata(folder, rows, pre)
    tj = _read_json(tj_path)
    model = tj.get("model") or {}
    spm = sentencepiece_style(tj)
    if not spm and (model.get("type") != "BPE" or ("bytelevel",) not in _pre_signature(tj.get("pre_tokenizer"))):
        raise TokbenchError(f"GGUF export supports byte-level and SentencePiece-style BPE tokenizers only (this one: "
                            f"{model.get('type')}, pre-tokenizer {(tj.get('pre_tokenizer') or {}).get('type')})",
                            path=tj_path, fix="export models whose tokenizer is GPT-2 / Llama / Mistral / Qwen / "
                            "SmolLM style BPE")
    name = pre or ("default" if spm else pre_tokenizer_name(tj))
    if name is None:
        raise TokbenchError("the tokenizer.json pre-tokenizer is not one llama.cpp knows by name (gpt-2, llama-bpe, "
                            "qwen2, smollm)", path=tj_path,
                            fix="pass --pre-tokenizer NAME (e.g. default) to write that name explicitly")
    vocab = load_vocabulary(folder)
    if len(vocab) > rows:
        raise TokbenchError(f"the tokenizer has {len(vocab):,} ids but the embedding only {rows:,} rows", path=tj_path,
                            fix="export a folder whose tokenizer belongs to its weights")
    added = {int(a["id"]): a for a in tj.get("added_tokens", [])}
    unk = (vocab.unk_id if vocab.unk_id is not None else vocab.specials.get("unk")) if spm else None
    tokens, types = _token_types(vocab, rows, added, unk)
    merges = _merges(model)
    out = {"model": "gpt2", "pre": name, "tokens": tokens, "types": types, "merges": merges, "vocab": vocab,
           "tokenizer_json": tj, "scores": None, "scores_from": None, "add_space_prefix": None}
    if spm:
        out["scores"], out["scores_from"] = _spm_scores(folder, tokens, types, merges)
        out.update(model="llama", add_space_prefix=_space_prefix(tj))
    return out


def _add_bos(folder: Path, tj: dict, bos: int | None) -> bool:
    """tokenizer_config.json's add_bos_token, else whether the post-processor starts with bos (as transformers
    loads the folder: a bare tokenizer.model gets no bos)."""
    cfg = _read_json(folder / "tokenizer_config.json")
    if isinstance(cfg.get("add_bos_token"), bool):
        return cfg["add_bos_token"]
    post = tj.get("post_processor") or {}
    steps = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    for s in steps:
        if s.get("type") == "TemplateProcessing" and s.get("single"):
            first = s["single"][0]
            if "SpecialToken" in first:
                sid = (s.get("special_tokens", {}).get(first["SpecialToken"]["id"]) or {}).get("ids", [None])[0]
                return bos is not None and sid == bos
    return False


def special_ids(folder: Path, vocab, template: str | None) -> dict[str, int | list[int] | None]:
    """bos / eos / eot / pad / unk ids from config.json, generation_config.json and the tokenizer files."""
    cfg = _text_config(_read_json(folder / "config.json"))
    gen = _read_json(folder / "generation_config.json")
    out: dict = {}
    for role in ("bos", "eos", "pad", "unk"):
        key = f"{role}_token_id"
        v = _first(cfg.get(key))
        if v is None:
            v = _first(gen.get(key))
        if v is None:
            v = vocab.specials.get(role)
        out[role] = v
    eot = end_of_turn(template, vocab)
    gen_eos = gen.get("eos_token_id")
    gen_eos = [gen_eos] if isinstance(gen_eos, int) else [x for x in (gen_eos or []) if isinstance(x, int)]
    # end of turn: the template's closing token (may be eos itself), else a second stop id of generation_config
    extra = eot or [i for i in gen_eos if i != out["eos"]]
    out["eot"] = extra[0] if extra else None
    return out
