"""Chat template and generation config of a transplanted model.

- The target tokenizer has a template (its chat_template.jinja / .json / tokenizer_config.json, already
  copied into the output): it is kept, and generation stops at the target's eos and the template's
  end-of-turn tokens.
- Otherwise the base's template is carried over (as chat_template.jinja) only when every control token it
  writes (literally, or through bos_token / eos_token / ...) exists as one special token of the target;
  else the output has no template and the report names the missing tokens.

generation_config.json (written even when the base has none) and config.json then agree: config's
eos_token_id is the target's eos, generation's eos_token_id is that id followed by the end-of-turn ids,
and tokenizer_config.json's eos_token is the same token.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokbench.outputs import atomic_write
from tokbench.vocab import Kind
from tokbench.vocab.chat import end_of_turn, literal_specials, read_template, template_roles, template_tokens


def _specials(vocab) -> dict[str, int]:
    return {t: i for i, t in enumerate(vocab.tokens) if t is not None and vocab.kinds[i] in (Kind.SPECIAL, Kind.CONTROL)}


def carried_template(base_dir: Path, base_vocab, target) -> dict:
    """Whether the base's template can serve the target: {"template", "needs", "missing"}."""
    text, where = read_template(base_dir)
    if text is None:
        return {"template": None, "file": None, "needs": [], "missing": []}
    needs = list(dict.fromkeys(template_tokens(text, base_vocab) + literal_specials(text)))
    have = _specials(target)
    missing = [t for t in needs if t not in have]
    roles = template_roles(text)
    missing += [f"{r}_token" for r in roles if r not in target.specials]
    return {"template": text, "file": where, "needs": needs + [f"{r}_token" for r in roles], "missing": missing}


def finish_chat(tmp: Path, base_dir: Path, base_vocab, target, updates: dict) -> dict:
    """Choose the output's chat template and write generation_config.json to match; return the report part."""
    own, own_file = read_template(tmp)
    info: dict = {}
    if own is not None:
        template = own
        info = {"source": "target", "file": own_file,
                "note": "the target tokenizer's own chat template"}
    else:
        base = carried_template(base_dir, base_vocab, target)
        if base["template"] is None:
            template = None
            info = {"source": None, "note": "neither the target tokenizer nor the base has a chat template"}
        elif base["missing"]:
            template = None
            info = {"source": None, "base_file": base["file"], "missing": base["missing"],
                    "note": "the base's chat template is not carried over: the target lacks "
                            + ", ".join(base["missing"])}
        else:
            template = base["template"]
            atomic_write(tmp / "chat_template.jinja", template)
            info = {"source": "base", "file": "chat_template.jinja", "base_file": base["file"],
                    "control_tokens": base["needs"],
                    "note": "the base's chat template, carried over: all its control tokens exist in the target"}
    eot = end_of_turn(template, target)
    eos = updates.get("eos_token_id")
    stop = list(dict.fromkeys(([eos] if isinstance(eos, int) else []) + eot))
    gen_path = tmp / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    for key in ("bos_token_id", "pad_token_id"):
        if updates.get(key) is not None or key in gen:
            gen[key] = updates.get(key)
    gen["eos_token_id"] = stop[0] if len(stop) == 1 else (stop or None)
    atomic_write(gen_path, json.dumps(gen, indent=2) + "\n")
    info["end_of_turn_ids"] = eot
    info["end_of_turn_tokens"] = [target.tokens[i] for i in eot]
    info["generation_eos_token_id"] = gen["eos_token_id"]
    return info
