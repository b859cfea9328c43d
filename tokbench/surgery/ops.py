"""The ops: each edits the working `State` in place and appends its plan entry (what it added, removed,
renamed, padded, and how the new rows are made). Nothing here touches the weights: rows are specs that
`tokbench.surgery.rows` materialises at write time, so a dry run costs no embedding reads."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from tokbench.errors import TokbenchError
from tokbench.surgery.prune import leaf_prune
from tokbench.surgery.recipe import (AddTokensOp, ChatTemplateOp, PadVocabOp, PruneOp, RowInit, SpecialTokensOp)
from tokbench.surgery.state import Slot, State

_CONTROL_LIKE = re.compile(r"<\|[^<>|\s]{1,64}\|>|</?[A-Za-z_][A-Za-z0-9_]{0,63}>|\[/?INST\]")
_SAMPLE_CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "Write a Python function that adds two numbers."},
     {"role": "assistant", "content": "def add(a, b):\n    return a + b"}, {"role": "user", "content": "Thanks"}],
    [{"role": "user", "content": "Übersetze: «Guten Morgen» — 早上好"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris"}, {"role": "user", "content": "And of Italy?"},
     {"role": "assistant", "content": "Rome"}],
]


_HIDDEN_SAMPLE = (
    "The history of the region goes back thousands of years. In 1850 the town had 2,000 inhabitants; today it is "
    "a city of more than a million people.\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n\nQuestion: Tom has 3 "
    "apples and buys 5 more. How many apples does he have? Answer: 3 + 5 = 8.\n\"Where are you going?\" she "
    "asked. \"To the market,\" he said, and walked on without looking back.\n") * 4


class Context:
    """What ops need beyond the state: the recipe (corpora, models, seed), the base vocabulary, caches."""

    def __init__(self, recipe, base_dir: Path, progress: bool = True):
        self.recipe = recipe
        self.base_dir = base_dir
        self.progress = progress
        self._vocab = None
        self._docs: dict[str, list[str]] = {}

    @property
    def base_vocab(self):
        if self._vocab is None:
            from tokbench.vocab import load_vocabulary

            self._vocab = load_vocabulary(self.base_dir)
        return self._vocab

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.recipe.root / q)

    def corpus(self, name: str, where: str) -> list[str]:
        if name in self._docs:
            return self._docs[name]
        spec = self.recipe.corpora.get(name)
        if spec is None:
            raise TokbenchError(f"{where}: corpus {name!r} is not defined under `corpora:`",
                                fix=f"add `corpora: {{{name}: {{path: <file or corpus asset>}}}}`"
                                    + (f" (defined: {', '.join(sorted(self.recipe.corpora))})" if self.recipe.corpora else ""))
        docs = read_corpus(self.path(spec.path) if self.path(spec.path).exists() else spec.path, spec.field,
                           spec.split, spec.max_chars, f"corpora.{name}.path")
        self._docs[name] = docs
        return docs

    def model_dir(self, name: str, where: str) -> Path:
        spec = self.recipe.models.get(name)
        p = spec.path if spec else name
        return resolve_model(self.path(p) if self.path(p).exists() else p,
                             f"models.{name}.path" if spec else where)


def resolve_model(p, where: str) -> Path:
    q = Path(p)
    if q.exists():
        return q.parent if q.is_file() else q
    from tokbench.assets import resolve

    try:
        return Path(resolve(str(p), kind="model"))
    except TokbenchError as exc:
        raise TokbenchError(f"{where}: model {str(p)!r} not found ({str(exc).split(';')[0]})",
                            fix="pass a model folder (relative to the recipe) or a registered model asset name") from None


def read_corpus(path, field, split, max_chars, where: str) -> list[str]:
    from tokbench.assets import iter_documents

    try:
        docs = list(iter_documents(str(path), text_field=field))
    except TokbenchError as exc:
        raise TokbenchError(f"{where}: {exc}", fix="pass an existing text/JSONL file, folder or corpus asset name") from None
    if split:
        a, b = (float(x.strip().rstrip("%")) for x in split.split(":"))
        n = len(docs)
        docs = docs[int(round(n * a / 100)):int(round(n * b / 100))]
    if max_chars is not None:
        out, used = [], 0
        for d in docs:
            if used + len(d) >= max_chars:
                out.append(d[:max_chars - used])
                break
            out.append(d)
            used += len(d)
        docs = out
    if not docs:
        raise TokbenchError(f"{where}: the corpus is empty", fix="check the path, split and max_chars")
    return docs


def hf_tokenizer(state: State):
    """A `tokenizers.Tokenizer` for the current state (live slots, ids = live order)."""
    import json

    from tokenizers import Tokenizer

    new_ids = {i: n for n, i in enumerate(state.live())}
    return Tokenizer.from_str(json.dumps(state.tokenizer_json(new_ids), ensure_ascii=False)), new_ids


def _text_of(state: State, content: str) -> bytes | None:
    if state.bytelevel:
        from tokbench.bpe.encoding import bytelevel_bytes

        return bytelevel_bytes(content)
    return content.replace("\u2581", " ").encode("utf-8")


def _row_spec(state: State, init: RowInit, token_bytes: bytes | None, ctx: Context, where: str) -> dict:
    spec: dict = {"method": init.method, "norm_cap": init.norm_cap}
    if init.method == "copy":
        j = state.token_slot(init.source, f"{where}.init.from")
        src = state.slots[j].row
        spec = dict(src) if src["method"] != "keep" else {"method": "copy", "old": src["old"]}
        spec["copied_from"] = init.source
    elif init.method in ("subword", "position_mean", "omp", "tokenadapt"):
        spec["pieces"] = ([int(x) for x in ctx.base_vocab.segment(token_bytes, True)
                           if x < len(ctx.base_vocab)] if token_bytes else [])
        if init.method in ("omp", "tokenadapt"):  # their auxiliary space embeds the token's text
            text = (token_bytes or b"").decode("utf-8", errors="replace")
            spec["text"] = text.strip() or text or " "
    return spec


def _insert(state: State, slots: list[Slot]) -> None:
    """New slots go after the last token-bearing slot (padding rows stay at the end)."""
    pos = len(state.slots)
    while pos > 0 and state.slots[pos - 1].content is None:
        pos -= 1
    state.slots[pos:pos] = slots


# --- prune -----------------------------------------------------------------------------------------------
def protected_tokens(state: State, extra: list[str]) -> dict[str, str]:
    """token -> why it may not be removed: specials/added tokens, single symbols (bytes), the tokens the chat
    template's own text encodes to (sample conversations with empty contents), and the recipe's `protect` list."""
    out: dict[str, str] = {}
    if state.template:
        tok, new_ids = hf_tokenizer(state)
        inv = {n: i for i, n in new_ids.items()}
        for conv in _SAMPLE_CONVERSATIONS:  # the template's own text: the conversations with empty contents
            empty = [{"role": m["role"], "content": ""} for m in conv]
            text = render_template(state.template, empty, state, "chat template", add_generation_prompt=True)
            for tid in tok.encode(text, add_special_tokens=False).ids:
                c = state.slots[inv[tid]].content
                if c is not None:
                    out[c] = "the chat template uses it"
    for s in state.slots:
        if s.removed or s.content is None:
            continue
        if s.added is not None:
            out[s.content] = ("the chat template uses it" if state.template and s.content in state.template
                              else "it is a special/added token")
        elif len(s.content) == 1:
            out[s.content] = "it is a byte (single-symbol) token"
    for t in extra:
        out[state.model_form(t)] = out[t] = "the recipe protects it"
    return out


def token_counts(state: State, texts: list[str]) -> Counter:
    tok, new_ids = hf_tokenizer(state)
    inv = {n: i for i, n in new_ids.items()}
    counts: Counter = Counter()
    step = 256
    for k in range(0, len(texts), step):
        for enc in tok.encode_batch(texts[k:k + step], add_special_tokens=False):
            counts.update(enc.ids)
    return Counter({state.slots[inv[i]].content: c for i, c in counts.items()})


def _script_candidate(scripts: list[str]):
    import regex

    keep = regex.compile("^[" + "".join(f"\\p{{Script={s}}}" for s in scripts) + "]*$")

    def bad(b: bytes | None) -> bool:
        if not b:
            return False
        text = b.decode("utf-8", errors="ignore")
        return bool(text) and not keep.match(text)
    return bad


def op_prune(state: State, op: PruneOp, where: str, ctx: Context) -> None:
    protect = protected_tokens(state, op.protect)
    live = [state.slots[i] for i in state.live()]
    model_tokens = [s.content for s in live if s.in_model and s.added is None and s.content is not None]
    counts: Counter = Counter()
    if op.corpora:
        for name in op.corpora:
            counts.update(token_counts(state, ctx.corpus(name, f"{where}.corpora")))
    if op.strategy == "list":
        listed = {}
        for t in op.tokens:
            j = state.token_slot(t, f"{where}.tokens")
            c = state.slots[j].content
            if c in protect:
                what = "the chat template" if protect[c].startswith("the chat template") else None
                if what:
                    raise TokbenchError(f"{where} (prune) removes {t!r}, which the chat template uses",
                                        fix="drop it from tokens, or change the chat template in an earlier op")
                raise TokbenchError(f"{where} (prune) cannot remove {t!r}: {protect[c]}",
                                    fix="drop it from tokens (specials, bytes and template tokens are protected)")
            listed[c] = t
        candidate = listed.__contains__
    elif op.strategy == "script":
        bad = _script_candidate(op.scripts_keep)
        candidate = (lambda t: bad(_text_of(state, t)) and counts.get(t, 0) < op.min_count) if op.corpora \
            else (lambda t: bad(_text_of(state, t)))
    elif op.strategy == "frequency":
        candidate = lambda t: counts.get(t, 0) < op.min_count  # noqa: E731
    else:  # undertrained: the detector's candidates (on the base rows), still leaf by leaf
        found = _undertrained(state, ctx, where, indicator="auto", percentile=2.0)
        cands = {state.slots[i].content for i in _slots_of_old(state, found.candidates)}
        candidate = cands.__contains__
    removed, removed_merges = leaf_prune(model_tokens, state.merges, counts, candidate=candidate, protected=set(protect),
                                         target_size=op.target_vocab_size, current_size=state.size)
    if op.strategy == "list":
        missed = [t for c, t in listed.items() if c not in removed]
        if missed:
            users = [f"{a}+{b}" for a, b in state.merges if a == state.model_form(missed[0]) or b == state.model_form(missed[0])
                     or a == missed[0] or b == missed[0]]
            raise TokbenchError(f"{where} (prune) cannot remove {missed[0]!r}: kept merges need it "
                                f"({', '.join(users[:3])})",
                                fix="also list the tokens built on it, or use strategy frequency")
    for s in state.slots:
        if not s.removed and s.content in removed and s.added is None:
            s.removed = True
            s.removed_by = f"{where} (prune)"
    state.merges = [m for n, m in enumerate(state.merges) if n not in removed_merges]
    state.touched.update({"tokenizer.json", "merges"})
    hidden = int(state.config.get("hidden_size") or state.config.get("n_embd") or 0)
    state.plan.append({"op": where, "name": "prune", "strategy": op.strategy, "removed": len(removed),
                       "merges_removed": len(removed_merges), "protected": len(protect),
                       "examples": sorted(removed, key=lambda t: (len(t), t))[:8],
                       "embedding_parameters_saved": len(removed) * hidden * (1 if state.tied else 2),
                       "calibration_tokens": int(sum(counts.values()))})


# --- add tokens ------------------------------------------------------------------------------------------
def _counter_for(state: State, where: str):
    from tokbench import _core
    from tokbench.bpe.encoding import _read_pre_tokenizer

    def refuse(why: str):
        raise TokbenchError(f"{where}: learning tokens needs a byte-level BPE pre-tokenizer; this one has {why}",
                            fix="add explicit tokens instead (tokens: [...])")
    regex, digits = _read_pre_tokenizer(state.tok.get("pre_tokenizer"), refuse)
    specials = [s.content for s in state.slots if not s.removed and s.added is not None and s.content]
    return _core.BpeCounter(regex, individual_digits=digits, specials=specials)


def _filter_learned(state: State, ctx: Context, learn, where: str, vocab_bytes, merges_idx, vocab2, candidates):
    """learn.require_letter / learn.min_documents (tokbench.surgery.stable.filter_learned) and their report."""
    from tokbench.surgery.stable import candidate_encoder, document_counts, filter_learned

    known = len(vocab_bytes)
    df = None
    if learn.min_documents > 1:
        documents = [d for k, c in enumerate(learn.corpora) for d in ctx.corpus(c, f"{where}.corpora[{k}]")]
        df = document_counts(candidates, known, documents,
                             lambda cands: candidate_encoder(state.tok, vocab_bytes, merges_idx, vocab2, cands))
    text = lambda k: bytes(vocab2[k]).decode("utf-8", "replace")  # noqa: E731
    f = filter_learned(candidates, known, text, require_letter=learn.require_letter,
                       min_documents=learn.min_documents, df=df)
    report = {"candidates": len(candidates), "passed": len(f.merges), "refused_no_letter": f.no_letter,
              "refused_few_documents": f.few_documents, "skipped_parts_refused": f.skipped,
              "require_letter": learn.require_letter, "min_documents": learn.min_documents}
    return f.merges, report


def _keep_stable(state: State, ctx: Context, spec, where: str, vocab_bytes, merges_idx, candidates, n, name_of):
    """The first n candidate merges whose firing keeps spec.corpus's lines within the bound (module stable)."""
    from tokbench.surgery.stable import Reference, candidate_encoder, select_stable

    enc = candidate_encoder(state.tok, vocab_bytes, merges_idx)
    corpora = []
    for k, c in enumerate(spec.corpora):
        lines = [x for d in ctx.corpus(c, f"{where}.corpora[{k}]") for x in d.split("\n") if x.strip()]
        if not lines:
            raise TokbenchError(f"{where}.corpora[{k}]: corpus {c!r} has no non-empty line",
                                fix="name a general text corpus with content")
        corpora.append(lines)
    ref = Reference.of(corpora, enc.split, enc.encode_ordinary)
    sel = select_stable(candidates, n, len(vocab_bytes), ref, spec.max_changed_lines_pct)
    report = {"corpora": {c: {"lines": m, "changed_lines": u, "changed_lines_pct": round(100.0 * u / m, 4)}
                          for c, m, u in zip(spec.corpora, sel.n_lines, sel.changed_lines)},
              "max_changed_lines_pct": spec.max_changed_lines_pct, "candidates": len(candidates),
              "kept": len(sel.merges), "refused": sel.rejected, "skipped_parts_refused": sel.skipped,
              "examples_refused": [name_of(k) for k in sel.examples_rejected]}
    return sel.merges, report


def op_add_tokens(state: State, op: AddTokensOp, where: str, ctx: Context) -> None:
    from tokbench.bpe.encoding import bytes_to_unicode

    if not state.bytelevel and op.learn is not None:
        raise TokbenchError(f"{where}.learn: continued BPE training needs a byte-level BPE tokenizer",
                            fix="add explicit tokens instead")
    b2u = bytes_to_unicode()
    name = lambda b: "".join(b2u[x] for x in b) if state.bytelevel else b.decode("utf-8")  # noqa: E731
    index = state.index()
    new_tokens: list[tuple[str, bytes]] = []  # (content, bytes) in merge order
    new_merges: list[tuple[str, str]] = []
    learned = 0
    stable_report = filter_report = None
    if op.learn is not None:
        from tokbench import _core
        from tokbench.bpe.train import run_cancellable

        counter = _counter_for(state, f"{where}.learn")
        for c in op.learn.corpora:
            counter.count(ctx.corpus(c, f"{where}.learn.corpora"))
        live = [state.slots[i] for i in state.live()]
        normal = [s for s in live if s.in_model and s.added is None and s.content is not None]
        vocab_bytes = [_text_of(state, s.content) for s in normal]
        pos = {s.content: k for k, s in enumerate(normal)}
        merges_idx = [(pos[a], pos[b]) for a, b in state.merges if a in pos and b in pos]
        stable = op.learn.keep_stable
        filtering = op.learn.require_letter or op.learn.min_documents > 1
        n_learn = op.learn.n * (stable.candidates if stable else 4 if filtering else 1)
        target = len(vocab_bytes) + n_learn
        vocab2, merges2 = run_cancellable(
            lambda prog: _core.bpe_train_super(counter, vocab_bytes, merges_idx, target, 1 << 30,
                                               op.learn.min_frequency, op.learn.max_token_length, prog),
            n_learn, "learning tokens", ctx.progress)
        chosen = [(left, right, merged) for left, right, merged, _count in merges2]
        if filtering:
            chosen, filter_report = _filter_learned(state, ctx, op.learn, f"{where}.learn", vocab_bytes, merges_idx,
                                                    vocab2, chosen)
        if stable is None:
            chosen = chosen[:op.learn.n]
        else:
            chosen, stable_report = _keep_stable(state, ctx, stable, f"{where}.learn.keep_stable", vocab_bytes,
                                                 merges_idx, chosen, op.learn.n, lambda k: name(vocab2[k]))
        for left, right, merged in chosen:
            new_tokens.append((name(vocab2[merged]), bytes(vocab2[merged])))
            new_merges.append((name(vocab2[left]), name(vocab2[right])))
        learned = len(new_tokens)
    explicit = 0
    if op.tokens:
        tok, _ = hf_tokenizer(state)
        pre = tok.pre_tokenizer
        known = set(index) | {t for t, _ in new_tokens}
        for t in op.tokens:
            pieces = pre.pre_tokenize_str(t) if pre is not None else [(t, (0, len(t)))]
            if len(pieces) != 1:
                raise TokbenchError(f"{where}.tokens: {t!r} is split by the pre-tokenizer into "
                                    f"{[p for p, _ in pieces]}, so no merge can ever produce it",
                                    fix="add it as a control token (special_tokens.add_control) or split it")
            content = pieces[0][0]
            if content in known:
                raise TokbenchError(f"{where}.tokens: {t!r} is already in the vocabulary",
                                    fix="drop it from tokens")
            ids = tok.model.tokenize(content)
            chain = [x.value for x in ids]
            for k in range(1, len(chain)):
                left = "".join(chain[:k])
                right = chain[k]
                merged = left + right
                new_merges.append((left, right))
                if merged not in known:
                    new_tokens.append((merged, _text_of(state, merged) or merged.encode()))
                    known.add(merged)
                    explicit += 1
    if op.init.refine is not None:
        if state.refine is not None:
            raise TokbenchError(f"{where}.init.refine: {state.refine['where']} already refines new rows",
                                fix="refine in one add_tokens op (it refines every new row of that op)")
        ctx.corpus(op.init.refine.text, f"{where}.init.refine.text")
        state.refine = {"spec": op.init.refine, "where": f"{where}.init.refine"}
    slots = []
    for content, b in new_tokens:
        spec = _row_spec(state, op.init, b, ctx, where)
        if op.init.refine is not None:
            spec["refine"] = True
        slots.append(Slot(content, None, f"{where} (add_tokens)", spec))
    _insert(state, slots)
    state.merges.extend(new_merges)
    state.touched.update({"tokenizer.json", "merges"})
    state.plan.append({"op": where, "name": "add_tokens", "added": len(slots), "learned": learned,
                       **({"requested": op.learn.n} if op.learn is not None else {}),
                       "explicit": explicit, "merges_added": len(new_merges), "init": op.init.method,
                       "examples": [c for c, _ in new_tokens[:8]],
                       **({"keep_stable": stable_report} if stable_report else {}),
                       **({"filters": filter_report} if filter_report else {})})


# --- special tokens -------------------------------------------------------------------------------------
def op_special_tokens(state: State, op: SpecialTokensOp, where: str, ctx: Context) -> None:
    renamed, added = [], []
    for old, new in op.rename.items():
        j = state.token_slot(old, f"{where}.rename")
        s = state.slots[j]
        if s.added is None:
            raise TokbenchError(f"{where}.rename: {old!r} is not a special/added token",
                                fix="rename only special tokens (normal tokens are text)")
        if new in state.index():
            raise TokbenchError(f"{where}.rename: {new!r} already exists", fix="choose an unused name")
        s.content = new
        s.op = f"{where} (special_tokens rename of {old!r})"
        for role, v in list(state.roles.items()):
            if v == old:
                state.roles[role] = new
        state.eot = [new if e == old else e for e in state.eot]
        if state.template and old in state.template:
            state.template = state.template.replace(old, new)
            state.touched.add("template")
        renamed.append([old, new])
    for ct in op.add_control:
        if ct.token in state.index():
            raise TokbenchError(f"{where}.add_control: {ct.token!r} already exists", fix="drop it or rename it")
        spec = _row_spec(state, ct.init, None, ctx, f"{where}.add_control")
        entry = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        _insert(state, [Slot(ct.token, None, f"{where} (special_tokens add_control)", spec, added=entry,
                             in_model=False)])
        added.append({"token": ct.token, "init": ct.init.method, "from": ct.init.source})
    for role, token in op.roles.items():
        if token is not None:
            j = state.token_slot(token, f"{where}.roles.{role}")
            token = state.slots[j].content
        if role == "eot":
            state.eot = [token] if token else []
        else:
            state.roles[role] = token
    state.touched.update({"tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"})
    state.plan.append({"op": where, "name": "special_tokens", "renamed": renamed, "added": added,
                       "roles": dict(op.roles)})


# --- chat template ----------------------------------------------------------------------------------------
def render_template(template: str, messages: list[dict], state: State, where: str, add_generation_prompt=False) -> str:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(TemplateError(m))
    tok = {r: state.roles.get(r) or "" for r in ("bos", "eos", "pad", "unk")}
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                bos_token=tok["bos"], eos_token=tok["eos"], tools=None)
    except TemplateError as exc:
        raise TokbenchError(f"{where}: the chat template does not render ({exc})",
                            fix="fix the template (Jinja) or use source: keep") from None


def template_controls(template: str, state: State) -> list[str]:
    """Control-token strings a template names: the current added tokens it contains and anything that looks
    like one (<|...|>, <name>, [INST])."""
    found = set(state.template_tokens())
    for m in _CONTROL_LIKE.findall(template):
        found.add(m)
    return sorted(found)


def check_template(state: State, where: str) -> list[str]:
    """Every control token the template uses exists and encodes to one id; the template renders."""
    tmpl = state.template
    if not tmpl:
        return []
    controls = template_controls(tmpl, state)
    idx = state.index()
    tok, new_ids = hf_tokenizer(state)
    for c in controls:
        if c not in idx:
            gone = [s for s in state.slots if s.removed and s.content == c]
            why = f"it was removed by {gone[0].removed_by}" if gone else "it is not in the vocabulary"
            raise TokbenchError(f"{where}: the chat template uses {c!r} but {why}",
                                fix="add it (special_tokens.add_control), keep it, or change the template")
        ids = tok.encode(c, add_special_tokens=False).ids
        if len(ids) != 1:
            raise TokbenchError(f"{where}: the chat template's {c!r} encodes to {len(ids)} ids, not one",
                                fix="make it a special token (special_tokens.add_control)")
    for conv in _SAMPLE_CONVERSATIONS:
        render_template(tmpl, conv, state, where, add_generation_prompt=True)
    return controls


def _template_of(folder: Path, where: str) -> str:
    from tokbench.surgery.state import read_json

    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        d = read_json(folder / name) or {}
        if isinstance(d.get("chat_template"), str):
            return d["chat_template"]
    raise TokbenchError(f"{where}: no chat template in this model (chat_template.jinja or tokenizer_config.json)",
                        path=folder, fix="name a model that has a chat template, or use source: file")


def op_chat_template(state: State, op: ChatTemplateOp, where: str, ctx: Context) -> None:
    if op.source == "file":
        p = ctx.path(op.path)
        if not p.is_file():
            raise TokbenchError(f"{where}.path: template file not found", path=p,
                                fix="give a .jinja file (relative to the recipe)")
        state.template = p.read_text(encoding="utf-8")
    elif op.source == "model":
        state.template = _template_of(ctx.model_dir(op.model, f"{where}.model"), f"{where}.model")
    elif state.template is None:
        raise TokbenchError(f"{where}: source keep, but the base has no chat template",
                            fix="use source: file or source: model")
    state.template_where = list(op.write)
    state.touched.add("template")
    controls = check_template(state, where)
    state.plan.append({"op": where, "name": "chat_template", "source": op.source, "write": list(op.write),
                       "control_tokens": controls})


# --- pad --------------------------------------------------------------------------------------------------
def op_pad_vocab(state: State, op: PadVocabOp, where: str, ctx: Context) -> None:
    n = state.size
    target = -(-n // op.multiple_of) * op.multiple_of
    pads = [Slot(None, None, f"{where} (pad_vocab)", {"method": "pad", "init": op.init}, in_model=False)
            for _ in range(target - n)]
    state.slots.extend(pads)
    state.suppress_pads = op.suppress_in_generation
    if op.init == "anti_hidden":
        text = "\n".join(ctx.corpus(op.corpus, f"{where}.corpus")) if op.corpus else _HIDDEN_SAMPLE
        state.hidden_text = text[:20000]
    state.touched.update({"config.json", "generation_config.json"})
    state.plan.append({"op": where, "name": "pad_vocab", "multiple_of": op.multiple_of, "padded_rows": len(pads),
                       "rows": target, "init": op.init, "suppressed_in_generation": op.suppress_in_generation})


def _adopt(state: State, new: State, folder: Path) -> None:
    """Take the whole vocabulary (tokenizer files, slots, roles, template) of `new` into `state`."""
    for f in ("tok", "merges", "merges_as_strings", "slots", "tok_config", "template", "template_where", "roles",
              "key_order", "_bytelevel"):
        setattr(state, f, getattr(new, f))
    state.gen = state.gen if state.gen is not None else new.gen
    state.tokenizer_dir = folder
    state.touched.update({"tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json", "roles"})
    if state.template:
        state.touched.add("template")


# --- union of several models' vocabularies ---------------------------------------------------------------------
def op_union(state: State, op, where: str, ctx: Context) -> None:
    """One vocabulary for the base and the `with` models (tokbench.surgery.union: real merges, mergekit's
    tokens: block); emit: permuted -> OUT is the base re-indexed onto it, OUT/members/<name> each other member;
    emit: merged -> OUT is the base's body with the weighted mean of every member's re-indexed rows (mergekit's
    linear merge of the embedding and head; weights default equal)."""
    from tokbench.surgery.state import load_state
    from tokbench.surgery.union import build_union, row_plan

    members = {"base": str(state.base_dir)}
    for n in op.with_:
        if n == "base" or n in members:
            raise TokbenchError(f"{where}.with: {n!r} is named twice or is the base", fix="list each other model once")
        members[n] = str(ctx.model_dir(n, f"{where}.with"))
    weights = {n: 1.0 for n in members}
    if op.weights is not None:
        if op.emit != "merged":
            raise TokbenchError(f"{where}.weights: weights apply to emit: merged only",
                                fix="add `emit: merged`, or drop weights")
        unknown = sorted(set(op.weights) - set(members))
        if unknown:
            raise TokbenchError(f"{where}.weights.{unknown[0]}: not a member of the union",
                                fix=f"weigh the members {', '.join(members)}")
        weights = {n: float(op.weights.get(n, 0.0)) for n in members}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise TokbenchError(f"{where}.weights: weights must be >= 0 with a positive sum",
                                fix="give each member a weight such as 0.5")
    u = build_union(members, "base", vocab=op.vocab, tokens=op.tokens or None)
    plans = row_plan(u, base="base")
    data = json.loads(json.dumps(u.tokenizer))
    new = load_state(state.base_dir, len(u), state.config, data=data)
    for k, s in enumerate(new.slots):
        s.old = u.permutations["base"][k]
        s.row = {"method": "union", "index": k, "source": plans["base"][k].why}
        s.op = f"{where} (union: {u.origin[k]})"
    _adopt(state, new, state.base_dir)
    state.union = {"plans": plans, "members": {n: Path(p) for n, p in members.items()}, "size": len(u),
                   "summary": u.summary(), "permutations": u.permutations, "emit": op.emit, "weights": weights}
    state.plan.append({"op": where, "name": "union", "members": list(members), "size": len(u),
                       **{k: v for k, v in u.summary().items() if k != "coverage"}})


# --- replace the tokenizer ------------------------------------------------------------------------------------
def op_replace_tokenizer(state: State, op, where: str, ctx: Context) -> None:
    """The whole vocabulary from another tokenizer, through the alignment core (as `tokbench transplant`):
    shared tokens keep their rows, specials are mapped by role (then by identical content), every other token
    gets a row from the shared initialisers over its decomposition into base tokens."""
    from tokbench.surgery.state import load_state
    from tokbench.vocab import align, load_vocabulary

    p = ctx.path(op.tokenizer)
    if not p.exists():
        try:
            from tokbench.assets import resolve

            p = Path(resolve(op.tokenizer))
        except TokbenchError:
            raise TokbenchError(f"{where}.tokenizer: {op.tokenizer!r} not found",
                                fix="pass a tokenizer folder / tokenizer.json (relative to the recipe) or an asset name") from None
    folder = p if p.is_dir() else p.parent
    if not (folder / "tokenizer.json").is_file():
        raise TokbenchError(f"{where}.tokenizer: no tokenizer.json", path=folder,
                            fix="pass a folder holding a tokenizers tokenizer.json")
    target = load_vocabulary(folder / "tokenizer.json")
    al = align(ctx.base_vocab, target)
    new = load_state(folder, len(target), state.config)
    specials: dict[int, int | None] = {}
    for role, (i, o) in al.roles.items():
        specials[i] = o if o is not None else ctx.base_vocab.special_contents.get(target.tokens[i] or "")
    for i, o in al.special_map.items():
        specials.setdefault(i, o)
    counts = {"shared": 0, "special_mapped": 0, "new": 0}
    for i, s in enumerate(new.slots):
        s.op = f"{where} (replace_tokenizer)"
        o = al.shared.get(i)
        if o is None and i in specials:
            o = specials[i]
            if o is not None:
                counts["special_mapped"] += 1
        elif o is not None:
            counts["shared"] += 1
        if o is not None:
            s.old, s.row = o, {"method": "keep", "old": o}
        else:
            s.old = None
            s.row = {"method": op.method, "pieces": list(al.decompositions.get(i) or []), "norm_cap": "median"}
            counts["new"] += 1 if s.content is not None else 0
    _adopt(state, new, folder)
    state.plan.append({"op": where, "name": "replace_tokenizer", "tokenizer": str(op.tokenizer), "size": len(target),
                       "init": op.method, **counts})


# --- under-trained tokens ------------------------------------------------------------------------------------
def _slots_of_old(state: State, old_ids) -> list[int]:
    """Live slots that still hold the base rows of `old_ids`."""
    want = {int(i) for i in old_ids}
    return [k for k, s in enumerate(state.slots) if not s.removed and s.old in want and s.row.get("method") == "keep"]


def _undertrained(state: State, ctx: Context, where: str, *, indicator: str, percentile: float):
    from tokbench.surgery.undertrained import detect_model

    key = (indicator, percentile)
    cache = getattr(ctx, "_undertrained", {})
    if key not in cache:
        cache[key] = detect_model(ctx.base_dir, indicator=indicator, percentile=percentile)
        ctx._undertrained = cache
    return cache[key]


def op_undertrained(state: State, op, where: str, ctx: Context) -> None:
    found = _undertrained(state, ctx, where, indicator=op.indicator, percentile=op.percentile)
    if op.verify and op.max_verify and found.candidates:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM

        from tokbench.surgery.undertrained import verify

        model = AutoModelForCausalLM.from_pretrained(str(ctx.base_dir), local_files_only=True, dtype=torch.float32)
        model.eval()
        tok = Tokenizer.from_file(str(ctx.base_dir / "tokenizer.json"))
        found.verified = verify(model, lambda t: tok.encode(t, add_special_tokens=False).ids, found.candidates,
                                max_candidates=min(op.max_verify, len(found.candidates)), progress=ctx.progress)
    cands = found.candidates
    if found.verified:  # prompted candidates the model does re-emit are not under-trained
        cands = [i for i in cands if found.verified.get(i, {}).get("label", "").endswith("verified") or i not in found.verified]
    slots = _slots_of_old(state, cands)
    acted = 0
    if op.action == "prune":
        live = [state.slots[i] for i in state.live()]
        model_tokens = [s.content for s in live if s.in_model and s.added is None and s.content is not None]
        protect = protected_tokens(state, [])
        names = {state.slots[i].content for i in slots}
        removed, removed_merges = leaf_prune(model_tokens, state.merges, {}, candidate=names.__contains__,
                                             protected=set(protect))
        for s in state.slots:
            if not s.removed and s.content in removed and s.added is None:
                s.removed, s.removed_by = True, f"{where} (undertrained prune)"
        state.merges = [m for n, m in enumerate(state.merges) if n not in removed_merges]
        state.touched.update({"tokenizer.json", "merges"})
        acted = len(removed)
    elif op.action == "reinit":
        produced = {a + b: (a, b) for a, b in state.merges}
        index = state.index()
        for k in slots:
            s = state.slots[k]
            parts = produced.get(s.content or "")
            pieces = [state.slots[index[p]].old for p in parts if p in index] if parts else []
            pieces = [p for p in pieces if p is not None]
            s.row = {"method": "subword", "pieces": pieces, "norm_cap": "median", "reinit_from": s.old}
            s.op = f"{where} (undertrained reinit)"
            acted += 1
    summary = found.to_dict(top=50)
    state.plan.append({"op": where, "name": "undertrained", "indicator": summary["indicator"],
                       "reference_rule": summary["reference_rule"], "candidates": summary["candidates"],
                       "degenerate": summary["degenerate"], "verified": summary["verified"], "action": op.action,
                       "acted_on": acted, "examples": [t["token"] for t in summary["tokens"][:8]]})
    state.undertrained = summary


def op_dtype(state: State, op, where: str, ctx: Context) -> None:
    from tokbench.surgery.dtype import NAMES, plan_cast
    from tokbench.vocab.model_io import open_model_folder

    model = open_model_folder(ctx.base_dir)
    dtypes = {n: h[n]["dtype"] for h, _ in model.headers.values() for n in h if n != "__metadata__"}
    embed = {n for n in (model.embed_name, model.head_name, model.stray_head) if n}
    info = plan_cast(dtypes, op.to, op.tensors, op.allow_lossy, where, embed)
    state.cast = {"to": NAMES[op.to], "names": None if op.tensors == "all" else sorted(embed)}
    state.plan.append({"op": where, "name": "dtype", **info})


OPS = {"dtype": op_dtype, "union": op_union, "replace_tokenizer": op_replace_tokenizer, "undertrained": op_undertrained, "prune": op_prune, "add_tokens": op_add_tokens, "special_tokens": op_special_tokens,
       "chat_template": op_chat_template, "pad_vocab": op_pad_vocab}
