"""Load a Vocabulary from any tokenizer file, model folder or asset name (format sniffed)."""
from __future__ import annotations

import re
from pathlib import Path

from tokbench.errors import TokbenchError
from tokbench.vocab.hf_json import load_tokenizer_json, read_tokenizer_json
from tokbench.vocab.sentencepiece_model import load_sentencepiece
from tokbench.vocab.specials import roles_by_name, roles_from_folder
from tokbench.vocab.tekken import is_tekken, load_tekken
from tokbench.vocab.tiktoken_file import load_tiktoken
from tokbench.vocab.vocabulary import Vocabulary

_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/]+={0,2} \d+\r?$")
_FIX = ("pass a tokenizer.json, a tekken.json, a SentencePiece .model, a .tiktoken rank file, a model folder, "
        "or an asset name")


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    from tokbench.assets import resolve

    return Path(resolve(str(name_or_path)))


def _looks_like_tiktoken(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    first = head.split(b"\n", 1)[0]
    return bool(_TIKTOKEN_LINE.match(first))


def _read_text_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return [ln.rstrip("\r\n") for ln in f]
    except UnicodeDecodeError:
        raise TokbenchError("not a UTF-8 text file", path=path, fix=_FIX) from None


def _from_vocab_merges(vocab_json: Path, merges_txt: Path) -> Vocabulary:
    """GPT-2-style vocab.json + merges.txt, read as `tokenizers` reads them (BPE.from_file with a
    ByteLevel pre-tokenizer and decoder), without calling the library (its API changes in 1.0)."""
    vocab = read_tokenizer_json(vocab_json)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise TokbenchError("vocab.json is not a {token: id} object", path=vocab_json,
                            fix="check both files come from the same byte-level BPE tokenizer")
    lines = _read_text_lines(merges_txt)
    merges = [ln for n, ln in enumerate(lines) if ln and not (n == 0 and ln.startswith("#version"))]
    bytelevel = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    data = {"added_tokens": [], "normalizer": None, "pre_tokenizer": bytelevel, "decoder": bytelevel,
            "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    v = load_tokenizer_json(vocab_json.parent, data)
    v.format = "vocab.json+merges.txt"
    return v


def _from_vocab_txt(vocab_txt: Path) -> Vocabulary:
    """BERT-style vocab.txt (one token a line, id = line number), as `tokenizers`' WordPiece.from_file."""
    vocab: dict[str, int] = {}
    for i, t in enumerate(_read_text_lines(vocab_txt)):
        vocab.setdefault(t, i)
    data = {"added_tokens": [], "normalizer": None, "pre_tokenizer": None,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}}
    v = load_tokenizer_json(vocab_txt, data)
    v.format = "vocab.txt"
    return v


def _load_json(path: Path) -> Vocabulary:
    if path.name == "vocab.json" and (path.parent / "merges.txt").is_file():
        return _from_vocab_merges(path, path.parent / "merges.txt")
    data = read_tokenizer_json(path)
    if is_tekken(data):
        return load_tekken(path, data)
    return load_tokenizer_json(path, data)


def _load_file(path: Path, pattern: str | None) -> Vocabulary:
    if path.suffix == ".json":
        return _load_json(path)
    if path.suffix == ".tiktoken" or _looks_like_tiktoken(path):
        return load_tiktoken(path, pattern=pattern)
    if path.name == "vocab.txt":
        return _from_vocab_txt(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\n":  # protobuf field 1 (pieces), length-delimited
        return load_sentencepiece(path)
    raise TokbenchError("unknown tokenizer format", path=path, fix=_FIX)


def _load_folder(folder: Path, pattern: str | None) -> Vocabulary:
    if (folder / "tokenizer.json").is_file():
        return _load_json(folder / "tokenizer.json")
    for candidate in sorted(folder.glob("tekken*.json")):  # Mistral's own format (tekken.json)
        if candidate.is_file():
            return _load_json(candidate)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return _from_vocab_merges(folder / "vocab.json", folder / "merges.txt")
    for candidate in sorted(folder.glob("*.model*")) + sorted(folder.glob("*.tiktoken")):
        if candidate.is_file():
            return _load_file(candidate, pattern)
    if (folder / "vocab.txt").is_file():
        return _from_vocab_txt(folder / "vocab.txt")
    raise TokbenchError("no tokenizer file in this folder", path=folder, fix=_FIX)


def load_vocabulary(name_or_path: str | Path, pattern: str | None = None) -> Vocabulary:
    """Load a tokenizer's vocabulary from a file, a Hugging Face model folder or an asset name.

    pattern: split pattern for tiktoken rank files (built-in name or regex); known files
    (GPT-2, Whisper multilingual, Llama 3) get theirs automatically.
    """
    path = _resolve(name_or_path)
    try:
        vocab = _load_folder(path, pattern) if path.is_dir() else _load_file(path, pattern)
    except TokbenchError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # a file of the wrong schema
        raise TokbenchError(f"not a tokenizer file tokbench can read ({type(exc).__name__}: {exc})", path=path,
                            fix=_FIX) from None
    folder = path if path.is_dir() else path.parent
    contents = vocab.special_contents
    roles = dict(vocab.specials)
    declared, absent = roles_from_folder(folder, contents)
    for role, i in declared.items():
        roles.setdefault(role, i)
    vocab.specials = {r: i for r, i in roles_by_name(contents, roles, absent).items()
                      if 0 <= i < len(vocab)}
    if vocab.unk_id is not None:
        vocab.specials.setdefault("unk", vocab.unk_id)
    return vocab
