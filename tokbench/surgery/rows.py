"""Rows for the output ids, computed once at write time from each slot's row spec.

Spec per output id: {"method": "keep", "old": id} (the base row); a new token's {"method": "subword" | "mean" |
"zero" | "random" | "copy" | "position_mean" | "omp" | "tokenadapt", ...} made by the shared initialisers
(`tokbench.embeddings.make_rows`: "pieces" are the base ids its bytes split into, "old" the row copied, "text" what
omp / tokenadapt embed with the auxiliary sentence embedder (minilm), "norm_cap": "median" caps the row at the
typical base row); or a padding row's {"method": "pad", "init": "anti_hidden" | "negative_mean" | "mean" | "zero"}.
"""
from __future__ import annotations

import numpy as np

from tokbench.embeddings import AuxSpace, NewTokens, RowStats, make_rows, table_space

AUX_METHODS = ("omp", "tokenadapt")
_KEY = 1 << 40  # auxiliary-space keys of new rows (output position + _KEY): never a base id


def aux_for(base_vocab, specs: list[dict], progress: bool = False, cache_dir=None) -> AuxSpace | None:
    """The auxiliary space (minilm vectors of the base's normal/byte tokens and of each omp / tokenadapt spec's
    text) that those initialisers code new rows in; None when no spec needs one. cache_dir: where the vectors
    are cached by the hash of the embedder and the texts (tokbench.embeddings.AuxEmbedder.embed)."""
    from tokbench.embeddings import AuxEmbedder, token_texts
    from tokbench.vocab import Kind

    want = [i for i, s in enumerate(specs) if s["method"] in AUX_METHODS]
    if not want:
        return None
    emb = AuxEmbedder()
    old_ids = np.array([j for j, kd in enumerate(base_vocab.kinds) if kd in (Kind.NORMAL, Kind.BYTE)
                        and base_vocab.key(j) is not None], dtype=np.int64)
    old_vecs = emb.embed(token_texts(base_vocab, old_ids), progress=progress, cache_dir=cache_dir)
    new_vecs = emb.embed([specs[i]["text"] for i in want], progress=progress, cache_dir=cache_dir)
    return AuxSpace(path=emb.path, old_ids=old_ids, old_vecs=old_vecs,
                    old_lens={int(j): len(base_vocab.key(int(j))[0]) for j in old_ids},
                    new_pos={_KEY + i: r for r, i in enumerate(want)}, new_vecs=new_vecs)


def mean_hidden(model_dir, text: str, max_tokens: int = 2048) -> np.ndarray:
    """Mean final hidden state (the head's input) of the causal LM in model_dir over the first max_tokens
    tokens of text, in windows of 512."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
    model.eval()
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids[:, :max_tokens]
    total, n = None, 0
    with torch.no_grad():
        for k in range(0, ids.shape[1], 512):
            h = model(ids[:, k:k + 512], output_hidden_states=True).hidden_states[-1][0].float()
            total = h.sum(0) if total is None else total + h.sum(0)
            n += h.shape[0]
    return (total / max(n, 1)).numpy().astype(np.float32)


def pad_row(init: str, stats: RowStats, hidden: np.ndarray | None) -> np.ndarray:
    """A padding row. anti_hidden: opposite the base's mean final hidden state at the typical norm, so its
    logit is very low wherever hidden states share that direction (measured: reports/surgery.md);
    negative_mean: opposite the mean row; mean; zero."""
    if init == "zero":
        return np.zeros_like(stats.mean, dtype=np.float32)
    if init == "mean":
        return stats.mean.astype(np.float32)
    v = hidden if init == "anti_hidden" and hidden is not None else stats.mean
    return (-v / max(float(np.linalg.norm(v)), 1e-12) * stats.cap).astype(np.float32)


def build_rows(specs: list[dict], rows: np.ndarray, real: np.ndarray, seed: int,
               hidden: np.ndarray | None = None, union: np.ndarray | None = None,
               aux: AuxSpace | None = None) -> tuple[np.ndarray, dict, list[dict]]:
    """(output matrix for `specs` from the base matrix `rows`, counts per method, one record per output id).
    real: the base ids with tokens (their rows give the mean, std and norm cap new rows lean on).
    union: the re-indexed union matrix (op union) that {"method": "union", "index": k} specs take row k of.
    aux: `aux_for(...)` of these specs when some use omp / tokenadapt (anchors: the base tokens it embeds)."""
    stats = RowStats.of(rows, real)
    out = np.empty((len(specs), rows.shape[1]), dtype=np.float32)
    records: list[dict] = [{} for _ in specs]
    keep = [i for i, s in enumerate(specs) if s["method"] == "keep"]
    if keep:
        out[keep] = rows[[specs[i]["old"] for i in keep]]
        for i in keep:
            records[i] = {"method": "keep", "old": specs[i]["old"]}
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, s in enumerate(specs):
        if s["method"] == "union":
            out[i] = union[s["index"]]
            records[i] = {"method": "union", "source": s.get("source")}
        elif s["method"] not in ("keep", "pad"):
            capped_method = s["method"] in ("subword", "position_mean", "mean", "random")
            groups.setdefault((s["method"], capped_method and s.get("norm_cap", "median") == "median"), []).append(i)
    capped = 0
    for (method, cap), pos in sorted(groups.items()):
        extra: dict = {}
        keys = pos
        if method in AUX_METHODS:
            keys = [_KEY + i for i in pos]
            extra = {"aux": aux, "anchors": (aux.old_ids, aux.old_ids)}
            if method == "omp":
                table = np.concatenate([aux.old_vecs, aux.new_vecs])
                where = {int(j): r for r, j in enumerate(aux.old_ids)}
                where.update({k: len(aux.old_ids) + r for k, r in aux.new_pos.items()})
                extra["space"] = table_space(table, where)
        req = NewTokens(ids=keys, decompositions=[specs[i].get("pieces") or [] for i in pos])
        res = make_rows(method, rows, req, stats=stats, seed=seed, cap=cap,
                        sources=[specs[i]["old"] for i in pos] if method == "copy" else None, **extra)
        out[pos] = res.rows
        capped += res.norm_capped
        for i, rec in zip(pos, res.records):
            rec = {k: v for k, v in rec.items() if k != "id"}
            if "copied_from" in specs[i]:
                rec["copied_from"] = specs[i]["copied_from"]
            records[i] = rec
    for i, s in enumerate(specs):
        if s["method"] == "pad":
            out[i] = pad_row(s.get("init", "anti_hidden"), stats, hidden)
            records[i] = {"method": "pad", "init": s.get("init")}
    counts: dict[str, int] = {}
    for s in specs:
        counts[s["method"]] = counts.get(s["method"], 0) + 1
    return out, {"methods": dict(sorted(counts.items())), "norm_capped": capped, "norm_cap": round(stats.cap, 6)}, records
