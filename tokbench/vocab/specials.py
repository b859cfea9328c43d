"""Special-token roles (bos, eos, pad, unk) from a tokenizer's own files, else by known names."""
from __future__ import annotations

import json
from pathlib import Path

ROLES = ("bos", "eos", "pad", "unk")

# Known contents per role, most specific first. Used only when the tokenizer's files say nothing.
KNOWN_CONTENTS: dict[str, tuple[str, ...]] = {
    "bos": ("<|begin_of_text|>", "<s>", "[CLS]", "<|startoftext|>", "<bos>", "<|startoftranscript|>",
            "<|endoftext|>"),  # GPT-2 uses its one special for bos and eos
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


def roles_from_folder(folder: Path, content_to_id: dict[str, int]) -> tuple[dict[str, int], set[str]]:
    """Roles declared by tokenizer_config.json / special_tokens_map.json / config.json files,
    and the roles a tokenizer_config.json explicitly declares absent (`"bos_token": null`)."""
    roles: dict[str, int] = {}
    absent: set[str] = set()
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = _read_json(folder / name)
        for role in ROLES:
            key = f"{role}_token"
            if name == "tokenizer_config.json" and key in data and data[key] is None:
                absent.add(role)
            c = _content(data.get(key))
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
    return roles, absent - set(roles)


def roles_by_name(content_to_id: dict[str, int], taken: dict[str, int],
                  absent: set[str] = frozenset()) -> dict[str, int]:
    """Fill roles not yet known (nor declared absent) from well-known token contents."""
    roles = dict(taken)
    for role in ROLES:
        if role in roles or role in absent:
            continue
        for c in KNOWN_CONTENTS[role]:
            if c in content_to_id:
                roles[role] = content_to_id[c]
                break
    return roles
