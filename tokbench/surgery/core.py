"""`run(recipe, out)`: apply a surgery recipe to a causal LM and write the edited model folder.

Ops run in order on one working state (tokbench.surgery.state); ids are compacted once at the end. The
output is a Hugging Face folder like `tokbench transplant` writes: only the input embedding and the head
are read into memory (float32) and rewritten in the base's dtype, every other tensor is copied byte for
byte in the base's shard layout; tied models stay tied; it is written to a temporary sibling and renamed
into place, inputs are never modified. Next to the weights: `idmap.json` (for every new id: the old id or
null, the token and its bytes, the op that made it and how its row was made), `surgery_report.json`
(deterministic: no timings, no absolute output path; only tokbench's output marker `.tokbench-output.json`
carries a creation time) and `recipe.yml` (the recipe as given).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from tokbench.errors import TokbenchError
from tokbench.surgery.ops import OPS, Context, _SAMPLE_CONVERSATIONS, _text_of, check_template, resolve_model
from tokbench.surgery.recipe import Recipe, load_recipe, parse_recipe
from tokbench.surgery.rows import aux_for, build_rows
from tokbench.surgery.state import ROLE_KEYS, State, load_state
from tokbench.outputs import discard_output
from tokbench.vocab.model_io import commit_output, open_model_folder, prepare_output, write_model_folder

_COPY_ALONG = ("special_tokens_map.json",)


def _check_order(recipe: Recipe) -> None:
    names = [op.op for op in recipe.ops]
    for i, n in enumerate(names):
        if n == "pad_vocab" and i != len(names) - 1:
            raise TokbenchError(f"ops[{i}] (pad_vocab) must be the last op: ops[{i + 1}] ({names[i + 1]}) would "
                                "change the vocabulary after padding", fix="move pad_vocab to the end")
        if n == "replace_tokenizer" and i != 0:
            raise TokbenchError(f"ops[{i}] (replace_tokenizer) must be the first op: it replaces the whole "
                                "vocabulary the earlier ops edited", fix="move replace_tokenizer to the start")
    if "union" in names:
        i = names.index("union")
        if i != 0:
            raise TokbenchError(f"ops[{i}] (union) must be the first op: it replaces the vocabulary the earlier ops "
                                "edited", fix="move union to the start")
        other = [(k, n) for k, n in enumerate(names[1:], 1) if n not in ("chat_template", "pad_vocab")]
        if other:
            raise TokbenchError(f"ops[{other[0][0]}] ({other[0][1]}) after a union: the member checkpoints are "
                                "re-indexed rows only", fix="edit the members before the union, or keep only "
                                "chat_template / pad_vocab after it")
    for n in ("chat_template", "pad_vocab", "replace_tokenizer", "union", "dtype"):
        where = [i for i, x in enumerate(names) if x == n]
        if len(where) > 1:
            raise TokbenchError(f"ops[{where[0]}] and ops[{where[1]}] are both {n}; the second would undo the first",
                                fix=f"keep one {n} op")


def _base_roles(state: State) -> None:
    """Role tokens from tokenizer_config.json, else from config.json's ids."""
    for role, key in ROLE_KEYS.items():
        if role in state.roles:
            continue
        i = state.config.get(key)
        if isinstance(i, int) and 0 <= i < len(state.slots) and state.slots[i].content is not None:
            state.roles[role] = state.slots[i].content


def plan(recipe: Recipe, progress: bool = True) -> tuple[State, Context, object]:
    """Load the base and apply every op to the working state (no weights read, nothing written)."""
    _check_order(recipe)
    base_dir = resolve_model(recipe.base if not (recipe.root / recipe.base).exists() else recipe.root / recipe.base,
                             "base")
    model = open_model_folder(base_dir)
    state = load_state(base_dir, model.vocab_rows, model.config)
    state.tied = model.tied
    _base_roles(state)
    ctx = Context(recipe, base_dir, progress=progress)
    for i, op in enumerate(recipe.ops):
        where = f"ops[{i}]"
        OPS[op.op](state, op, where, ctx)
    if state.template and "template" not in state.touched:
        check_template(state, "chat template (kept)")
    return state, ctx, model


def _union_members(state: State, model, base_embed, base_head) -> dict:
    """Every member's rows (name -> matrix, the base under "base") and the other members' folders."""
    embeds, heads, folders = {"base": base_embed}, {"base": base_head}, {}
    for name, folder in state.union["members"].items():
        if name == "base":
            continue
        m = open_model_folder(folder)
        if m.hidden != model.hidden or m.tied != model.tied:
            raise TokbenchError(f"union member {name} has hidden size {m.hidden} ({'tied' if m.tied else 'untied'}); "
                                f"the base {model.hidden} ({'tied' if model.tied else 'untied'})", path=folder,
                                fix="unite models of one architecture")
        folders[name] = m
        embeds[name] = m.read_embedding()
        heads[name] = None if m.tied else m.read_head()
    return {"embeds": embeds, "heads": heads if not model.tied else None, "folders": folders}


def _union_rows(state: State, member: str, rows: dict, specs: list[dict], seed: int, hidden):
    """The output matrix of `member` re-indexed onto the union (padding rows after it as specified)."""
    from tokbench.surgery.union import reindex_rows

    u = reindex_rows(state.union["plans"][member], rows)
    out, _, _ = build_rows(specs, rows[member], np.arange(0), seed, hidden=hidden, union=u)
    return out


def _write_members(state: State, members: dict, specs: list[dict], seed: int, hidden, tmp: Path,
                   updates: dict, gen: dict | None) -> dict:
    """OUT/members/<name>: each other member re-indexed onto the union vocabulary (the same tokenizer files)."""
    written = {}
    for name, model in members["folders"].items():
        dest = tmp / "members" / name
        dest.mkdir(parents=True)
        embed = _union_rows(state, name, members["embeds"], specs, seed, None)
        head = None if model.tied else _union_rows(state, name, members["heads"], specs, seed + 1, None)
        write_model_folder(model, dest, embed, head, updates, progress=False)
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            if (tmp / f).is_file():
                shutil.copy2(tmp / f, dest / f)
        if gen is not None:
            _write_json(dest / "generation_config.json", gen)
        perm = state.union["permutations"][name]
        (dest / "idmap.json").write_text(json.dumps({"union_id_to_member_id": perm}) + "\n", encoding="utf-8")
        written[name] = {"path": f"members/{name}", "source": str(model.path), "rows": int(embed.shape[0])}
    return {"size": state.union["size"], **state.union["summary"], "members": written}


def _refine(state: State, ctx: Context, recipe: Recipe, model, tmp: Path, specs: list[dict], embed, head, updates,
            progress: bool) -> dict:
    """init.refine: optimise the new rows of the written folder `tmp` against the base (tokbench.embeddings.refine),
    write them back when the held-out slice says they improved, and return the record."""
    from tokbench.embeddings.refine import refine_rows

    spec = state.refine["spec"]
    ids = [i for i, s in enumerate(specs) if s.get("refine")]
    text = "\n".join(ctx.corpus(spec.text, f"{state.refine['where']}.text"))[:spec.max_chars]
    t0 = time.perf_counter()
    res = refine_rows(ctx.base_dir, tmp, ids, text, seconds=spec.seconds, steps=spec.steps, lr=spec.lr,
                      batch=spec.batch, window=spec.window, loss=spec.loss, seed=recipe.seed, progress=progress)
    rows = np.asarray(ids, dtype=np.int64)
    embed[rows] = res.rows
    if head is not None:
        head[rows] = res.head_rows if res.head_rows is not None else res.rows
    if res.record.get("returned") == "refined":
        write_model_folder(model, tmp, embed, head, updates, progress=progress)
    return {"text": spec.text, "chars": len(text), "rows": len(ids), "seconds_total": round(time.perf_counter() - t0, 2),
            **res.record}


def _new_ids(state: State) -> dict[int, int]:
    return {i: n for n, i in enumerate(state.live())}


def summary(state: State, model) -> dict:
    live = [state.slots[i] for i in state.live()]
    tokens = sum(1 for s in live if s.content is not None)
    return {"base_ids": model.vocab_rows, "tokens": tokens, "rows": len(live), "padding_rows": len(live) - tokens,
            "added": sum(1 for s in live if s.old is None and s.content is not None),
            "removed": sum(1 for s in state.slots if s.removed), "tied": model.tied, "hidden": model.hidden,
            "dtype": model.dtype, "ops": state.plan}


def _map_id(v, old_to_new: dict[int, int]):
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return old_to_new.get(v)
    if isinstance(v, list):
        out = [_map_id(x, old_to_new) for x in v]
        return [x for x in out if x is not None]
    return v


def _config_files(state: State, new_ids: dict[int, int]) -> tuple[dict, dict | None, dict]:
    """(config.json updates, generation_config.json, role -> new id)."""
    old_to_new = {s.old: new_ids[i] for i, s in enumerate(state.slots) if not s.removed and s.old is not None}
    content_id = {state.slots[i].content: n for i, n in new_ids.items() if state.slots[i].content is not None}
    role_ids = {r: content_id.get(t) if t else None for r, t in state.roles.items()}
    for role, t in state.roles.items():
        if t and role_ids[role] is None:
            raise TokbenchError(f"the {role} token {t!r} is not in the output vocabulary",
                                fix=f"keep it or set special_tokens.roles.{role}")
    updates: dict = {}
    roles_set = "roles" in state.touched or any(p["name"] == "special_tokens" and p.get("roles") for p in state.plan)
    for role, key in ROLE_KEYS.items():
        if key in state.config:
            updates[key] = _map_id(state.config[key], old_to_new)
        if roles_set and role in role_ids and (key in state.config or role_ids[role] is not None):
            updates[key] = role_ids[role]
    gen = None
    if state.gen is not None or roles_set or state.suppress_pads:
        gen = json.loads(json.dumps(state.gen)) if state.gen is not None else {}
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            if key in gen:
                gen[key] = _map_id(gen[key], old_to_new)
        for key in ("suppress_tokens", "begin_suppress_tokens", "forced_eos_token_id"):
            if key in gen:
                gen[key] = _map_id(gen[key], old_to_new)
        if "bad_words_ids" in gen and isinstance(gen["bad_words_ids"], list):
            gen["bad_words_ids"] = [w for w in (_map_id(x, old_to_new) for x in gen["bad_words_ids"]) if w]
        if roles_set:
            for role in ("bos", "eos", "pad"):
                if role in role_ids and (f"{role}_token_id" in gen or role_ids[role] is not None):
                    gen[f"{role}_token_id"] = role_ids[role]
            eot = [content_id[t] for t in state.eot if t in content_id]
            if eot and role_ids.get("eos") is not None and eot[0] != role_ids["eos"]:
                gen["eos_token_id"] = [role_ids["eos"]] + eot
        if state.suppress_pads:
            pads = [new_ids[i] for i, s in enumerate(state.slots) if not s.removed and s.content is None]
            gen["suppress_tokens"] = sorted(set((gen.get("suppress_tokens") or []) + pads))
    return updates, gen, role_ids


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _write_tokenizer(state: State, tmp: Path, new_ids: dict[int, int]) -> None:
    base = state.tokenizer_dir or state.base_dir
    if "tokenizer.json" in state.touched:
        _write_json(tmp / "tokenizer.json", state.tokenizer_json(new_ids))
    else:
        shutil.copy2(base / "tokenizer.json", tmp / "tokenizer.json")
    tcfg = json.loads(json.dumps(state.tok_config)) if state.tok_config is not None else None
    cfg_touched = "tokenizer_config.json" in state.touched or "template" in state.touched
    if tcfg is not None and cfg_touched:
        for role in ("bos", "eos", "pad", "unk"):
            if role in state.roles:
                key = f"{role}_token"
                if isinstance(tcfg.get(key), dict):
                    tcfg[key]["content"] = state.roles[role]
                elif state.roles[role] is not None or key in tcfg:
                    tcfg[key] = state.roles[role]
        if "added_tokens_decoder" in tcfg:
            tcfg["added_tokens_decoder"] = {
                str(new_ids[i]): {"content": s.content, **{k: v for k, v in s.added.items()}}
                for i, s in enumerate(state.slots) if not s.removed and s.added is not None}
        if "template" in state.touched:
            if "tokenizer_config" in state.template_where:
                tcfg["chat_template"] = state.template
            else:
                tcfg.pop("chat_template", None)
        _write_json(tmp / "tokenizer_config.json", tcfg)
    elif tcfg is not None:
        shutil.copy2(base / "tokenizer_config.json", tmp / "tokenizer_config.json")
    if state.template is not None:
        if "template" not in state.touched:
            for name in ("chat_template.jinja", "chat_template.json"):
                if (base / name).is_file():
                    shutil.copy2(base / name, tmp / name)
        elif "jinja" in state.template_where:
            (tmp / "chat_template.jinja").write_text(state.template, encoding="utf-8")
    for name in _COPY_ALONG:
        if (base / name).is_file():
            if "tokenizer_config.json" in state.touched:
                _write_special_map(state, base / name, tmp / name)
            else:
                shutil.copy2(base / name, tmp / name)
    for lic in sorted(state.base_dir.glob("LICENSE*")) + sorted(state.base_dir.glob("NOTICE*")):
        if lic.is_file():
            shutil.copy2(lic, tmp / lic.name)


def _write_special_map(state: State, src: Path, dest: Path) -> None:
    data = json.loads(src.read_text(encoding="utf-8"))
    for role in ("bos", "eos", "pad", "unk"):
        key = f"{role}_token"
        if role in state.roles and key in data:
            if isinstance(data[key], dict):
                data[key]["content"] = state.roles[role]
            else:
                data[key] = state.roles[role]
    _write_json(dest, data)


def _idmap(state: State, new_ids: dict[int, int], records: list[dict]) -> list[dict]:
    out = []
    for i, n in sorted(new_ids.items(), key=lambda x: x[1]):
        s = state.slots[i]
        b = _text_of(state, s.content) if s.content is not None and s.added is None else None
        row = records[n]
        if s.added is not None and s.content is not None:
            b = s.content.encode("utf-8") if not s.special else None
        out.append({"id": n, "old_id": s.old, "token": s.content,
                    "bytes": b.hex() if b is not None else None, "special": s.special, "op": s.op, "row": row})
    return out


def _checks(state: State, tmp: Path, rows: int, ctx: Context, recipe: Recipe, base_template_renders,
            new_ids: dict[int, int]) -> dict:
    from tokenizers import Tokenizer

    out: dict = {}
    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
    size = tok.get_vocab_size(with_added_tokens=True)
    ids = list(tok.get_vocab(with_added_tokens=True).values())
    if ids and max(ids) >= rows:
        raise TokbenchError(f"output tokenizer has id {max(ids)} >= {rows} rows (internal error)", path=tmp,
                            fix="report this recipe as a bug")
    out["ids_below_vocab_size"] = True
    out["tokenizer_size"] = size
    texts = {"sample": "Hello world! Ünïcödé — 早上好 12345 def f(x):\n\treturn x  \n"}
    for name in recipe.checks.get("roundtrip", []):
        texts[name] = "\n".join(ctx.corpus(name, "checks.roundtrip"))
    rt = {}
    for name, text in texts.items():
        enc = tok.encode(text, add_special_tokens=False)
        ok = tok.decode(enc.ids, skip_special_tokens=False) == text
        rt[name] = {"lossless": ok, "tokens": len(enc.ids)}
        if not ok:
            raise TokbenchError(f"round trip failed on {name}: decode(encode(text)) != text", path=tmp,
                                fix="report this recipe as a bug")
    out["roundtrip"] = rt
    if "merges" in state.touched and state.tokenizer_dir is None:
        out["reachability"] = _reachability(state, tok, new_ids)
    if state.template is not None:
        out["chat_template"] = _template_check(tmp, base_template_renders)
    return out


def _reachability(state: State, tok, new_ids: dict[int, int]) -> dict:
    """Every kept token the base could produce from its own text is still produced from it; and how many of
    the added tokens are."""
    from tokenizers import Tokenizer

    from tokbench.surgery.prune import reachable, token_texts

    base = Tokenizer.from_file(str(state.base_dir / "tokenizer.json"))
    to_bytes = lambda c: _text_of(state, c)  # noqa: E731
    base_vocab = {c: i for c, i in base.get_vocab(with_added_tokens=False).items()}
    added = {t.content for t in base.get_added_tokens_decoder().values()}
    base_items = [(i, t) for i, t in token_texts({c: i for c, i in base_vocab.items() if c not in added}, to_bytes)]
    base_ok = reachable(base, base_items)
    old_to_new = {s.old: new_ids[k] for k, s in enumerate(state.slots) if not s.removed and s.old is not None
                  and s.content is not None}
    kept = [(old_to_new[i], t) for i, t in base_items if i in base_ok and i in old_to_new]
    kept_ok = reachable(tok, kept)
    lost = [t for i, t in kept if i not in kept_ok]
    new_items = token_texts({s.content: new_ids[k] for k, s in enumerate(state.slots)
                             if not s.removed and s.old is None and s.content is not None and s.added is None}, to_bytes)
    new_ok = reachable(tok, new_items)
    if lost:
        raise TokbenchError(f"{len(lost)} kept tokens the base could produce are no longer reachable (e.g. {lost[0]!r})",
                            fix="report this recipe as a bug")
    return {"base_reachable_kept": len(kept), "still_reachable": len(kept_ok), "unreachable": len(lost),
            "added_normal_tokens": len(new_items), "added_reachable": len(new_ok)}


def _render_all(folder: Path) -> list[str] | None:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if not getattr(tok, "chat_template", None):
        return None
    return [tok.apply_chat_template(c, tokenize=False) for c in _SAMPLE_CONVERSATIONS]


def _template_check(tmp: Path, base: list[str] | None) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp), local_files_only=True)
    rendered = [tok.apply_chat_template(c, tokenize=False) for c in _SAMPLE_CONVERSATIONS]
    ids = [tok.apply_chat_template(c, tokenize=True) for c in _SAMPLE_CONVERSATIONS]
    return {"conversations": len(rendered), "rendered": True,
            "unchanged_from_base": (base == rendered) if base is not None else None,
            "tokens": [len(x["input_ids"] if hasattr(x, "keys") else x) for x in ids]}


def run(recipe: Recipe | str | Path | dict, out: str | Path | None = None, *, dry_run: bool = False,
        overwrite: bool = False, progress: bool = True, cache_dir: str | Path | None = None) -> dict:
    """Apply `recipe` (a Recipe, a YAML file path or a mapping) and write the model to `out`.

    Returns the report (with `seconds` and `out`, which the written surgery_report.json leaves out so that
    the same recipe and seed give byte-identical output). dry_run: the plan only, nothing written.
    cache_dir: where omp / tokenadapt cache the auxiliary embeddings of the base's tokens (the CLI uses
    $TOKBENCH_HOME/cache; None: no cache)."""
    t0 = time.perf_counter()
    raw = None
    if isinstance(recipe, (str, Path)):
        recipe, raw = load_recipe(recipe)
    elif isinstance(recipe, dict):
        import yaml

        raw = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
        recipe = parse_recipe(recipe)
    if raw is None:
        import yaml

        raw = yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True, exclude_defaults=True), sort_keys=False,
                             allow_unicode=True)
    state, ctx, model = plan(recipe, progress=progress)
    report: dict = {"base": str(recipe.base), "seed": recipe.seed, "plan": summary(state, model)}
    if dry_run:
        report["dry_run"] = True
        report["seconds"] = {"plan": round(time.perf_counter() - t0, 2)}
        return report
    if out is None:
        raise TokbenchError("no output folder", fix="pass -o OUT (or --dry-run)")
    inputs = [ctx.base_dir] + [ctx.model_dir(m, f"models.{m}") for m in recipe.models]
    final, tmp = prepare_output(out, overwrite, inputs)
    try:
        base_renders = _render_all(ctx.base_dir) if state.template is not None else None
        t1 = time.perf_counter()
        new_ids = _new_ids(state)
        order = sorted(new_ids, key=new_ids.get)
        specs = [state.slots[i].row for i in order]
        real = np.array([s.old for s in state.slots if s.old is not None and s.content is not None
                         and s.row.get("method") == "keep"], dtype=np.int64)
        hidden = None
        if state.hidden_text is not None:
            from tokbench.surgery.rows import mean_hidden

            hidden = mean_hidden(ctx.base_dir, state.hidden_text)
        base_embed = model.read_embedding()
        base_head = None if model.tied else model.read_head()
        members = _union_members(state, model, base_embed, base_head) if state.union else None
        if members:
            weights = state.union.get("weights") if state.union.get("emit") == "merged" else {"base": 1.0}
            total = sum(weights.values())
            embed = sum((w / total) * _union_rows(state, n, members["embeds"], specs, recipe.seed,
                                                  hidden if model.tied else None) for n, w in weights.items())
            head = None if model.tied else sum(
                (w / total) * _union_rows(state, n, members["heads"], specs, recipe.seed + 1, hidden)
                for n, w in weights.items())
            row_info = {"methods": {"union": len(specs)}, "norm_capped": 0}
            if state.union.get("emit") == "merged":
                row_info["merged_weights"] = {n: round(w / total, 6) for n, w in weights.items()}
            records = [{"method": s["method"], **({"source": s["source"]} if "source" in s else {})} for s in specs]
        else:
            aux = aux_for(ctx.base_vocab, specs, progress, cache_dir=cache_dir)
            embed, row_info, records = build_rows(specs, base_embed, real, recipe.seed,
                                                  hidden=hidden if model.tied else None, aux=aux)
            head = None
            if not model.tied:
                head, head_info, _ = build_rows(specs, base_head, real, recipe.seed + 1, hidden=hidden, aux=aux)
                row_info["head_norm_capped"] = head_info["norm_capped"]
        updates, gen, role_ids = _config_files(state, new_ids)
        write_model_folder(model, tmp, embed, head, updates, progress=progress)
        if gen is not None:
            _write_json(tmp / "generation_config.json", gen)
        _write_tokenizer(state, tmp, new_ids)
        if members and state.union.get("emit") == "merged":
            report["union"] = {"size": state.union["size"], **state.union["summary"], "emit": "merged",
                               "weights": row_info["merged_weights"]}
        elif members:
            report["union"] = _write_members(state, members, specs, recipe.seed, hidden, tmp, updates, gen)
        if state.refine is not None:
            report["refine"] = _refine(state, ctx, recipe, model, tmp, specs, embed, head, updates, progress)
        if state.cast is not None:
            from tokbench.surgery.dtype import cast_folder

            report["dtype"] = cast_folder(tmp, state.cast["to"],
                                          None if state.cast["names"] is None else set(state.cast["names"]))
        idmap = _idmap(state, new_ids, records)
        with open(tmp / "idmap.json", "w", encoding="utf-8") as f:
            f.write('{"tokens": [\n' + ",\n".join(json.dumps(r, ensure_ascii=False) for r in idmap) + "\n]}\n")
        (tmp / "recipe.yml").write_text(raw, encoding="utf-8")
        report["rows"] = row_info
        if state.undertrained is not None:
            report["undertrained"] = state.undertrained
        report["config_ids"] = updates
        report["roles"] = {r: {"token": state.roles.get(r), "id": role_ids.get(r)} for r in sorted(role_ids)}
        if gen is not None:
            report["generation_config"] = {k: gen[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                                           if k in gen}
            if "suppress_tokens" in gen:
                report["generation_config"]["suppress_tokens"] = len(gen["suppress_tokens"])
        t2 = time.perf_counter()
        report["checks"] = _checks(state, tmp, embed.shape[0], ctx, recipe, base_renders, new_ids)
        _write_json(tmp / "surgery_report.json", report)
        commit_output(tmp, final, command="surgery")
        report["seconds"] = {"plan": round(t1 - t0, 2), "write": round(t2 - t1, 2),
                             "checks": round(time.perf_counter() - t2, 2),
                             "total": round(time.perf_counter() - t0, 2)}
    except BaseException:
        discard_output(tmp)
        raise
    report["out"] = str(final)
    return report
