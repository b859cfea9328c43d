"""Vocabulary from a Hugging Face `tokenizer.json` (BPE, WordPiece, Unigram models)."""
from __future__ import annotations

import json
from pathlib import Path

from tokbench import _core
from tokbench.errors import TokbenchError
from tokbench.vocab.vocabulary import Kind, SegmenterSpec, Style, Vocabulary, added_token_kind, is_placeholder

_BYTE_TOKEN = "<0x{:02X}>"


def _walk(node) -> list[dict]:
    """All component dicts of a (possibly nested Sequence) normalizer/pre-tokenizer/decoder."""
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("pretokenizers", "decoders", "normalizers"):
        for child in node.get(key) or []:
            out.extend(_walk(child))
    return out


def _types(node) -> set[str]:
    return {c.get("type") for c in _walk(node)}


def _split_pattern(pre) -> str | None:
    for c in _walk(pre):
        if c.get("type") == "Split":
            pat = c.get("pattern") or {}
            return pat.get("Regex") or pat.get("String")
    return None


def _style(data: dict, model_type: str) -> Style:
    if model_type == "WordPiece":
        return Style.WORDPIECE
    parts = _types(data.get("pre_tokenizer")) | _types(data.get("decoder"))
    if "ByteLevel" in parts:
        return Style.BYTELEVEL
    if "Metaspace" in parts or model_type == "Unigram":
        return Style.METASPACE
    for c in _walk(data.get("decoder")) + _walk(data.get("normalizer")):
        if c.get("type") == "Replace" and "\u2581" in json.dumps(c, ensure_ascii=False):
            return Style.METASPACE
    if (data.get("model") or {}).get("continuing_subword_prefix") == "##":
        return Style.WORDPIECE
    return Style.RAW


def _strips_leading_space(data: dict, style: Style) -> bool:
    if style != Style.METASPACE:
        return False
    for c in _walk(data.get("decoder")):
        if c.get("type") == "Strip" and c.get("start", 0) >= 1:
            return True
        if c.get("type") == "Metaspace":
            scheme = c.get("prepend_scheme")
            if scheme in ("first", "always") or (scheme is None and c.get("add_prefix_space", True)):
                return True
    return False


def _normalizer_space_marker(norm) -> str | None:
    """"▁" when the normaliser replaces spaces by it (Gemma: Replace(" ", "▁"), no Metaspace)."""
    for c in _walk(norm):
        if c.get("type") == "Replace" and (c.get("pattern") or {}).get("String") == " " \
                and c.get("content") == "\u2581":
            return "\u2581"
    return None


def _byte_fallback_table(byte_ids: list[int | None], token_bytes: list[bytes | None],
                         kinds: list[Kind], unk_id: int | None) -> list[int] | None:
    """The 256 byte-fallback ids, or None. A byte whose <0xNN> token is missing falls back to the
    normal token of that one byte (Gemma has a literal "\t" token in place of <0x09>; the library
    never needs the fallback there, that character being a piece of its own), else to unk."""
    if all(i is None for i in byte_ids):
        return None
    singles = {b: i for i, b in enumerate(token_bytes)
               if b is not None and len(b) == 1 and kinds[i] == Kind.NORMAL}
    table: list[int] = []
    for value, i in enumerate(byte_ids):
        if i is None:
            i = singles.get(bytes([value]), unk_id)
            if i is None:
                return None
        table.append(i)
    return table


def _normalizer_name(data: dict) -> str | None:
    names = [c.get("type") for c in _walk(data.get("normalizer")) if c.get("type") != "Sequence"]
    return "+".join(n for n in names if n) or None


def read_tokenizer_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError:
        raise TokbenchError("not a UTF-8 JSON file", path=path, fix="pass a tokenizer.json") from None
    except json.JSONDecodeError as exc:
        raise TokbenchError(f"corrupt JSON ({exc.msg} at line {exc.lineno})", path=path,
                            fix="re-download or re-save the tokenizer file") from None


def load_tokenizer_json(path: Path, data: dict | None = None) -> Vocabulary:
    """Vocabulary of a tokenizer.json file (or of its already parsed `data`, named by `path`)."""
    if data is None:
        data = read_tokenizer_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "vocab" not in model:
        raise TokbenchError("no model.vocab in this JSON, so it is not a tokenizers tokenizer.json",
                            path=path, fix="pass a tokenizer.json saved by HF tokenizers")
    model_type = model.get("type") or ("Unigram" if isinstance(model["vocab"], list) else
                                       "WordPiece" if "max_input_chars_per_word" in model else "BPE")
    if model_type not in ("BPE", "WordPiece", "Unigram"):
        raise TokbenchError(f"unsupported tokenizer model type {model_type!r}", path=path,
                            fix="tokbench reads BPE, WordPiece and Unigram models")
    style = _style(data, model_type)

    # id -> token string of the model vocabulary
    scores: list[float] | None = None
    if model_type == "Unigram":
        entries = model["vocab"]
        strings: dict[int, str] = {i: e[0] for i, e in enumerate(entries)}
        scores_map = {i: float(e[1]) for i, e in enumerate(entries)}
    else:
        strings = {int(i): t for t, i in model["vocab"].items()}
        scores_map = {}
    added = {int(t["id"]): t for t in data.get("added_tokens") or []}
    size = max(list(strings) + list(added) + [-1]) + 1

    tokens: list[str | None] = [None] * size
    kinds = [Kind.UNUSED] * size
    for i, t in strings.items():
        tokens[i] = t
        kinds[i] = Kind.NORMAL
    byte_ids: list[int | None] = [None] * 256
    if model.get("byte_fallback"):
        lookup = {t: i for i, t in strings.items()}
        byte_ids = [lookup.get(_BYTE_TOKEN.format(b)) for b in range(256)]
        if sum(i is not None for i in byte_ids) >= 128:  # else <0xNN> strings are plain tokens
            for i in byte_ids:
                if i is not None:
                    kinds[i] = Kind.BYTE
        else:
            byte_ids = [None] * 256
    for i, t in strings.items():  # reserved slots of the model vocabulary (BERT [unusedN], Gemma <unusedN>)
        if kinds[i] == Kind.NORMAL and is_placeholder(t):
            kinds[i] = Kind.UNUSED

    convert_style = {Style.BYTELEVEL: "bytelevel", Style.METASPACE: "metaspace",
                     Style.WORDPIECE: "wordpiece", Style.RAW: "utf8"}[style]
    normal_ids = [i for i in range(size) if kinds[i] == Kind.NORMAL]
    converted = _core.token_bytes([tokens[i] for i in normal_ids], convert_style)
    token_bytes: list[bytes | None] = [None] * size
    for i, b in zip(normal_ids, converted):
        token_bytes[i] = b
    for value, i in enumerate(byte_ids):
        if i is not None:
            token_bytes[i] = bytes([value])

    # Added tokens. One that is also in the model vocabulary under the same string is that model
    # token (Gemma's whitespace runs "▁▁", newline runs, HTML tags): its bytes follow the vocabulary's
    # convention. Others: specials stand for no text, placeholders and control markup are kinds of
    # their own, any other non-special added token is literal text (with the normaliser's "▁" for a
    # space when it is matched on normalised text).
    space_marker = _normalizer_space_marker(data.get("normalizer"))
    for i, t in added.items():
        content = t["content"]
        kind = added_token_kind(content, bool(t.get("special", False)))
        in_model = strings.get(i) == content and kinds[i] in (Kind.NORMAL, Kind.BYTE)
        tokens[i] = content
        if kind == Kind.NORMAL and in_model:
            continue
        kinds[i] = kind
        token_bytes[i] = None
        if kind == Kind.NORMAL:
            if space_marker and t.get("normalized", True):
                content = content.replace(space_marker, " ")
            token_bytes[i] = content.encode("utf-8")

    unk_id: int | None = None
    if model_type == "Unigram" and model.get("unk_id") is not None:
        unk_id = int(model["unk_id"])
    elif model.get("unk_token") is not None:
        unk_id = {t: i for i, t in enumerate(tokens) if t is not None}.get(model["unk_token"])
    if unk_id is not None:
        kinds[unk_id] = Kind.SPECIAL
        token_bytes[unk_id] = None
    byte_fallback = _byte_fallback_table(byte_ids, token_bytes, kinds, unk_id)

    for i, b in enumerate(token_bytes):
        if kinds[i] == Kind.NORMAL and b is None:
            raise TokbenchError(f"token {i} ({tokens[i]!r}) is not valid in its {style.value} "
                                f"vocabulary", path=path, fix="check the tokenizer file is intact")

    if style == Style.WORDPIECE:
        prefix = model.get("continuing_subword_prefix") or "##"
        word_start = [k == Kind.NORMAL and t is not None and not t.startswith(prefix)
                      for t, k in zip(tokens, kinds)]
    else:
        word_start = [k == Kind.NORMAL and b is not None and len(b) > 1 and b.startswith(b" ")
                      for b, k in zip(token_bytes, kinds)]

    spec: SegmenterSpec
    if model_type == "BPE":
        spec = SegmenterSpec("bpe_merges", units="bytes" if style == Style.BYTELEVEL else "chars",
                             merges=_merge_ids(model.get("merges") or [], strings, kinds, path),
                             ignore_merges=bool(model.get("ignore_merges")),
                             fuse_unk=bool(model.get("fuse_unk")))
    elif model_type == "Unigram":
        spec = SegmenterSpec("unigram", scores=[scores_map.get(i, 0.0) for i in range(size)])
    else:
        spec = SegmenterSpec("wordpiece", max_chars=int(model.get("max_input_chars_per_word", 100)))

    return Vocabulary(
        source=str(path), family=model_type.lower(), format="tokenizer.json", style=style,
        tokens=tokens, token_bytes=token_bytes, kinds=kinds, word_start=word_start,
        segmenter_spec=spec, byte_fallback=byte_fallback, unk_id=unk_id,
        strip_leading_space=_strips_leading_space(data, style),
        pattern=_split_pattern(data.get("pre_tokenizer")), normalizer=_normalizer_name(data),
    )


def _merge_ids(merges: list, strings: dict[int, str], kinds: list[Kind], path: Path) -> list[tuple[int, int]]:
    """Merges as id pairs. A merge that makes a token standing for no text (a placeholder or control
    symbol of the model vocabulary) is left out: segmentation never produces such ids."""
    lookup = {t: i for i, t in strings.items()}
    textual = (Kind.NORMAL, Kind.BYTE)
    out: list[tuple[int, int]] = []
    for n, m in enumerate(merges):
        if isinstance(m, str):
            parts = m.split(" ")
            if len(parts) != 2:
                raise TokbenchError(f"merge {n} ({m!r}) is not two tokens", path=path,
                                    fix="check the tokenizer file is intact")
        else:
            parts = m
        try:
            pair = (lookup[parts[0]], lookup[parts[1]])
        except KeyError:
            raise TokbenchError(f"merge {n} ({m!r}) uses a token missing from the vocabulary",
                                path=path, fix="check the tokenizer file is intact") from None
        joined = lookup.get(parts[0] + parts[1])
        if joined is not None and kinds[joined] not in textual:
            continue
        out.append(pair)
    return out


def open_hf_tokenizer(file: str | Path):
    """`tokenizers.Tokenizer.from_file(file)` with padding and truncation off, on either Python API
    of the library: `no_padding()` / `no_truncation()` (0.x) or settable `padding` / `truncation`
    properties (1.0, which has neither method)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(file))
    for name in ("padding", "truncation"):
        off = getattr(tok, f"no_{name}", None)
        if callable(off):
            off()
        else:
            setattr(tok, name, None)
    return tok
