"""Chat templates of Hugging Face tokenizer folders: where the template is, which control tokens it writes,
and which of them end a turn (the ids generation must stop at besides eos).

Shared by the capabilities that write model folders (transplant) and by the GGUF export.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tokbench.vocab.vocabulary import Kind

TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
# Contents that close a turn in the common template families (ChatML, Llama 3, Gemma, Phi-3, Mistral, SmolLM).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|end_of_turn|>",
               "<turn|>", "</s>", "<|endoftext|>")
# Template variables that render the tokenizer's role tokens.
_ROLE_VARS = {"bos": "bos_token", "eos": "eos_token", "pad": "pad_token", "unk": "unk_token"}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pick(value) -> str | None:
    """A template value as transformers stores it: a string, or a list of {name, template} (take 'default')."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
        t = named.get("default") or next((v for v in named.values() if isinstance(v, str)), None)
        return t if isinstance(t, str) and t.strip() else None
    return None


def read_template(folder: Path) -> tuple[str | None, str | None]:
    """(template text, the file it came from) of a tokenizer folder; (None, None) when it has none.
    chat_template.jinja wins over chat_template.json over tokenizer_config.json, as in transformers."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        text = jinja.read_text(encoding="utf-8")
        if text.strip():
            return text, jinja.name
    for name in ("chat_template.json", "tokenizer_config.json"):
        t = _pick(_read_json(folder / name).get("chat_template"))
        if t is not None:
            return t, name
    return None, None


def template_tokens(template: str, vocab) -> list[str]:
    """Contents of the vocabulary's special / control tokens that the template writes literally, in order of
    first appearance, plus the role tokens it renders through variables (bos_token, eos_token, ...)."""
    found: dict[str, int] = {}
    for i, (tok, kind) in enumerate(zip(vocab.tokens, vocab.kinds)):
        if tok and kind in (Kind.SPECIAL, Kind.CONTROL) and tok in template:
            found.setdefault(tok, template.index(tok))
    return sorted(found, key=found.get)


def template_roles(template: str) -> list[str]:
    """Role tokens (bos, eos, ...) the template renders through its variables."""
    return [r for r, var in _ROLE_VARS.items() if re.search(rf"\b{var}\b", template)]


def literal_specials(template: str) -> list[str]:
    """Strings in the template that look like control tokens (<|...|>, <...of_turn>, [INST], <s>, </s>)."""
    pat = re.compile(r"<\|[^|<>\s]{1,40}\|>|<(?:start|end)_of_[a-z_]+>|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|"
                     r"TOOL_CALLS|TOOL_RESULTS)\]|</?s>")
    out: dict[str, None] = {}
    for m in pat.finditer(template):
        out.setdefault(m.group(0))
    return list(out)


def end_of_turn(template: str | None, vocab) -> list[int]:
    """Ids of the tokens that end a turn in this template (in END_OF_TURN order), among the vocabulary's."""
    if not template:
        return []
    ids = {tok: i for i, tok in enumerate(vocab.tokens) if tok is not None and vocab.kinds[i] in (Kind.SPECIAL, Kind.CONTROL)}
    return [ids[t] for t in END_OF_TURN if t in template and t in ids]
