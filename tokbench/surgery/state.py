"""The working state every op edits: one slot per current id (token string, the base id whose row it
keeps or how its new row is made, which op made it), the BPE merges, the special-token roles, the chat
template, config and generation config. Ids are never renumbered while ops run: a removed slot is only
marked, and `compact()` gives the final ids once, at the end (kept slots in their order)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from tokbench.errors import TokbenchError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
ROLE_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "pad_token_id", "unk": "unk_token_id"}


@dataclass
class Slot:
    content: str | None  # model-vocab string (Ġ form) or added-token content; None for a padding row
    old: int | None  # base id (its row is kept unless `row` says otherwise)
    op: str  # "base" or "ops[i] <name>"
    row: dict  # row spec (tokbench.surgery.rows)
    added: dict | None = None  # the added_tokens entry (without id) for added tokens
    in_model: bool = True  # listed in model.vocab
    removed: bool = False
    removed_by: str | None = None

    @property
    def special(self) -> bool:
        return bool(self.added and self.added.get("special"))


@dataclass
class State:
    base_dir: Path
    tok: dict  # tokenizer.json without model.vocab / model.merges / added_tokens (kept in slots/merges)
    merges: list[tuple[str, str]]
    merges_as_strings: bool
    slots: list[Slot]
    config: dict
    gen: dict | None
    tok_config: dict | None
    template: str | None
    template_where: list[str]  # where the base kept its template: jinja, tokenizer_config, json
    roles: dict[str, str | None]  # role -> token content
    eot: list[str] = field(default_factory=list)
    tokenizer_dir: Path | None = None  # where the tokenizer files come from (the base unless replace_tokenizer)
    union: dict | None = None  # op union: row plans per member, member folders
    undertrained: dict | None = None  # the detector's summary (op undertrained), kept in the report
    hidden_text: str | None = None  # text for the mean hidden state (pad rows, init anti_hidden)
    suppress_pads: bool = False  # padding rows go into generation_config suppress_tokens
    refine: dict | None = None  # init.refine of add_tokens: {"spec": RefineSpec, "where": YAML path}
    cast: dict | None = None  # op dtype: {"to": safetensors dtype, "names": tensor names or None (all)}
    touched: set[str] = field(default_factory=set)  # which files must be rewritten
    plan: list[dict] = field(default_factory=list)
    tied: bool = True
    _bytelevel: bool | None = None
    key_order: tuple[list[str], list[str]] = ([], [])  # top-level and model keys of the base tokenizer.json

    # --- lookups ------------------------------------------------------------------------------
    def index(self) -> dict[str, int]:
        """content -> slot index among live slots (added tokens win over a model entry of the same string)."""
        out: dict[str, int] = {}
        for i, s in enumerate(self.slots):
            if s.removed or s.content is None:
                continue
            if s.content not in out or s.added is not None:
                out[s.content] = i
        return out

    def live(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if not s.removed]

    @property
    def size(self) -> int:
        return sum(1 for s in self.slots if not s.removed)

    def token_slot(self, token: str, where: str) -> int:
        """Slot of a token named in the recipe (its content, or its text for normal tokens)."""
        idx = self.index()
        if token in idx:
            return idx[token]
        enc = self.model_form(token)
        if enc in idx and not self.slots[idx[enc]].added:
            return idx[enc]
        gone = [s for s in self.slots if s.removed and s.content in (token, enc)]
        if gone:
            raise TokbenchError(f"{where}: token {token!r} was removed by {gone[0].removed_by}",
                                fix="reorder the ops or keep the token (prune: protect: [...])")
        raise TokbenchError(f"{where}: token {token!r} is not in the vocabulary",
                            fix="name an existing token (added/special tokens by their content) or add it first")

    def model_form(self, text: str) -> str:
        """Text -> the model-vocab spelling (byte-level: GPT-2 byte-to-unicode chars)."""
        if self.bytelevel:
            from tokbench.bpe.encoding import bytes_to_unicode

            b2u = bytes_to_unicode()
            return "".join(b2u[b] for b in text.encode("utf-8"))
        return text

    @property
    def bytelevel(self) -> bool:
        if self._bytelevel is None:
            self._bytelevel = ("ByteLevel" in json.dumps(self.tok.get("pre_tokenizer"))
                               or "ByteLevel" in json.dumps(self.tok.get("decoder")))
        return self._bytelevel

    def template_tokens(self) -> list[str]:
        """Added-token contents that the chat template names literally."""
        if not self.template:
            return []
        return [s.content for s in self.slots if not s.removed and s.added is not None and s.content
                and s.content in self.template]

    # --- tokenizer.json -----------------------------------------------------------------------
    def tokenizer_json(self, new_ids: dict[int, int]) -> dict:
        data = copy.deepcopy(self.tok)
        model = data["model"]
        vocab: dict[str, int] = {}
        added = []
        for i, s in enumerate(self.slots):
            if s.removed or s.content is None:
                continue
            nid = new_ids[i]
            if s.in_model:
                vocab[s.content] = nid
            if s.added is not None:
                entry = {"id": nid, "content": s.content}
                entry.update({k: v for k, v in s.added.items() if k not in ("id", "content")})
                added.append(entry)
        model["vocab"] = vocab
        model["merges"] = [f"{a} {b}" for a, b in self.merges] if self.merges_as_strings else [list(m) for m in self.merges]
        data["added_tokens"] = added
        _fix_post_processor(data.get("post_processor"), {s.content: new_ids[i] for i, s in enumerate(self.slots)
                                                         if not s.removed and s.content is not None})
        # keep the key order of the base file
        model = {k: model[k] for k in self.key_order[1] if k in model} | model
        data["model"] = model
        return {k: data[k] for k in self.key_order[0] if k in data} | data


def _fix_post_processor(pp, ids: dict[str, int]) -> None:
    if not isinstance(pp, dict):
        return
    for child in pp.get("processors") or []:
        _fix_post_processor(child, ids)
    st = pp.get("special_tokens")
    if isinstance(st, dict):
        for name, spec in list(st.items()):
            if isinstance(spec, dict) and "ids" in spec:
                toks = spec.get("tokens") or [name]
                if all(t in ids for t in toks):
                    spec["ids"] = [ids[t] for t in toks]
                else:
                    missing = [t for t in toks if t not in ids]
                    raise TokbenchError(f"the tokenizer's post-processor uses {missing[0]!r}, which the recipe removes",
                                        fix="keep that token (prune: protect) or edit the post-processor")
    for key in ("sep", "cls"):
        v = pp.get(key)
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
            if v[0] not in ids:
                raise TokbenchError(f"the tokenizer's post-processor uses {v[0]!r}, which the recipe removes",
                                    fix="keep that token")
            v[1] = ids[v[0]]


def read_json(path: Path) -> dict | None:
    """A model folder's JSON file as a dict, or None when it is absent."""
    from tokbench.vocab.model_io import _read_json

    return _read_json(path) if path.is_file() else None


def load_state(base_dir: Path, rows: int, config: dict, data: dict | None = None) -> State:
    """The working state of base_dir's tokenizer files (or of the tokenizer.json `data`) over `rows` rows."""
    tj = base_dir / "tokenizer.json"
    data = read_json(tj) if data is None else data
    if data is None:
        raise TokbenchError("no tokenizer.json in the model folder", path=base_dir,
                            fix="surgery edits tokenizer.json; save the tokenizer with a fast (tokenizers) backend")
    model = data.get("model") or {}
    if model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise TokbenchError(f"tokenizer model {model.get('type')!r} is not BPE", path=tj,
                            fix="surgery supports BPE tokenizer.json files (byte-level or sentencepiece-style)")
    vocab: dict[str, int] = model["vocab"]
    raw_merges = model.get("merges") or []
    as_strings = bool(raw_merges) and isinstance(raw_merges[0], str)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in raw_merges]
    added = {int(t["id"]): t for t in data.get("added_tokens") or []}
    size = max(list(vocab.values()) + list(added) + [-1]) + 1
    if size > rows:
        raise TokbenchError(f"the tokenizer has {size:,} ids but the embedding only {rows:,} rows", path=tj,
                            fix="pass the tokenizer that belongs to this model")
    by_id: dict[int, str] = {}
    for t, i in vocab.items():
        if i in by_id:
            raise TokbenchError(f"ids {i} is given to two tokens ({by_id[i]!r}, {t!r})", path=tj,
                                fix="repair the tokenizer file")
        by_id[i] = t
    slots: list[Slot] = []
    for i in range(rows):
        a = added.get(i)
        if a is not None:
            content = a["content"]
            entry = {k: v for k, v in a.items() if k not in ("id", "content")}
            slots.append(Slot(content, i, "base", {"method": "keep", "old": i}, added=entry, in_model=i in by_id))
        elif i in by_id:
            slots.append(Slot(by_id[i], i, "base", {"method": "keep", "old": i}))
        else:
            slots.append(Slot(None, i, "base", {"method": "keep", "old": i}, in_model=False))
    tok = {k: v for k, v in data.items() if k != "added_tokens"}
    tok["model"] = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
    gen = read_json(base_dir / "generation_config.json")
    tcfg = read_json(base_dir / "tokenizer_config.json")
    template, where = None, []
    if (base_dir / "chat_template.jinja").is_file():
        template = (base_dir / "chat_template.jinja").read_text(encoding="utf-8")
        where.append("jinja")
    if tcfg and isinstance(tcfg.get("chat_template"), str):
        template = template or tcfg["chat_template"]
        where.append("tokenizer_config")
    ct_json = read_json(base_dir / "chat_template.json")
    if ct_json and isinstance(ct_json.get("chat_template"), str):
        template = template or ct_json["chat_template"]
        where.append("json")
    roles: dict[str, str | None] = {}
    for role in ("bos", "eos", "pad", "unk"):
        v = (tcfg or {}).get(f"{role}_token")
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            roles[role] = v
    return State(base_dir=base_dir, tok=tok, merges=merges, merges_as_strings=as_strings, slots=slots,
                 config=config, gen=gen, tok_config=tcfg, template=template, template_where=where, roles=roles,
                 key_order=(list(data), list(model)))
