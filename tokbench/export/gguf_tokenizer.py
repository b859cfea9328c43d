"""The tokenizer half of a GGUF file (tokenizer.ggml.* keys) from a Hugging Face model folder.

Four tokenizer families, told apart by their tokenizer.json (or a bare SentencePiece tokenizer.model):
- byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM): GGUF model `gpt2`, tokens as tokenizer.json spells them, merges,
  and the pre-tokenizer name llama.cpp knows (PRE_TOKENIZERS; an unknown one is refused unless named explicitly);
- SentencePiece-style BPE (Metaspace or a Replace(" ", "▁") normaliser, usually byte fallback: Llama 2,
  Mistral, tbd-mistral-d128): GGUF model `llama`, pre-tokenizer `default`, token scores, BYTE types for the
  <0xXX> tokens, add_space_prefix from the Metaspace / Prepend step, and the merges (transformers' GGUF loader
  rebuilds the tokenizer from them). Scores: the folder's tokenizer.model's own piece scores when it is there and
  spells the same tokens (what llama.cpp's converter writes), else derived from the merge ranks (the token made by
  merge r scores -(r + 1), so llama.cpp's highest-score-first merging follows the merge order; tokens no merge
  makes score below every merge; control, unknown and byte tokens 0).
- Unigram (tokenizer.json model Unigram, e.g. XLM-R, or a bare Unigram SentencePiece tokenizer.model): GGUF model
  `t5` (llama.cpp's UGM tokenizer), pre-tokenizer `default`, the pieces' log-probabilities as scores, the
  normaliser's precompiled charsmap, add_space_prefix from the Metaspace / Prepend step, remove_extra_whitespaces
  when the normaliser collapses runs of spaces (Replace " {2,}") or a WhitespaceSplit pre-tokenizer drops them;
- WordPiece (e.g. BERT): GGUF model `bert` (llama.cpp's WPM tokenizer), tokens in llama.cpp's phantom-space spelling
  (a word-start piece `x` is written `\u2581x`, a continuation `##x` is written `x`, as its converter does; control,
  unknown, user-defined and unused tokens keep their spelling), the BertNormalizer's lowercase / strip_accents as
  tokenizer.ggml.normalizer.* keys.
Both write sep / mask ids and add_bos / add_eos / add_sep as the post-processor frames one and two sequences.
Normalisers and pre-tokenizers llama.cpp has no equivalent for are refused in one line.
Token types: special added tokens CONTROL, other added tokens USER_DEFINED, reserved placeholders and ids without a
token UNUSED, the SentencePiece / Unigram / WordPiece unknown token UNKNOWN, <0xXX> byte tokens BYTE.
"""
from __future__ import annotations

import base64
import binascii
import importlib.util
import json
from pathlib import Path

from tokbench.errors import TokbenchError
from tokbench.vocab import Kind, load_vocabulary
from tokbench.vocab.chat import end_of_turn
from tokbench.vocab.model_io import _text_config

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf.TokenType (= SentencePiece types)
SPM_UNIGRAM, SPM_BPE = 1, 2  # sentencepiece TrainerSpec.ModelType
PAD_SCORE = -10000.0  # Unigram score of a placeholder id beyond the tokenizer: below every real piece
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


def metaspace_prepends(tj: dict) -> bool | None:
    """Whether the tokenizer.json's Metaspace pre-tokenizer prepends \u2581 (None: it has no Metaspace). HF
    `tokenizers` then skips the prefix when the text already starts with a space; SentencePiece and llama.cpp
    always add it."""
    for s in _steps(tj.get("pre_tokenizer"), "pretokenizers"):
        if s.get("type") == "Metaspace":
            return s.get("prepend_scheme", "always" if s.get("add_prefix_space", True) else "never") != "never"
    return None


def _space_prefix(tj: dict) -> bool:
    meta = metaspace_prepends(tj)
    if meta is not None:
        return meta
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


def _proto(folder: Path, model_type: int = SPM_BPE):
    """The folder's tokenizer.model as parsed protobuf when it is a SentencePiece model of `model_type`, or None."""
    spm = folder / "tokenizer.model"
    if not spm.is_file() or importlib.util.find_spec("sentencepiece") is None:
        return None
    from tokbench.vocab.sentencepiece_model import parse_model_proto

    proto = parse_model_proto(spm)
    return proto if proto.trainer_spec.model_type == model_type else None


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


def _too_many_ids(n: int, rows: int, path: Path) -> None:
    if n > rows:
        raise TokbenchError(f"the tokenizer has {n:,} ids but the embedding only {rows:,} rows", path=path,
                            fix="export a folder whose tokenizer belongs to its weights")


def _model_file_metadata(folder: Path, rows: int, pre: str | None) -> dict:
    """A folder with a SentencePiece tokenizer.model and no tokenizer.json: pieces, scores and types as the model file
    gives them (its piece types are GGUF's token types). BPE: GGUF model `llama` (transformers' GGUF loader derives
    the merges from the scores); Unigram: GGUF model `t5` with the normaliser spec's charsmap and whitespace flags."""
    path = folder / "tokenizer.model"
    if importlib.util.find_spec("sentencepiece") is None:
        raise TokbenchError("reading tokenizer.model needs the Python package sentencepiece", path=path,
                            fix="pip install sentencepiece")
    proto = _proto(folder) or _proto(folder, SPM_UNIGRAM)
    if proto is None:
        raise TokbenchError("GGUF export reads BPE and Unigram SentencePiece models only", path=path,
                            fix="convert this model with llama.cpp's convert_hf_to_gguf.py")
    vocab = load_vocabulary(folder)
    _too_many_ids(max(len(vocab), len(proto.pieces)), rows, path)
    unigram = proto.trainer_spec.model_type == SPM_UNIGRAM
    pad = PAD_SCORE if unigram else 0.0
    tokens = [p.piece for p in proto.pieces] + [f"[PAD{i}]" for i in range(len(proto.pieces), rows)]
    types = [int(p.type) for p in proto.pieces] + [UNUSED] * (rows - len(proto.pieces))
    scores = [float(p.score) for p in proto.pieces] + [pad] * (rows - len(proto.pieces))
    out = {"model": "llama", "pre": pre or "default", "tokens": tokens, "types": types, "merges": [],
           "vocab": vocab, "tokenizer_json": {}, "scores": scores, "scores_from": "tokenizer.model",
           "add_space_prefix": bool(proto.normalizer_spec.add_dummy_prefix)}
    if unigram:
        spec = proto.normalizer_spec
        if proto.trainer_spec.treat_whitespace_as_suffix or not spec.escape_whitespaces:
            raise TokbenchError("this Unigram model treats whitespace as a suffix or does not escape it; GGUF's t5 "
                                "tokenizer cannot say so", path=path,
                                fix="convert this model with llama.cpp's convert_hf_to_gguf.py")
        out.update(model="t5", charsmap=bytes(spec.precompiled_charsmap),
                   remove_extra_whitespaces=bool(spec.remove_extra_whitespaces), roles=_roles_by_name(tokens, {}))
    return out


def _refuse(what: str, step: dict, path: Path, kind: str, fix: str) -> None:
    shown = {k: v for k, v in step.items() if k != "precompiled_charsmap"}
    raise TokbenchError(f"GGUF's {kind} tokenizer has no equivalent of the tokenizer.json {what} "
                        f"{json.dumps(shown)[:120]}", path=path, fix=fix)


def _pattern(step: dict) -> tuple[str, str] | None:
    pat = step.get("pattern")
    return next(iter(pat.items())) if isinstance(pat, dict) and len(pat) == 1 else None


_UNIGRAM_FIX = "export models whose Unigram tokenizer is SentencePiece-style (Precompiled / Metaspace, e.g. XLM-R, T5)"


def _unigram_text(tj: dict, path: Path) -> dict:
    """What llama.cpp's UGM tokenizer needs to know about a Unigram tokenizer.json's normaliser and pre-tokenizer:
    the precompiled charsmap, whether runs of spaces collapse; anything else is refused."""
    charsmap, collapse = b"", False
    for s in _steps(tj.get("normalizer"), "normalizers"):
        t = s.get("type")
        if not s:
            continue
        if t == "Precompiled":
            try:
                charsmap = base64.b64decode(s.get("precompiled_charsmap") or "", validate=True)
            except (ValueError, binascii.Error):
                raise TokbenchError("the Precompiled normalizer's charsmap is not base64", path=path,
                                    fix="restore the tokenizer.json") from None
        elif t == "Replace" and _pattern(s) == ("Regex", " {2,}") and s.get("content") in (" ", SPACE):
            collapse = True  # SentencePiece's remove_extra_whitespaces, as transformers' converter writes it
        elif t == "Replace" and _pattern(s) == ("String", " ") and s.get("content") == SPACE:
            pass  # spaces escaped as \u2581: what llama.cpp's UGM tokenizer does anyway
        elif not (t == "Prepend" and s.get("prepend") == SPACE):  # the space prefix (read by _space_prefix)
            _refuse("normalizer", s, path, "t5", _UNIGRAM_FIX)
    for s in _steps(tj.get("pre_tokenizer"), "pretokenizers"):
        t = s.get("type")
        if not s or (t == "Metaspace" and s.get("replacement", SPACE) == SPACE):
            continue
        if t == "WhitespaceSplit":  # (T5) words split at whitespace, which is dropped: runs of spaces collapse
            collapse = True
            continue
        _refuse("pre-tokenizer", s, path, "t5", _UNIGRAM_FIX)
    return {"charsmap": charsmap, "remove_extra_whitespaces": collapse, "add_space_prefix": _space_prefix(tj)}


_WORDPIECE_FIX = "export models whose WordPiece tokenizer is BERT-style (BertNormalizer, BertPreTokenizer, '##')"


def _wordpiece_text(tj: dict, path: Path) -> dict:
    """llama.cpp's WPM tokenizer always drops control characters and isolates CJK characters and punctuation, as
    BertNormalizer(clean_text, handle_chinese_chars) + BertPreTokenizer do; lowercase and strip_accents are keys."""
    model = tj.get("model") or {}
    if model.get("continuing_subword_prefix", "##") != "##":
        _refuse("continuing_subword_prefix", {"continuing_subword_prefix": model["continuing_subword_prefix"]},
                path, "bert", _WORDPIECE_FIX)
    norm = tj.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer" or not norm.get("clean_text", True) or not norm.get(
            "handle_chinese_chars", True):
        _refuse("normalizer", norm, path, "bert", _WORDPIECE_FIX)
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") != "BertPreTokenizer":
        _refuse("pre-tokenizer", pre, path, "bert", _WORDPIECE_FIX)
    lower = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    return {"lowercase": lower, "strip_accents": lower if strip is None else bool(strip)}


def _phantom(tokens: list[str], types: list[int], path: Path) -> list[str]:
    """WordPiece spelling -> llama.cpp's WPM spelling: its tokenizer looks a word up as '\u2581' + word, so a word-start
    piece `x` becomes `\u2581x` and a continuation `##x` becomes `x`; tokens other than normal ones keep their text."""
    out = [(t[2:] if t.startswith("##") else SPACE + t) if ty == NORMAL else t for t, ty in zip(tokens, types)]
    seen: dict[str, int] = {}
    for i, t in enumerate(out):
        if t in seen or not t:
            what = f"tokens {seen[t]} and {i} ({tokens[i]!r}) are spelled alike" if t else f"token {i} is empty"
            raise TokbenchError(f"{what} in llama.cpp's WordPiece convention ({t!r}); GGUF needs distinct tokens",
                                path=path, fix="remove the token from the vocabulary (tokbench surgery), export again")
        seen[t] = i
    return out


def _roles_by_name(tokens: list[str], cfg: dict) -> dict[str, int | None]:
    """sep / mask / cls ids: tokenizer_config.json's names, else the usual spellings."""
    index = {t: i for i, t in enumerate(tokens)}
    out = {}
    for role, usual in (("sep", ("[SEP]", "</s>")), ("mask", ("[MASK]", "<mask>")), ("cls", ("[CLS]", "<s>"))):
        name = cfg.get(f"{role}_token")
        name = name.get("content") if isinstance(name, dict) else name
        out[role] = index.get(name) if isinstance(name, str) else next(
            (index[u] for u in usual if u in index), None)
    return out


def _unigram_or_wordpiece(folder: Path, tj: dict, tj_path: Path, rows: int, pre: str | None) -> dict:
    model = tj["model"]
    unigram = model.get("type") == "Unigram"
    text = _unigram_text(tj, tj_path) if unigram else _wordpiece_text(tj, tj_path)
    vocab = load_vocabulary(folder)
    _too_many_ids(len(vocab), rows, tj_path)
    added = {int(a["id"]): a for a in tj.get("added_tokens", [])}
    unk = model.get("unk_id") if unigram else (model.get("vocab") or {}).get(model.get("unk_token"))
    tokens, types = _token_types(vocab, rows, added, unk if isinstance(unk, int) else None)
    out = {"model": "t5" if unigram else "bert", "pre": pre or "default", "merges": [], "vocab": vocab,
           "tokenizer_json": tj, "scores": None, "scores_from": None, "add_space_prefix": None, "types": types,
           "roles": _roles_by_name(tokens, _read_json(folder / "tokenizer_config.json")), **text}
    if unigram:
        pieces = model.get("vocab") or []
        out["scores"] = [float(p[1]) if i < len(pieces) else 0.0 if i < len(vocab) else PAD_SCORE
                         for i, p in enumerate(pieces + [None] * (rows - len(pieces)))]
        out["scores_from"] = "tokenizer.json"
        out["tokens"] = tokens
    else:
        out["tokens"] = _phantom(tokens, types, tj_path)
    return out


def tokenizer_metadata(folder: Path, rows: int, *, pre: str | None = None) -> dict:
    """The tokenizer.ggml.* values for the folder's tokenizer.json, padded to `rows` ids."""
    tj_path = folder / "tokenizer.json"
    if not tj_path.is_file() and (folder / "tokenizer.model").is_file():
        return _model_file_metadata(folder, rows, pre)
    tj = _read_json(tj_path)
    model = tj.get("model") or {}
    if model.get("type") in ("Unigram", "WordPiece"):
        return _unigram_or_wordpiece(folder, tj, tj_path, rows, pre)
    spm = sentencepiece_style(tj)
    if not spm and (model.get("type") != "BPE" or ("bytelevel",) not in _pre_signature(tj.get("pre_tokenizer"))):
        raise TokbenchError(f"GGUF export supports byte-level and SentencePiece-style BPE, Unigram and WordPiece "
                            f"tokenizers (this one: {model.get('type')}, pre-tokenizer "
                            f"{(tj.get('pre_tokenizer') or {}).get('type')})", path=tj_path,
                            fix="export models whose tokenizer is GPT-2 / Llama / Mistral / Qwen / SmolLM style BPE, "
                            "Unigram or WordPiece")
    name = pre or ("default" if spm else pre_tokenizer_name(tj))
    if name is None:
        raise TokbenchError("the tokenizer.json pre-tokenizer is not one llama.cpp knows by name (gpt-2, llama-bpe, "
                            "qwen2, smollm)", path=tj_path,
                            fix="pass --pre-tokenizer NAME (e.g. default) to write that name explicitly")
    vocab = load_vocabulary(folder)
    _too_many_ids(len(vocab), rows, tj_path)
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


def _post_specials(tj: dict) -> tuple[int | None, int | None, list[int]]:
    """The special ids the post-processor puts before and after one sequence, and between the two of a pair."""
    for s in _steps(tj.get("post_processor"), "processors"):
        t = s.get("type")
        if t in ("RobertaProcessing", "BertProcessing"):  # [cls] A [sep] ([sep]) B [sep]
            cls, sep = (s.get("cls") or [None, None])[1], (s.get("sep") or [None, None])[1]
            return cls, sep, [sep] * (2 if t == "RobertaProcessing" else 1)
        if t == "TemplateProcessing":
            def sid(piece: dict) -> int | None:
                if "SpecialToken" not in piece:
                    return None
                return (s.get("special_tokens", {}).get(piece["SpecialToken"]["id"]) or {}).get("ids", [None])[0]

            single, pair = s.get("single") or [], s.get("pair") or []
            seqs = [i for i, p in enumerate(pair) if "Sequence" in p]
            between = [sid(p) for p in pair[seqs[0] + 1:seqs[1]]] if len(seqs) == 2 else []
            return (sid(single[0]) if single else None, sid(single[-1]) if len(single) > 1 else None,
                    [b for b in between if b is not None])
    return None, None, []


def add_special(folder: Path, tj: dict, ids: dict) -> dict[str, bool]:
    """add_bos / add_eos: tokenizer_config.json's add_bos_token / add_eos_token, else whether the post-processor starts
    with bos / ends with eos (a bare tokenizer.model gets neither, as transformers loads it); add_sep: whether a pair
    gets a separator beyond the eos that ends the first sequence (llama.cpp's reranking prompt: XLM-R's </s></s>)."""
    cfg = _read_json(folder / "tokenizer_config.json")
    first, last, between = _post_specials(tj)
    out = {}
    for role, edge in (("bos", first), ("eos", last)):
        given = cfg.get(f"add_{role}_token")
        out[role] = given if isinstance(given, bool) else (ids.get(role) is not None and edge == ids[role])
    out["sep"] = len(between) > (1 if out["eos"] else 0)
    return out


def _add_bos(folder: Path, tj: dict, bos: int | None) -> bool:
    return add_special(folder, tj, {"bos": bos})["bos"]


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
