"""Prefill fidelity: run a causal LM on a merged prefix (through `inputs_embeds`) and score the original
continuation with the model's own output head, as bits per byte of the continuation.

What is measured: the corpus's non-blank lines are joined by newlines and encoded; consecutive windows of
`prefix + continuation` tokens are cut from that stream. The prefixes form merge batches of `merge_batch`
consecutive windows (default: all in one) and each batch is merged (the given mode and budget). The model
reads [merged prefix rows; rows of the continuation's tokens but the last]. The log-probabilities at the last
prefix position and after it score the continuation tokens. bits/byte = total -log2 p over the continuation /
its UTF-8 bytes. Budget 0 is the unmerged model; its bits per window pair with every other row's for a
bootstrap interval of the Δ (`paired_ci`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from tokbench import limits
from tokbench.dynamic.embed import EMBED_METHODS, dynamic_rows
from tokbench.dynamic.merge import DynamicTokenizer, MergedBatch, boundary_mask, merge_ids
from tokbench.errors import TokbenchError


def windows_from_corpus(tok: DynamicTokenizer, corpus, n_windows: int, prefix: int, continuation: int):
    from tokbench.dynamic.stats import corpus_lines

    need = n_windows * (prefix + continuation)
    lines, ids = [], []
    for line in corpus_lines(corpus):
        lines.append(line)
        if len(lines) % 64 == 0:
            ids = tok.bpe.encode_ordinary("\n".join(lines))
            if len(ids) >= need:
                break
    else:
        ids = tok.bpe.encode_ordinary("\n".join(lines))
    if len(ids) < need:
        raise TokbenchError(f"{corpus} has {len(ids):,} tokens, fewer than {n_windows} windows of "
                            f"{prefix}+{continuation}", fix="ask for fewer or shorter windows")
    w = prefix + continuation
    return [(ids[i * w:i * w + prefix], ids[i * w + prefix:(i + 1) * w]) for i in range(n_windows)]


def _score(lm, rows_t, seqs, conts, batch: int) -> list[float]:
    """-log2 p(continuation) per window; seqs are lists of embedding rows (tensors), conts the ids."""
    import torch

    bits = []
    for b0 in range(0, len(seqs), batch):
        group, cgroup = seqs[b0:b0 + batch], conts[b0:b0 + batch]
        width = max(len(s) for s in group)
        emb = torch.zeros((len(group), width, rows_t.shape[1]), dtype=rows_t.dtype)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for r, s in enumerate(group):
            emb[r, :len(s)] = s
            mask[r, :len(s)] = 1
        # right padding: only the positions from the earliest scored one on need logits (the head and the
        # softmax over the prefix would be wasted work)
        keep = width - min(len(s) - len(c) for s, c in zip(group, cgroup))
        logp = torch.log_softmax(lm(inputs_embeds=emb, attention_mask=mask, logits_to_keep=keep).logits.float(), dim=-1)
        for r, (s, c) in enumerate(zip(group, cgroup)):
            start = len(s) - len(c) - (width - keep)  # the last prefix position predicts c[0]
            lp = logp[r, start:start + len(c)].gather(1, torch.tensor(c, dtype=torch.long)[:, None])
            bits.append(-float(lp.sum()) / math.log(2))
    return bits


def paired_ci(bits, ref_bits, *, draws: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of 100 * (sum(bits) / sum(ref_bits) - 1) over windows, resampled in pairs (the
    same windows for the merged and the unmerged run, so the windows' own difficulty cancels)."""
    import numpy as np

    a, b = np.asarray(bits, dtype=np.float64), np.asarray(ref_bits, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))
    d = 100.0 * (a[idx].sum(axis=1) / b[idx].sum(axis=1) - 1)
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _teacher_key(model_dir: Path, wins) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(str(model_dir.resolve()).encode())
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for p, c in wins:
        h.update(b"%d:%d|" % (len(p), len(c)) + ",".join(map(str, p + c)).encode() + b";")
    return h.hexdigest()[:24]


def _cached_teacher(cache: Path | None, key: str):
    import json

    if cache is None:
        return None
    f = Path(cache) / f"fidelity-teacher-{key}.json"
    try:
        return json.loads(f.read_text())["bits"]
    except (OSError, ValueError, KeyError):
        return None


def _store_teacher(cache: Path | None, key: str, bits: list[float]) -> None:
    import json

    from tokbench.outputs import atomic_write

    if cache is None:
        return
    Path(cache).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(cache) / f"fidelity-teacher-{key}.json", json.dumps({"bits": bits}))


def parse_budgets(text: str) -> list:
    """"10,50%,exhaustion" -> [10, "50%", None] (the budgets prefill_fidelity takes)."""
    out = []
    for b in (x.strip() for x in text.split(",")):
        if not b:
            continue
        if b == "exhaustion":
            out.append(None)
        elif b.endswith("%"):
            out.append(b)
        else:
            try:
                out.append(int(b))
            except ValueError:
                raise TokbenchError(f"budget {b!r} is neither a number of merges, P% nor exhaustion",
                                    fix="write e.g. 10,50%,exhaustion") from None
    if not out:
        raise TokbenchError("no budget given", fix="write e.g. 10,50%,exhaustion")
    return out


def _budget(spec, total: int, word_level: int, keep_level: int | None = None, keep=None, mode: str = "word"):
    """(merges, target_len, label) of one budget: an int (merges), None (exhaustion) or "P%" (P % of the mode's
    word level, without the keep policy; TokbenchError when the policy's exhaustion point `keep_level` stops
    short of it)."""
    if isinstance(spec, str) and spec.endswith("%"):
        from tokbench.dynamic.merge import budget_target

        try:
            pct = float(spec[:-1])
        except ValueError:
            raise TokbenchError(f"budget {spec!r} is not a percentage", fix="write e.g. 50%") from None
        limits.real("pct_of_word_level", pct, 0, 100, lo_open=True, what="a percentage")
        return None, budget_target(total, word_level, mode, pct_of_word_level=pct, keep_level=keep_level,
                                   keep=keep), spec
    if spec is None:
        return None, None, "exhaustion"
    return limits.at_least("merges", spec, 0, 10_000_000), None, str(spec)


def _control_rows(method: str, base, ids: set[int], n_base: int, kwargs: dict):
    """The `original tokens + new embedding` control: every base id of the prefixes re-embedded by `method`
    as a one-constituent dynamic token (mean, position_mean and norm_mean give the token's own row back)."""
    import numpy as np

    order = sorted(ids)
    mb = MergedBatch(ids=[], merged=[], n_base=n_base, tokens=[[i] for i in order], token_bytes=[b""] * len(order),
                     merges=[], lengths=[0], word_level=0, mode="word")
    rows = base[:n_base].copy()
    rows[np.asarray(order)] = dynamic_rows(mb, base[:n_base], method, **kwargs).rows
    return rows


def _method_specs(methods) -> list[tuple[str, str, dict]]:
    """(label, method, keyword arguments) per entry: a name in EMBED_METHODS or such a triple already."""
    out = []
    for m in methods:
        label, name, kw = (m, m, {}) if isinstance(m, str) else m
        if name not in EMBED_METHODS:
            raise TokbenchError(f"unknown dynamic embedding {name!r}", fix=f"use one of {', '.join(EMBED_METHODS)}")
        out.append((label, name, dict(kw)))
    return out


def _merged_seqs(tok, groups, base, base_t, mode, spec, method, kw, keep=None):
    """Merge each group of windows (one merge batch) at budget `spec` and embed it: (inputs_embeds rows per
    window, merges, lengths before and after, label)."""
    import torch

    tb = tok.vocab.token_bytes
    seqs, n_merges, before, after, label = [], 0, 0, 0, None
    for prefixes, conts, cut, word_level, keep_level in groups:
        merged, cons, steps, lengths, label = _merge_group(tok, prefixes, cut, word_level, spec, keep_level, keep,
                                                           mode)
        table = base_t
        if cons:
            mb = MergedBatch(ids=prefixes, merged=merged, n_base=tok.n_base, tokens=cons,
                             token_bytes=[b"".join(tb[c] or b"" for c in con) for con in cons],
                             merges=steps, lengths=lengths, word_level=word_level, mode=mode)
            dyn = torch.from_numpy(dynamic_rows(mb, base[:tok.n_base], method, **kw).rows)
            table = torch.cat([base_t[:tok.n_base], dyn])
        seqs += [table[torch.tensor(m + c[:-1], dtype=torch.long)] for m, c in zip(merged, conts)]
        n_merges += len(steps)
        before += lengths[0]
        after += lengths[-1]
    return seqs, n_merges, before, after, label


def _merge_group(tok, prefixes, cut, word_level, spec, keep_level=None, keep=None, mode="word"):
    """One merge batch at budget `spec` (`cut`: the mask with the keep policy's cuts): (merged, constituents per
    dynamic token, merges, lengths, label)."""
    merges, target, label = _budget(spec, sum(map(len, prefixes)), word_level, keep_level, keep, mode)
    merged, cons, steps, lengths = merge_ids(prefixes, cut, tok.base_bytes(), merges=merges, target_len=target)
    return merged, cons, steps, lengths, label


def _groups(tok, wins, mode: str, step: int, keep=None):
    """(prefixes, continuations, cut mask with the keep policy's cuts, the mode's word level without them, the
    policy's exhaustion point) per merge batch of `step` consecutive windows."""
    from tokbench.dynamic.keep import apply_keep

    out = []
    for g in range(0, len(wins), step):
        prefixes = [p for p, _ in wins[g:g + step]]
        cut = boundary_mask(tok, prefixes, mode)
        kept = apply_keep(prefixes, cut, keep, tok.vocab.token_bytes)
        out.append((prefixes, [c for _, c in wins[g:g + step]], kept, sum(map(sum, cut)), sum(map(sum, kept))))
    return out


def _contains(seq, sub) -> bool:
    n = len(sub)
    return any(seq[i:i + n] == sub for i in range(len(seq) - n + 1))


def repeat_split(tokenizer, result: dict) -> list[dict]:
    """Where a merged row's extra bits go: per merged row of a `prefill_fidelity` result, the windows whose
    continuation repeats (in original tokens) the constituents of a dynamic token used in their own merged
    prefix, against the others: their number, the Δ % in each group and the repeats' share of the extra bits.
    The windows and merges are recomputed from the result's corpus, sizes, mode and budgets (deterministic)."""
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
    wins = windows_from_corpus(tok, result["corpus"], result["windows"], result["prefix"], result["continuation"])
    keep = result.get("keep", "none")
    groups = _groups(tok, wins, result["mode"], result["merge_batch"], keep)
    ref = result["window_bits"][0]
    out = []
    for row, bits in zip(result["rows"], result["window_bits"]):
        if row["control"] or row["budget"] == "none":
            continue
        b = row["budget"]
        spec = None if b == "exhaustion" else b if b.endswith("%") else int(b)
        rep = []
        for prefixes, conts, cut, wl, kl in groups:
            merged, cons, *_ = _merge_group(tok, prefixes, cut, wl, spec, kl, keep, result["mode"])
            for m, c in zip(merged, conts):
                rep.append(any(_contains(c, cons[x - tok.n_base]) for x in set(m) if x >= tok.n_base))

        def delta(sel):
            r = sum(x for x, s in zip(ref, rep) if s == sel)
            return None if not r else 100.0 * (sum(x for x, s in zip(bits, rep) if s == sel) / r - 1)

        extra = sum(bits) - sum(ref)
        out.append({"budget": b, "method": row["method"], "windows_repeat": sum(rep),
                    "windows_other": len(rep) - sum(rep),
                    "delta_pct_repeat": delta(True), "delta_pct_other": delta(False),
                    "share_of_extra_bits_repeat": None if not extra else
                    sum(x - y for x, y, s in zip(bits, ref, rep) if s) / extra})
    return out


def prefill_fidelity(model: str | Path, tokenizer, corpus="wikitext2-test", *, n_windows: int = 16,
                     prefix: int = 128, continuation: int = 64, budgets=(0, 10, None),
                     methods=("mean", "position_mean"), control: bool = False, mode: str = "word",
                     merge_batch: int | None = None, batch: int = 4, threads: int | None = None,
                     teacher_cache: str | Path | None = None, progress: bool = False, keep=None) -> dict:
    """Bits/byte of the continuation with the prefix merged at each budget (an int: merges per merge batch;
    None: exhaustion; "P%": P % of the word level; 0: the unmerged model) and each embedding method (a name
    in EMBED_METHODS, or (label, name, keyword arguments for dynamic_rows)); with `control`, one more row per
    method: the original tokens, every row re-made by that method (the `original tokens + new embedding`
    control that separates embedding error from segmentation change).

    merge_batch: windows per merge batch (default: all windows form one batch); budgets apply per batch.
    teacher_cache: a folder where the unmerged run's bits per window are kept (keyed by the model files and
    the windows' ids) and read back by later calls. Every row has `delta_ci95`: a paired bootstrap interval
    of its Δ% over windows. `pct_of_word_level` is against this mode's word level, `pct_of_word_mode_level`
    against `word` mode's (the paper's whitespace words).
    keep: a keep policy (tokbench.dynamic.keep: "last-occurrence", "last-word", "last-punct", "recent:N",
    one last-* and recent:N joined by '+', "none"):
    extra cuts in every prefix's mask, so what the model is likely to copy stays in its original tokens. The
    % budgets and `pct_of_word_level` stay against the mode's word level without the policy; the result's
    `keep_level` / `keep_pct_of_word_level` say how far the policy lets merging go (its exhaustion point), and
    a % budget beyond it is a TokbenchError (before the model is loaded). See the module docstring for what
    is measured."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from tokbench.assets import resolve

    limits.at_least("n_windows", n_windows, 1, 100_000)
    limits.at_least("prefix", prefix, 1, 1_000_000)
    limits.at_least("continuation", continuation, 2, 1_000_000)
    limits.at_least("batch", batch, 1, 4096)
    if merge_batch is not None:
        limits.at_least("merge_batch", merge_batch, 1, 100_000)
    from tokbench.dynamic.keep import parse_keep

    specs = _method_specs(methods)
    policy = parse_keep(keep)
    if threads:
        torch.set_num_threads(limits.threads(threads, "threads"))
    model_dir = Path(model) if Path(model).is_dir() else Path(resolve(str(model), kind="model"))
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
    wins = windows_from_corpus(tok, corpus, n_windows, prefix, continuation)
    prefixes = [p for p, _ in wins]
    conts = [c for _, c in wins]
    tb = tok.vocab.token_bytes
    cont_bytes = sum(len(tb[t] or b"") for c in conts for t in c)
    step = merge_batch or n_windows
    groups = _groups(tok, wins, mode, step, policy)
    for spec in budgets:  # a % budget the keep policy cannot reach fails here, before any model run
        if spec not in (0, None):
            for i, g in enumerate(groups):
                try:
                    _budget(spec, sum(map(len, g[0])), g[3], g[4], policy, mode)
                except TokbenchError as exc:
                    raise TokbenchError(f"{corpus}, merge batch {i + 1} of {len(groups)} ({len(g[0])} windows): "
                                        f"{exc}") from None
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    except Exception as exc:  # transformers raises many types
        raise TokbenchError(f"the model does not load with transformers ({exc})", path=model_dir,
                            fix="check config.json and the weights") from None
    try:
        emb = lm.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        emb = None
    if emb is None or getattr(emb, "weight", None) is None or emb.weight.ndim != 2:
        raise TokbenchError("the model has no input embedding matrix", path=model_dir,
                            fix="use a causal LM with an nn.Embedding input layer")
    base = emb.weight.detach().float().numpy()
    if base.shape[0] < tok.n_base:
        raise TokbenchError(f"the model has {base.shape[0]:,} embedding rows but the tokenizer {tok.n_base:,} ids",
                            path=model_dir, fix="pass the tokenizer the model was trained with")
    word_level = sum(g[3] for g in groups)
    keep_level = sum(g[4] for g in groups)
    word_mode_level = word_level if mode == "word" else sum(sum(map(sum, boundary_mask(tok, g[0], "word")))
                                                            for g in groups)
    total = sum(map(len, prefixes))
    base_t = torch.from_numpy(base)
    jobs = []
    for spec in budgets:
        if spec == 0:
            jobs.append((spec, "none", "none", {}, False))
            continue
        jobs += [(spec, label, name, kw, False) for label, name, kw in specs]
    if control:
        jobs += [("control", label, name, kw, True) for label, name, kw in specs]
    key = _teacher_key(model_dir, wins)
    rows, window_bits = [], []
    ref_bits = None
    t_all = time.perf_counter()
    with torch.inference_mode():
        for spec, label_m, method, kw, is_control in tqdm(jobs, desc="prefill fidelity", unit="run",
                                                           disable=not progress):
            t0 = time.perf_counter()
            bits = None
            if spec == 0:
                bits = _cached_teacher(teacher_cache, key)
                seqs, n_merges, before, after, label = None, 0, total, total, "none"
                if bits is None:
                    seqs = [base_t[torch.tensor(p + c[:-1], dtype=torch.long)] for p, c in wins]
            elif is_control:
                table = torch.from_numpy(_control_rows(method, base, {t for p in prefixes for t in p}, tok.n_base, kw))
                seqs = [table[torch.tensor(p + c[:-1], dtype=torch.long)] for p, c in wins]
                n_merges, before, after, label = 0, total, total, "control"
            else:
                seqs, n_merges, before, after, label = _merged_seqs(tok, groups, base, base_t, mode, spec, method, kw,
                                                                    policy)
            cached = bits is not None
            if bits is None:
                bits = _score(lm, base_t, seqs, conts, batch)
            if spec == 0:
                ref_bits = bits
                if not cached:
                    _store_teacher(teacher_cache, key, bits)
            bpb = sum(bits) / cont_bytes
            ref_bpb = None if ref_bits is None else sum(ref_bits) / cont_bytes
            ci = None if ref_bits is None or spec == 0 else paired_ci(bits, ref_bits)
            window_bits.append(bits)
            rows.append({"budget": label, "merges_budget": spec if isinstance(spec, int) or spec is None else None,
                         "merges": n_merges, "method": label_m, "control": is_control,
                         "prefix_tokens": before, "prefix_tokens_merged": after,
                         "pct_shorter_prefix": 100.0 * (before - after) / before,
                         "pct_of_word_level": 100.0 * (before - after) / max(before - word_level, 1),
                         "pct_of_word_mode_level": 100.0 * (before - after) / max(before - word_mode_level, 1),
                         "bits_per_byte": bpb,
                         "delta_pct": None if ref_bpb is None else 100.0 * (bpb / ref_bpb - 1),
                         "delta_ci95_lo": None if ci is None else ci[0], "delta_ci95_hi": None if ci is None else ci[1],
                         "cached": cached, "seconds": time.perf_counter() - t0})
    return {"model": str(model_dir), "tokenizer": tok.name, "corpus": str(corpus), "windows": n_windows,
            "prefix": prefix, "continuation": continuation, "continuation_bytes": cont_bytes,
            "mode": mode, "merge_batch": step, "merge_batches": len(groups), "word_level": word_level,
            "keep": str(policy), "keep_level": keep_level,
            "keep_pct_of_word_level": 100.0 * (total - keep_level) / max(total - word_level, 1),
            "word_mode_level": word_mode_level, "prefix_tokens": total,
            "word_level_pct_shorter": 100.0 * (total - word_level) / total,
            "word_mode_level_pct_shorter": 100.0 * (total - word_mode_level) / total,
            "rows": rows, "window_bits": window_bits, "seconds": time.perf_counter() - t_all}


def fidelity_table(r: dict) -> str:
    """Markdown table of a prefill_fidelity result: both word levels, Δ and its paired 95 % interval."""
    out = ["| budget (merges) | method | prefix tokens | % shorter | % of word level (mode) | % of word level "
           "(`word`) | bits/byte | Δ | 95 % CI |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in r["rows"]:
        d = "–" if row["budget"] == "none" or row["delta_pct"] is None else f"{row['delta_pct']:+.2f}%"
        ci = "–" if row["delta_ci95_lo"] is None else f"[{row['delta_ci95_lo']:+.2f}, {row['delta_ci95_hi']:+.2f}]"
        out.append(f"| {row['budget']} ({row['merges']}) | {row['method']} | {row['prefix_tokens_merged']:,} | "
                   f"{row['pct_shorter_prefix']:.2f} | {row['pct_of_word_level']:.1f} | "
                   f"{row['pct_of_word_mode_level']:.1f} | {row['bits_per_byte']:.4f} | {d} | {ci} |")
    return "\n".join(out)
