"""`transplant()`: put a pretrained causal LM on a new tokenizer without training.

Shared tokens keep their rows, specials are mapped by role (then by identical content), every other new
token gets a row from the chosen method (the initialisers live in `tokbench.embeddings`; this module only
orchestrates: alignment, donor and auxiliary spaces, the numbers policy, files and the report):

- omp: each new token is coded as a sparse combination of anchor tokens (shared between base and target)
  in a donor's embedding space (or, without a donor, in the auxiliary embedder's space); the codes are
  applied to the base's rows. k and the ridge are chosen by held-out reconstruction of anchors (centred
  cosine), the result is blended with the subword mean and never gets a larger norm than the typical
  shared row. Input embedding and untied head are solved separately, each against its own donor matrix.
- tokenadapt: local estimate (decomposition pieces weighted by length and auxiliary-space similarity,
  softmax with a temperature) mixed with a global estimate (FAISS top-k old tokens in the auxiliary space).
- subword (mean of the decomposition rows), mean, zero, random (per-dimension mean/std of shared rows).

Numeric tokens use the decomposition when the two tokenizers split digits differently, except in OMP with a
donor: the donor has rows for the target's numeric tokens, so they are coded like the others.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from tokbench import limits
from tokbench.errors import TokbenchError
from tokbench.embeddings import (NewTokens, RowStats, assemble, aux_space, donor_space, fill_row, make_rows,
                                 table_space)
from tokbench.extras import need
from tokbench.vocab import Kind, align, load_vocabulary
from tokbench.outputs import atomic_write, commit_output, discard_output, prepare_output
from tokbench.transplant.chat import finish_chat
from tokbench.vocab.model_io import open_model_folder, write_model_folder

METHODS = ("omp", "tokenadapt", "subword", "mean", "zero", "random")
NUMBER_POLICIES = ("auto", "decomposition", "method")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt",
                   "added_tokens.json")
_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")
_ROLE_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "pad_token_id", "unk": "unk_token_id"}


def _resolve(name_or_path, kind: str | None) -> Path:
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    from tokbench.assets import resolve

    return Path(resolve(str(name_or_path), kind=kind))


def _input_path(name_or_path, kind: str | None) -> Path | None:
    """The file or folder an optional input names (None when absent or not resolvable here: its own
    loader reports that)."""
    if name_or_path is None:
        return None
    try:
        return _resolve(name_or_path, kind)
    except TokbenchError:
        return None


def _model_dir(name_or_path, what: str) -> Path:
    p = _resolve(name_or_path, "model")
    if p.is_file():
        p = p.parent
    return p


def _check_rows(vocab, rows: int, folder: Path, what: str) -> None:
    if len(vocab) > rows:
        raise TokbenchError(f"the {what}'s tokenizer has {len(vocab):,} ids but its embedding only {rows:,} rows",
                            path=vocab.source,
                            fix=f"pass the tokenizer that belongs to the {what} model in {folder}")


class _Context:
    """What every method needs: alignment, base rows of one matrix, shared ids, statistics of the shared rows."""

    def __init__(self, al, rows: np.ndarray):
        self.al = al
        self.rows = rows
        self.shared_new = np.array(sorted(al.shared), dtype=np.int64)
        self.shared_old = np.array([al.shared[i] for i in self.shared_new], dtype=np.int64)
        self.stats = RowStats.of(rows, self.shared_old)


# --- the transplant ---------------------------------------------------------------------------------
def transplant(base, tokenizer, out, *, donor=None, method: str = "omp", aux_embedder=None, k: int | None = None,
               ridge: float | None = None, blend: float = 0.5, global_weight: float = 0.3, temperature: float = 0.3,
               top_k: int = 8, eval_text=None, eval_max_chars: int | None = None, overwrite: bool = False,
               seed: int = 0, device: str | None = None, cache_dir=None, progress: bool = True,
               numbers: str = "auto", refine: float | None = None, refine_steps: int | None = None,
               refine_text=None, refine_max_chars: int | None = 400_000, refine_options: dict | None = None) -> dict:
    """Write a copy of the causal LM `base` that speaks `tokenizer` into the folder `out`; return the report.

    base / donor: model folders or model asset names; tokenizer: a tokenizer file, folder or asset name
    (a model folder's tokenizer works too). method: one of METHODS. k / ridge: OMP sparsity and ridge
    (chosen by held-out reconstruction when None). blend: weight of the subword mean in the OMP rows.
    global_weight, temperature, top_k: TokenAdapt's mix weight, softmax temperature, FAISS neighbours.
    eval_text: a text file or corpus asset; bits/byte of base and output are measured on its first
    eval_max_chars characters. cache_dir: where base bits/byte and auxiliary embeddings are cached.
    numbers: how new numeric tokens are made when the two tokenizers split digits differently:
    "decomposition" (mean of the base's pieces), "method" (like every other new token), "auto" (method for
    omp with a donor, whose rows know the target's numeric tokens; decomposition otherwise).
    refine / refine_steps: after the initialisation, optimise only the new rows for at most this many seconds
    / steps (`tokbench.embeddings.refine_rows`: by default the new model's next-token loss, its body frozen;
    loss "distill" / "distill_ntp" compare it with the base model) on the first refine_max_chars characters of refine_text
    (a text file or corpus asset; its last tenth is held out for early stopping; several corpora separated by
    commas are one domain each, refine_max_chars split evenly, and no domain's held-out slice may get worse);
    refine_options: further arguments of `tokbench.embeddings.refine_rows` (lr, batch, window, loss, ...).
    The report's "refine" entry holds the record (steps, seconds, held-out curve).
    """
    if method not in METHODS:
        raise TokbenchError(f"unknown method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if numbers not in NUMBER_POLICIES:
        raise TokbenchError(f"unknown numbers policy {numbers!r}", fix=f"use one of {', '.join(NUMBER_POLICIES)}")
    _check_arguments(method=method, donor=donor, k=k, ridge=ridge, blend=blend, global_weight=global_weight,
                     temperature=temperature, top_k=top_k, eval_text=eval_text, eval_max_chars=eval_max_chars)
    refining = refine is not None or refine_steps is not None
    if refining:
        _check_refine(refine, refine_steps, refine_text, refine_max_chars, refine_options)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    base_dir = _model_dir(base, "base")
    model = open_model_folder(base_dir)
    tok_path = _resolve(tokenizer, None)
    donor_dir = _model_dir(donor, "donor") if donor is not None else None
    inputs = [base_dir, tok_path, donor_dir, _input_path(eval_text, "corpus"), _input_path(aux_embedder, None),
              _input_path(refine_text, "corpus")]
    final, tmp = prepare_output(out, overwrite, [p for p in inputs if p is not None])
    try:
        report = _run(model, base_dir, tok_path, donor_dir, tmp, final, method=method, aux_embedder=aux_embedder,
                      k=k, ridge=ridge, blend=blend, global_weight=global_weight, temperature=temperature,
                      top_k=top_k, eval_text=eval_text, eval_max_chars=eval_max_chars, seed=seed, device=device, numbers=numbers,
                      cache_dir=cache_dir, progress=progress, timings=timings,
                      refine=(dict(seconds=refine, steps=refine_steps, text=refine_text, max_chars=refine_max_chars,
                                   options=dict(refine_options or {})) if refining else None))
        timings["total"] = round(time.perf_counter() - t_start, 2)
        report["seconds"] = timings
        with open(tmp / "transplant_report.json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
            f.write("\n")
        _write_card(tmp, report)
        commit_output(tmp, final, command="transplant")
    except BaseException:
        discard_output(tmp)
        raise
    return report


def _check_arguments(*, method, donor, k, ridge, blend, global_weight, temperature, top_k, eval_text,
                     eval_max_chars) -> None:
    """Refuse out-of-range values and name a missing optional dependency before any work."""
    limits.optional("k", k, 1, what="OMP sparsity")
    limits.at_least("top_k", top_k, 1, what="TokenAdapt neighbours")
    limits.optional("eval_max_chars", eval_max_chars, 1)
    if ridge is not None:
        limits.real("ridge", ridge, 0)
    limits.real("blend", blend, 0, 1)
    limits.real("global_weight", global_weight, 0, 1)
    limits.real("temperature", temperature, 0, lo_open=True)
    modules = []
    if method == "tokenadapt" or (method == "omp" and donor is None):
        modules += ["torch", "transformers"]  # the auxiliary text embedder
    if method == "tokenadapt":
        modules.append("faiss")
    if eval_text is not None:
        modules += ["torch", "transformers"]
    need(*dict.fromkeys(modules), what=f"tokbench transplant --method {method}" +
         (" --eval" if eval_text is not None else ""))


def _refine_domains(text) -> list[str]:
    """A refinement text names one file or corpus, or several corpora separated by commas (one domain each)."""
    if Path(str(text)).is_file() or "," not in str(text):
        return [str(text)]
    names = [n.strip() for n in str(text).split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise TokbenchError(f"refinement text {text!r}: empty or repeated corpus name",
                            fix="name each corpus once, e.g. --refine-text wikitext2-valid,gsm8k-train")
    return names


def _check_refine(seconds, steps, text, max_chars, options) -> None:
    from tokbench.embeddings.refine import check_refine_args

    if text is None:
        raise TokbenchError("refinement needs a text", fix="pass --refine-text FILE_OR_CORPUS (refine_text=)")
    limits.optional("refine_max_chars", max_chars, 1000)
    opts = dict(options or {})
    known = ("lr", "warmup", "batch", "window", "held_out", "eval_every", "patience", "loss", "rows", "head_steps",
             "shared", "precision")
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise TokbenchError(f"unknown refinement option {unknown[0]!r}", fix=f"use one of {', '.join(known)}")
    _refine_domains(text)
    check_refine_args(seconds, steps, **opts)
    need("torch", "transformers", what="tokbench transplant --refine")


def _run(model, base_dir: Path, tok_path: Path, donor_dir: Path | None, tmp: Path, final: Path, *, method, aux_embedder,
         k, ridge, blend, global_weight, temperature, top_k, eval_text, eval_max_chars, seed, device, cache_dir,
         progress, timings, numbers="auto", refine: dict | None = None) -> dict:
    t0 = time.perf_counter()
    base_vocab = load_vocabulary(base_dir)
    _check_rows(base_vocab, model.vocab_rows, base_dir, "base")
    target = load_vocabulary(tok_path)
    tok_files = _tokenizer_files(tok_path, target.format == "tekken")
    al = align(base_vocab, target)
    timings["align"] = round(time.perf_counter() - t0, 2)

    # Each matrix (and its donor matrix) is read when its role is solved and dropped after: at 7B scale one
    # base table is 2.1 GB in float32, so holding embedding + head + both donor tables at once doubled the peak.
    roles = ("embed",) if model.tied else ("embed", "head")
    timings["read"] = 0.0

    donor_info = None
    donor_readers: dict = {}
    donor_map: dict[int, int] = {}
    if donor_dir is not None and method == "omp":
        t0 = time.perf_counter()
        dmodel = open_model_folder(donor_dir)
        dvocab = load_vocabulary(donor_dir)
        _check_rows(dvocab, dmodel.vocab_rows, donor_dir, "donor")
        if dvocab.token_bytes == target.token_bytes and dvocab.kinds == target.kinds:
            donor_map = {i: i for i in range(len(target))}
            donor_same = True
        else:
            dal = align(dvocab, target)
            donor_map = dict(dal.shared)
            donor_same = False
        donor_readers = {"embed": dmodel.read_embedding, "head": dmodel.read_head}
        donor_info = {"path": str(donor_dir), "rows": dmodel.vocab_rows, "hidden": dmodel.hidden, "tied": dmodel.tied,
                      "tokenizer_is_target": donor_same, "target_ids_with_donor_rows": len(donor_map)}
        timings["donor"] = round(time.perf_counter() - t0, 2)
    elif donor_dir is not None:
        donor_info = {"path": str(donor_dir), "used": False, "note": f"method {method} does not use a donor"}

    new_ids = list(al.new_only)
    numeric = set(al.numeric_new) if al.numbers_differ else set()
    if numbers == "method" or (numbers == "auto" and method == "omp" and donor_dir is not None):
        # The donor was trained with the target's own numeric tokens ("Ġ1", "00", ...), so its rows place them
        # among the anchors (the single digits and the words around numbers) and OMP codes carry that over.
        # The decomposition mean (e.g. mean("▁", "1") for "Ġ1") only stands in when no space knows the token
        # (TokenAdapt's and the no-donor OMP's auxiliary text embedder). Measured on tbd-mistral-d128 -> gpt2
        # (1,681 numeric new tokens): bits/byte ratio 1.4106 with the decomposition, 1.3632 coded by OMP;
        # SmolLM2-135M -> gpt2: 1.213 -> 1.138 (wikitext2-test, 120,000 chars; reports/transplant.md).
        numeric = set()
    aux = None
    if method == "tokenadapt" or (method == "omp" and donor_dir is None):
        t0 = time.perf_counter()
        aux = aux_space(base_vocab, target, sorted(set(al.new_only) | set(al.shared)), aux_embedder, device=device,
                        cache_dir=cache_dir, progress=progress)
        timings["aux_embeddings"] = round(time.perf_counter() - t0, 2)

    params: dict = {}
    held_out: dict = {}
    norm_capped: dict = {}
    new_matrices: dict[str, np.ndarray] = {}
    req = NewTokens.from_alignment(al, new_ids, subword_only=numeric)
    t0 = time.perf_counter()
    for role in roles:
        t_read = time.perf_counter()
        rows = model.read_embedding() if role == "embed" else model.read_head()
        timings["read"] = round(timings["read"] + time.perf_counter() - t_read, 2)
        ctx = _Context(al, rows)
        space = None
        if method == "omp":
            space = (donor_space(donor_readers[role](), donor_map) if donor_dir is not None
                     else table_space(aux.new_vecs, aux.new_pos))
        res = make_rows(method, rows, req, stats=ctx.stats, seed=seed, space=space,
                        anchors=(ctx.shared_new, ctx.shared_old), k=k, ridge=ridge, blend=blend, aux=aux,
                        global_weight=global_weight, temperature=temperature, top_k=top_k, device=device,
                        progress=progress)
        params[role] = res.params
        if res.held_out:
            held_out[role] = res.held_out
        norm_capped[role] = res.norm_capped
        new_matrices[role] = _assemble(ctx, target, new_ids, res.rows, method)
        del rows, ctx, space, res
    timings["method"] = round(time.perf_counter() - t0 - timings["read"], 2)

    t0 = time.perf_counter()
    updates, special_rows = _config_ids(al, base_vocab, target, model.config)
    write_model_folder(model, tmp, new_matrices["embed"], new_matrices.get("head"), updates, progress=progress)
    _write_generation_config(base_dir, tmp, updates)
    for src, name in tok_files:
        shutil.copyfile(src, tmp / name)
    if target.format == "tekken" and not (tmp / "tokenizer.json").exists():
        from tokbench.vocab.tekken import tekken_tokenizer_json  # same ids, for transformers

        (tmp / "tokenizer.json").write_text(json.dumps(tekken_tokenizer_json(Path(target.source)),
                                                       ensure_ascii=False), encoding="utf-8")
    if not any(name == "tokenizer_config.json" for _, name in tok_files):
        _write_tokenizer_config(tmp, target)
    _causal_model_inputs(tmp, next((src for src, name in tok_files if name == "tokenizer_config.json"), tok_path))
    chat = finish_chat(tmp, base_dir, base_vocab, target, updates)
    for lic in sorted(base_dir.glob("LICENSE*")) + sorted(base_dir.glob("NOTICE*")):
        if lic.is_file():
            shutil.copyfile(lic, tmp / lic.name)
    timings["write"] = round(time.perf_counter() - t0, 2)
    refine_record = None
    if refine is not None and new_ids:
        from tokbench.embeddings import refine_rows
        from tokbench.eval import load_eval_text

        t0 = time.perf_counter()
        names = _refine_domains(refine["text"])
        if len(names) == 1:
            text, label = load_eval_text(names[0], refine["max_chars"])
        else:  # one domain per corpus, each with its own held-out slice and never-worse check
            share = None if refine["max_chars"] is None else refine["max_chars"] // len(names)
            text = {n: load_eval_text(n, share)[0] for n in names}
            label = ",".join(names)
        res = refine_rows(base_dir, tmp, new_ids, text, seconds=refine["seconds"], steps=refine["steps"], seed=seed,
                          device=device, progress=progress, **refine["options"])
        ids = np.array(new_ids, dtype=np.int64)
        new_matrices["embed"][ids] = res.rows
        if "head" in new_matrices:
            new_matrices["head"][ids] = res.head_rows if res.head_rows is not None else res.rows
        if res.record["returned"] == "refined":
            write_model_folder(model, tmp, new_matrices["embed"], new_matrices.get("head"), updates, progress=progress)
        refine_record = {"text": label, "chars": len(text) if isinstance(text, str) else sum(map(len, text.values())),
                         **res.record}
        if eval_text is not None and str(eval_text) == str(refine["text"]):
            refine_record["note"] = "the evaluation text is the refinement text: the eval figure is not held out"
        timings["refine"] = round(time.perf_counter() - t0, 2)

    report = {
        "base": str(base_dir), "tokenizer": str(tok_path), "out": str(final), "method": method,
        "donor": donor_info,
        "aux_embedder": (str(aux.path) if aux else None),
        "model": {"embedding": model.embed_name, "head": model.head_name, "tied": model.tied, "dtype": model.dtype,
                  "hidden": model.hidden, "base_rows": model.vocab_rows, "new_rows": len(target),
                  "shards": len(model.shards)},
        "counts": {
            "target_size": len(target), "base_size": len(base_vocab), "shared": len(al.shared),
            "new": len(new_ids), "special": sum(1 for kd in target.kinds if kd in (Kind.SPECIAL, Kind.CONTROL)),
            "special_mapped": sum(1 for v in special_rows.values() if v is not None),
            "numeric_new": len(al.numeric_new), "numeric_by_decomposition": len(numeric),
            "uncovered": len(al.uncovered), "unused": sum(1 for kd in target.kinds if kd == Kind.UNUSED),
        },
        "numbers": {"base": al.old_numbers.to_dict(), "target": al.new_numbers.to_dict(), "differ": al.numbers_differ,
                    "policy": numbers,
                    "note": (("digit splitting differs: numeric new tokens use the decomposition" if numeric
                              else f"digit splitting differs: numeric new tokens are coded like the others ({method})")
                             if al.numbers_differ else "same digit splitting")},
        "specials": {target.tokens[i] or str(i): {"new": i, "old": o,
                                                   "old_token": (base_vocab.tokens[o] if o is not None else None)}
                     for i, o in special_rows.items()},
        "config_ids": updates,
        "chat_template": chat,
        "parameters": params,
        "held_out_reconstruction": held_out,
        "norm_capped": norm_capped,
    }
    if refine_record is not None:
        report["refine"] = refine_record
    if eval_text is not None:
        from tokbench.eval import bits_per_byte, load_eval_text

        t0 = time.perf_counter()
        text, label = load_eval_text(eval_text, eval_max_chars)
        before = bits_per_byte(base_dir, text, cache_dir=cache_dir, device=device, progress=progress)
        after = bits_per_byte(tmp, text, device=device, progress=progress)
        after["model"] = str(final)
        report["eval"] = {"text": label, "chars": len(text), "before": before, "after": after,
                          "ratio": after["bits_per_byte"] / before["bits_per_byte"]}
        timings["eval"] = round(time.perf_counter() - t0, 2)
    return report


# --- assembling, specials, files ----------------------------------------------------------------------
def _special_rows(al, base_vocab, target) -> dict[int, int | None]:
    """new special/control id -> old id whose row it takes (by role, else identical content), or None."""
    out: dict[int, int | None] = {}
    for role, (i, o) in al.roles.items():
        out[i] = o if o is not None else base_vocab.special_contents.get(target.tokens[i] or "")
    for i, o in al.special_map.items():
        out.setdefault(i, o)
    return out


def _assemble(ctx: _Context, target, new_ids, est, method: str) -> np.ndarray:
    """The full table: fill row, shared rows copied, new rows, then specials copied from their base rows."""
    specials = [(i, o) for i, o in _special_rows(ctx.al, ctx.al.old, target).items()
                if o is not None and o < ctx.rows.shape[0]]
    return assemble(len(target), fill_row(method, ctx.stats, ctx.rows.shape[1]), [
        (ctx.shared_new, (ctx.rows, ctx.shared_old)),
        (np.array(new_ids, dtype=np.int64), est),
        (np.array([i for i, _ in specials], dtype=np.int64), ctx.rows[[o for _, o in specials]]),
    ])


def _config_ids(al, base_vocab, target, config: dict) -> tuple[dict, dict]:
    special_rows = _special_rows(al, base_vocab, target)
    updates: dict = {}
    base_roles = base_vocab.specials
    for role, key in _ROLE_KEYS.items():
        if role in target.specials:
            updates[key] = target.specials[role]
        elif role in base_roles:
            # a role the target lacks: keep it only if the base used the same token for a role the target has
            same = [r for r, j in base_roles.items() if j == base_roles[role] and r != role and r in target.specials]
            updates[key] = target.specials[same[0]] if same else None
    for key in _ROLE_KEYS.values():
        if key not in updates and key in config:
            updates[key] = None
    return updates, special_rows


def _write_generation_config(base_dir: Path, tmp: Path, updates: dict) -> None:
    src = base_dir / "generation_config.json"
    if not src.is_file():
        return
    with open(src, encoding="utf-8") as f:
        gen = json.load(f)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if key in gen:
            gen[key] = updates.get(key)
    for key, v in updates.items():
        if key != "unk_token_id" and key not in gen and v is not None:
            gen[key] = v
    with open(tmp / "generation_config.json", "w", encoding="utf-8") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")


def _tokenizer_files(tok_path: Path, tekken: bool = False) -> list[tuple[Path, str]]:
    """(source, name in OUT) of the target's tokenizer files; a bare tokenizer.json takes its side files.
    A tekken.json is copied as it is (a tokenizer.json with the same ids is written beside it)."""
    if tok_path.is_dir():
        files = [(tok_path / n, n) for n in TOKENIZER_FILES if (tok_path / n).is_file()]
        files += [(f, f.name) for f in sorted(tok_path.glob("tekken*.json")) if tekken and f.is_file()]
        if not tekken and not any(n in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
                                  for _, n in files):
            raise TokbenchError("no Hugging Face tokenizer files (tokenizer.json, tokenizer.model, vocab.json) to "
                                "write into the output", path=tok_path, fix="pass a folder or tokenizer.json "
                                "that transformers loads")
        return files
    if tok_path.suffix == ".json":
        files = [(tok_path, tok_path.name if tekken else "tokenizer.json")]
        files += [(tok_path.parent / n, n) for n in _SIDE_FILES if (tok_path.parent / n).is_file()]
        return files
    raise TokbenchError("the output model needs a tokenizer transformers can load; this file is not a tokenizer.json",
                        path=tok_path, fix="pass a tokenizer.json or a Hugging Face tokenizer folder as --tokenizer")


def _write_tokenizer_config(tmp: Path, target) -> None:
    cfg: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1000000000000000019884624838656,
                 "clean_up_tokenization_spaces": False}
    for role in ("bos", "eos", "pad", "unk"):
        i = target.specials.get(role)
        if i is not None and target.tokens[i] is not None:
            cfg[f"{role}_token"] = target.tokens[i]
    with open(tmp / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


CAUSAL_INPUTS = ["input_ids", "attention_mask"]


def _causal_model_inputs(tmp: Path, source: Path) -> None:
    """A causal LM's forward takes input_ids and attention_mask only: say so in the output's tokenizer_config.json,
    or a WordPiece (BERT-style) target tokenizer returns token_type_ids and `model.generate(**tok(text))` fails."""
    path = tmp / "tokenizer_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise TokbenchError(f"the target's tokenizer_config.json is not valid JSON ({e})", path=source,
                            fix="repair or remove that file") from None
    if cfg.get("model_input_names") == CAUSAL_INPUTS:
        return
    cfg["model_input_names"] = CAUSAL_INPUTS
    atomic_write(path, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _write_card(tmp: Path, report: dict) -> None:
    c = report["counts"]
    lines = [
        "---", "tags: [tokbench, tokenizer-transplant]", "---", "",
        f"# {Path(report['out']).name}", "",
        f"`{report['base']}` moved onto the tokenizer `{report['tokenizer']}` without training by "
        f"`tokbench transplant` (method `{report['method']}`).", "",
        "| | |", "|---|---|",
        f"| shared tokens (rows copied) | {c['shared']:,} |",
        f"| new tokens (rows estimated) | {c['new']:,} |",
        f"| special tokens | {c['special']:,} ({c['special_mapped']} mapped to base specials) |",
        f"| numeric new tokens | {c['numeric_new']:,} ({report['numbers']['note']}) |",
        f"| donor | {report['donor']['path'] if report['donor'] else 'none'} |",
        f"| tied embeddings | {report['model']['tied']} |",
        f"| chat template | {report['chat_template']['note']} |",
    ]
    for role, p in report["parameters"].items():
        if p:
            lines.append(f"| parameters ({role}) | {', '.join(f'{k}={v}' for k, v in p.items() if k != 'k_candidates')} |")
    ev = report.get("eval")
    if ev:
        lines.append(f"| bits/byte on {ev['text']} ({ev['chars']:,} chars) | before {ev['before']['bits_per_byte']:.4f}, "
                     f"after {ev['after']['bits_per_byte']:.4f} (ratio {ev['ratio']:.4f}) |")
    lines += ["", "New rows are estimates: fine-tune briefly on in-domain text for best results. "
              "Full details in `transplant_report.json`.", ""]
    (tmp / "README.md").write_text("\n".join(lines), encoding="utf-8")
