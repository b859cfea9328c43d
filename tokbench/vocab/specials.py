"""Special-token roles (bos, eos, pad, unk) from a tokenizer's own files, else by known names."""
from __future__ import annotations

import json
from pathlib import Path

ROLES = ("bos", "eos", "pad", "unk")

# Known contents per role, most specific first. Used only when the tokenizer's files say nothing.
KNOWN_CONTENTS: dict[str, tuple[str, ...]] = {
    "bos": ("<|begin_of_text|>", "<s>", "[CLS]", "<|startoftext|>", "<bos>", "<|startoftranscript|>"),
    "eos": ("<|end_of_text|>", "</s>", "[SEP]", "<|endoftext|>", "<eos>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}


def _content(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        c = value.get("content")
        return c if isinstance(c, str) else None
    return None


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def roles_from_folder(folder: Path, content_to_id: dict[str, int]) -> dict[str, int]:
    """Roles declared by tokenizer_config.json / special_tokens_map.json / config.json files."""
    roles: dict[str, int] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = _read_json(folder / name)
        for role in ROLES:
            c = _content(data.get(f"{role}_token"))
            if role not in roles and c is not None and c in content_to_id:
                roles[role] = content_to_id[c]
    for name in ("generation_config.json", "config.json"):
        data = _read_json(folder / name)
        for role in ROLES:
            v = data.get(f"{role}_token_id")
            if isinstance(v, list):
                v = v[0] if v else None
            if role not in roles and isinstance(v, int) and v >= 0:
                roles[role] = v
    return roles


def roles_by_name(content_to_id: dict[str, int], taken: dict[str, int]) -> dict[str, int]:
    """Fill roles not yet known from well-known token contents."""
    roles = dict(taken)
    for role in ROLES:
        if role in roles:
            continue
        for c in KNOWN_CONTENTS[role]:
            if c in content_to_id:
                roles[role] = content_to_id[c]
                break
    return roles
