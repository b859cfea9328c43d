"""`transplant()`: put a pretrained causal LM on a new tokenizer without training.

Shared tokens keep their rows, specials are mapped by role (then by identical content), every other new
token gets a row from the chosen method:

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
from tokbench.extras import need
from tokbench.transplant.omp import apply_codes, batch_omp, candidate_ks, centred_cosine, choose_omp
from tokbench.vocab import Kind, align, load_vocabulary
from tokbench.vocab.model_io import commit_output, open_model_folder, prepare_output, write_model_folder

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


# --- estimates shared by the methods ------------------------------------------------------------------
def subword_rows(al, ids: list[int], rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    out = np.empty((len(ids), rows.shape[1]), dtype=np.float32)
    for r, i in enumerate(ids):
        pieces = al.decompositions.get(i) or []
        out[r] = rows[pieces].mean(axis=0) if pieces else fallback
    return out


def cap_norms(x: np.ndarray, cap: float) -> int:
    """Shrink rows longer than `cap` to `cap` (in place); never scale up. Returns how many were shrunk."""
    n = np.linalg.norm(x, axis=1)
    over = n > cap
    x[over] *= (cap / n[over])[:, None]
    return int(over.sum())


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class _Context:
    """What every method needs: alignment, base rows of one matrix, ids, caps."""

    def __init__(self, al, rows: np.ndarray, seed: int):
        self.al = al
        self.rows = rows
        self.shared_new = np.array(sorted(al.shared), dtype=np.int64)
        self.shared_old = np.array([al.shared[i] for i in self.shared_new], dtype=np.int64)
        shared_rows = rows[self.shared_old] if len(self.shared_old) else rows
        self.mean = shared_rows.mean(axis=0)
        self.std = shared_rows.std(axis=0)
        self.cap = float(np.median(np.linalg.norm(shared_rows, axis=1)))
        self.rng = np.random.default_rng(seed)


# --- the transplant ---------------------------------------------------------------------------------
def transplant(base, tokenizer, out, *, donor=None, method: str = "omp", aux_embedder=None, k: int | None = None,
               ridge: float | None = None, blend: float = 0.5, global_weight: float = 0.3, temperature: float = 0.3,
               top_k: int = 8, eval_text=None, eval_max_chars: int | None = None, overwrite: bool = False,
               seed: int = 0, device: str | None = None, cache_dir=None, progress: bool = True,
               numbers: str = "auto") -> dict:
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
    """
    if method not in METHODS:
        raise TokbenchError(f"unknown method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if numbers not in NUMBER_POLICIES:
        raise TokbenchError(f"unknown numbers policy {numbers!r}", fix=f"use one of {', '.join(NUMBER_POLICIES)}")
    _check_arguments(method=method, donor=donor, k=k, ridge=ridge, blend=blend, global_weight=global_weight,
                     temperature=temperature, top_k=top_k, eval_text=eval_text, eval_max_chars=eval_max_chars)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    base_dir = _model_dir(base, "base")
    model = open_model_folder(base_dir)
    tok_path = _resolve(tokenizer, None)
    donor_dir = _model_dir(donor, "donor") if donor is not None else None
    final, tmp = prepare_output(out, overwrite, [base_dir] + ([donor_dir] if donor_dir else []) +
                                ([tok_path] if tok_path.is_dir() else []))
    try:
        report = _run(model, base_dir, tok_path, donor_dir, tmp, final, method=method, aux_embedder=aux_embedder,
                      k=k, ridge=ridge, blend=blend, global_weight=global_weight, temperature=temperature,
                      top_k=top_k, eval_text=eval_text, eval_max_chars=eval_max_chars, seed=seed, device=device, numbers=numbers,
                      cache_dir=cache_dir, progress=progress, timings=timings)
        timings["total"] = round(time.perf_counter() - t_start, 2)
        report["seconds"] = timings
        with open(tmp / "transplant_report.json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
            f.write("\n")
        _write_card(tmp, report)
        commit_output(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def _run(model, base_dir: Path, tok_path: Path, donor_dir: Path | None, tmp: Path, final: Path, *, method, aux_embedder,
         k, ridge, blend, global_weight, temperature, top_k, eval_text, eval_max_chars, seed, device, cache_dir,
         progress, timings, numbers="auto") -> dict:
    t0 = time.perf_counter()
    base_vocab = load_vocabulary(base_dir)
    _check_rows(base_vocab, model.vocab_rows, base_dir, "base")
    target = load_vocabulary(tok_path)
    tok_files = _tokenizer_files(tok_path)
    al = align(base_vocab, target)
    timings["align"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    matrices = {"embed": model.read_embedding()}
    if not model.tied:
        matrices["head"] = model.read_head()
    timings["read"] = round(time.perf_counter() - t0, 2)

    donor_info = None
    donor_space: dict[str, np.ndarray] = {}
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
        donor_space["embed"] = dmodel.read_embedding()
        if not model.tied:
            donor_space["head"] = dmodel.read_head()
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
        aux = _aux_spaces(al, base_vocab, target, aux_embedder, device, cache_dir, progress)
        timings["aux_embeddings"] = round(time.perf_counter() - t0, 2)

    params: dict = {}
    held_out: dict = {}
    norm_capped: dict = {}
    new_matrices: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for role, rows in matrices.items():
        ctx = _Context(al, rows, seed)
        if method == "omp":
            if donor_dir is not None:
                space_of = _donor_lookup(donor_space[role], donor_map)
            else:
                space_of = _aux_lookup(aux)
            est, p, h, capped = _omp_rows(ctx, new_ids, numeric, space_of, k=k, ridge=ridge, blend=blend, seed=seed,
                                          device=device, progress=progress)
        elif method == "tokenadapt":
            est, p, h, capped = _tokenadapt_rows(ctx, new_ids, numeric, aux, global_weight=global_weight,
                                                 temperature=temperature, top_k=top_k, seed=seed)
        else:
            est, p, h, capped = _baseline_rows(ctx, new_ids, method)
        params[role] = p
        if h:
            held_out[role] = h
        norm_capped[role] = capped
        new_matrices[role] = _assemble(ctx, target, new_ids, est, method)
    timings["method"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    updates, special_rows = _config_ids(al, base_vocab, target, model.config)
    write_model_folder(model, tmp, new_matrices["embed"], new_matrices.get("head"), updates, progress=progress)
    _write_generation_config(base_dir, tmp, updates)
    for src, name in tok_files:
        shutil.copy2(src, tmp / name)
    if not any(name == "tokenizer_config.json" for _, name in tok_files):
        _write_tokenizer_config(tmp, target)
    for lic in sorted(base_dir.glob("LICENSE*")) + sorted(base_dir.glob("NOTICE*")):
        if lic.is_file():
            shutil.copy2(lic, tmp / lic.name)
    timings["write"] = round(time.perf_counter() - t0, 2)

    report = {
        "base": str(base_dir), "tokenizer": str(tok_path), "out": str(final), "method": method,
        "donor": donor_info,
        "aux_embedder": (str(aux["path"]) if aux else None),
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
        "parameters": params,
        "held_out_reconstruction": held_out,
        "norm_capped": norm_capped,
    }
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


# --- methods -----------------------------------------------------------------------------------------
def _baseline_rows(ctx: _Context, new_ids: list[int], method: str):
    n, d = len(new_ids), ctx.rows.shape[1]
    if method == "subword":
        est = subword_rows(ctx.al, new_ids, ctx.rows, ctx.mean)
    elif method == "mean":
        est = np.tile(ctx.mean, (n, 1))
    elif method == "zero":
        est = np.zeros((n, d), dtype=np.float32)
    else:  # random
        est = (ctx.mean + ctx.std * ctx.rng.standard_normal((n, d))).astype(np.float32)
    return est, {}, {}, 0


def _donor_lookup(space: np.ndarray, dmap: dict[int, int]):
    def lookup(target_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.array([int(t) in dmap and dmap[int(t)] < space.shape[0] for t in target_ids], dtype=bool)
        vecs = np.zeros((len(target_ids), space.shape[1]), dtype=np.float32)
        if ok.any():
            vecs[ok] = space[[dmap[int(t)] for t in target_ids[ok]]]
        return ok, vecs
    return lookup


def _aux_lookup(aux: dict):
    pos = aux["new_pos"]
    space = aux["new_vecs"]

    def lookup(target_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.array([int(t) in pos for t in target_ids], dtype=bool)
        vecs = np.zeros((len(target_ids), space.shape[1]), dtype=np.float32)
        if ok.any():
            vecs[ok] = space[[pos[int(t)] for t in target_ids[ok]]]
        return ok, vecs
    return lookup


def _omp_rows(ctx: _Context, new_ids, numeric, space_of, *, k, ridge, blend, seed, device, progress):
    ok, anchor_vecs = space_of(ctx.shared_new)
    anchors_new = ctx.shared_new[ok]
    anchors_old = ctx.shared_old[ok]
    X = anchor_vecs[ok]
    if len(X) < 2:
        raise TokbenchError("fewer than 2 anchor tokens (shared between base and target, with donor rows)",
                            fix="use a donor whose tokenizer overlaps the target, or --method tokenadapt")
    dim = X.shape[1]
    anchor_rows = ctx.rows[anchors_old]
    ks = [k] if k else candidate_ks(dim, len(X))
    ridges = [ridge] if ridge is not None else [0.1, 1.0]
    choice = choose_omp(X, anchor_rows, ks=ks, ridges=ridges, seed=seed, device=device, progress=progress)
    sub = subword_rows(ctx.al, new_ids, ctx.rows, ctx.mean)
    est = sub.copy()
    ids = np.array(new_ids, dtype=np.int64)
    has, Y = space_of(ids)
    use = has & np.array([i not in numeric for i in new_ids], dtype=bool)
    norms = np.linalg.norm(X, axis=1)
    norms[norms == 0] = 1.0
    if use.any():
        path = batch_omp(Y[use], X / norms[:, None], choice.k, choice.ridge, device=device, progress=progress,
                         desc=f"omp k={choice.k}")
        coef = path.coefs[choice.k] / norms[path.idx]
        omp = apply_codes(path.idx, coef, anchor_rows)
        # shrink towards the mean row by the held-out least-squares scale: with a weak donor (low held-out
        # cosine) a full-size OMP row is mostly noise, and in a tied model it becomes a loud output logit
        omp = ctx.mean + choice.shrink * (omp - ctx.mean)
        capped = cap_norms(omp, ctx.cap)
        est[use] = (1.0 - blend) * omp + blend * sub[use]
    else:
        capped = 0
    capped += cap_norms(est, ctx.cap)
    params = {"k": choice.k, "ridge": choice.ridge, "shrink": round(choice.shrink, 5), "blend_subword": blend, "anchors": int(len(X)),
              "space_dim": int(dim), "k_candidates": ks, "omp_tokens": int(use.sum()),
              "decomposition_tokens": int((~use).sum()), "norm_cap": round(ctx.cap, 5)}
    held = {"metric": "centred cosine of rebuilt held-out anchor rows (before blending)",
            "held_out": choice.held_out, "chosen": choice.scores[f"k={choice.k},ridge={choice.ridge}"],
            "scores": choice.scores}
    return est, params, held, capped


def _tokenadapt_rows(ctx: _Context, new_ids, numeric, aux, *, global_weight, temperature, top_k, seed):
    import faiss

    old_ids = aux["old_ids"]  # old ids with aux vectors (normal/byte tokens)
    old_vecs = aux["old_vecs"]
    old_pos = {int(j): r for r, j in enumerate(old_ids)}
    new_pos = aux["new_pos"]
    new_vecs = aux["new_vecs"]
    lens = aux["old_lens"]
    al = ctx.al
    index = faiss.IndexFlatIP(old_vecs.shape[1])
    index.add(np.ascontiguousarray(old_vecs, dtype=np.float32))
    ids = list(new_ids)
    q = np.stack([new_vecs[new_pos[i]] for i in ids]) if ids else np.zeros((0, old_vecs.shape[1]), np.float32)
    sims, nbrs = index.search(np.ascontiguousarray(q, dtype=np.float32), top_k) if ids else (None, None)
    est = np.empty((len(ids), ctx.rows.shape[1]), dtype=np.float32)
    for r, i in enumerate(ids):
        pieces = [p for p in (al.decompositions.get(i) or [])]
        if pieces:
            pv = np.stack([old_vecs[old_pos[p]] if p in old_pos else np.zeros(old_vecs.shape[1], np.float32)
                           for p in pieces])
            s = pv @ q[r]
            w = _softmax(s / temperature) * np.array([max(1, lens.get(p, 1)) for p in pieces], dtype=np.float64)
            w = w / w.sum()
            local = (w[:, None] * ctx.rows[pieces]).sum(0)
        else:
            local = ctx.mean
        if i in numeric:
            est[r] = ctx.rows[pieces].mean(0) if pieces else ctx.mean
            continue
        nb = nbrs[r]
        valid = nb >= 0
        if valid.any():
            g = _softmax(sims[r][valid] / temperature)
            glob = (g[:, None] * ctx.rows[old_ids[nb[valid]]]).sum(0)
            est[r] = (1 - global_weight) * local + global_weight * glob
        else:
            est[r] = local
    capped = cap_norms(est, ctx.cap)
    # held-out view of the global estimate: shared tokens rebuilt from their top-k other old tokens
    rng = np.random.default_rng(seed)
    held_n = int(min(2000, max(1, round(0.05 * len(ctx.shared_old)))))
    held = {}
    cand = np.array([j for j in ctx.shared_old if int(j) in old_pos], dtype=np.int64)
    if len(cand) > top_k + 1:
        pick = rng.choice(cand, size=min(held_n, len(cand)), replace=False)
        qv = np.stack([old_vecs[old_pos[int(j)]] for j in pick])
        s2, n2 = index.search(np.ascontiguousarray(qv), top_k + 1)
        preds = np.empty((len(pick), ctx.rows.shape[1]), dtype=np.float32)
        for r, j in enumerate(pick):
            keep = (n2[r] >= 0) & (old_ids[np.maximum(n2[r], 0)] != j)
            nb, sv = n2[r][keep][:top_k], s2[r][keep][:top_k]
            g = _softmax(sv / temperature)
            preds[r] = (g[:, None] * ctx.rows[old_ids[nb]]).sum(0)
        held = {"metric": "centred cosine of held-out shared rows rebuilt by the global (FAISS top-k) estimate",
                "held_out": int(len(pick)),
                "global_estimate": round(float(centred_cosine(preds, ctx.rows[pick], ctx.mean).mean()), 5)}
    params = {"global_weight": global_weight, "temperature": temperature, "top_k": top_k,
              "faiss_index": "IndexFlatIP", "aux_dim": int(old_vecs.shape[1]), "norm_cap": round(ctx.cap, 5)}
    return est, params, held, capped


def _aux_spaces(al, base_vocab, target, aux_embedder, device, cache_dir, progress) -> dict:
    from tokbench.transplant.aux import DEFAULT_AUX, AuxEmbedder, token_texts

    emb = AuxEmbedder(aux_embedder or DEFAULT_AUX, device=device)
    old_ids = np.array([j for j, kd in enumerate(base_vocab.kinds) if kd in (Kind.NORMAL, Kind.BYTE)
                        and base_vocab.key(j) is not None], dtype=np.int64)
    old_vecs = emb.embed(token_texts(base_vocab, old_ids), progress=progress, cache_dir=cache_dir)
    tgt_ids = sorted(set(al.new_only) | set(al.shared))
    new_vecs = emb.embed(token_texts(target, tgt_ids), progress=progress, cache_dir=cache_dir)
    return {"path": emb.path, "old_ids": old_ids, "old_vecs": old_vecs,
            "old_lens": {int(j): len(base_vocab.key(int(j))[0]) for j in old_ids},
            "new_pos": {i: r for r, i in enumerate(tgt_ids)}, "new_vecs": new_vecs}


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
    n = len(target)
    if method == "zero":
        fill = np.zeros(ctx.rows.shape[1], dtype=np.float32)
    else:
        fill = ctx.mean
    out = np.tile(fill.astype(np.float32), (n, 1))
    if len(ctx.shared_new):
        out[ctx.shared_new] = ctx.rows[ctx.shared_old]
    if new_ids:
        out[np.array(new_ids)] = est
    for i, o in _special_rows(ctx.al, ctx.al.old, target).items():
        if o is not None and o < ctx.rows.shape[0]:
            out[i] = ctx.rows[o]
    return out


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


def _tokenizer_files(tok_path: Path) -> list[tuple[Path, str]]:
    """(source, name in OUT) of the target's tokenizer files; a bare tokenizer.json takes its side files."""
    if tok_path.is_dir():
        files = [(tok_path / n, n) for n in TOKENIZER_FILES if (tok_path / n).is_file()]
        if not any(n in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt") for _, n in files):
            raise TokbenchError("no Hugging Face tokenizer files (tokenizer.json, tokenizer.model, vocab.json) to "
                                "write into the output", path=tok_path, fix="pass a folder or tokenizer.json "
                                "that transformers loads")
        return files
    if tok_path.suffix == ".json":
        files = [(tok_path, "tokenizer.json")]
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
