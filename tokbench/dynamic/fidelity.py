"""Prefill fidelity: run a causal LM on a merged prefix (through `inputs_embeds`) and score the original
continuation with the model's own output head, as bits per byte of the continuation.

What is measured: the corpus's non-blank lines are joined by newlines and encoded; consecutive windows of
`prefix + continuation` tokens are cut from that stream. The prefixes of all windows form one batch and are
merged together (word mode, the given budget). The model reads [merged prefix rows; rows of the continuation's
tokens but the last]. The log-probabilities at the last prefix position and after it score the continuation
tokens. bits/byte = total -log2 p over the continuation / its UTF-8 bytes. Budget 0 is the unmerged model.
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


def _score(lm, rows_t, seqs, conts, batch: int):
    """Sum of -log2 p(continuation) over windows; seqs are lists of embedding rows (tensors), conts the ids."""
    import torch

    bits = 0.0
    for b0 in range(0, len(seqs), batch):
        group, cgroup = seqs[b0:b0 + batch], conts[b0:b0 + batch]
        width = max(len(s) for s in group)
        emb = torch.zeros((len(group), width, rows_t.shape[1]), dtype=rows_t.dtype)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for r, s in enumerate(group):
            emb[r, :len(s)] = s
            mask[r, :len(s)] = 1
        logp = torch.log_softmax(lm(inputs_embeds=emb, attention_mask=mask).logits.float(), dim=-1)
        for r, (s, c) in enumerate(zip(group, cgroup)):
            start = len(s) - len(c)  # the last prefix position predicts c[0]
            lp = logp[r, start:start + len(c)].gather(1, torch.tensor(c, dtype=torch.long)[:, None])
            bits -= float(lp.sum()) / math.log(2)
    return bits


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


def _budget(spec, total: int, word_level: int):
    """(merges, target_len, label) of one budget: an int (merges), None (exhaustion) or "P%" (P % of the word level)."""
    if isinstance(spec, str) and spec.endswith("%"):
        from tokbench.dynamic.merge import budget_target

        try:
            pct = float(spec[:-1])
        except ValueError:
            raise TokbenchError(f"budget {spec!r} is not a percentage", fix="write e.g. 50%") from None
        limits.real("pct_of_word_level", pct, 0, 100, lo_open=True, what="a percentage")
        return None, budget_target(total, word_level, "word", pct_of_word_level=pct), spec
    if spec is None:
        return None, None, "exhaustion"
    return limits.at_least("merges", spec, 0, 10_000_000), None, str(spec)


def _control_rows(method: str, base, ids: set[int], n_base: int):
    """The `original tokens + new embedding` control: every base id of the prefixes re-embedded by `method`
    as a one-constituent dynamic token (mean and position_mean give the token's own row back)."""
    import numpy as np

    order = sorted(ids)
    mb = MergedBatch(ids=[], merged=[], n_base=n_base, tokens=[[i] for i in order], token_bytes=[b""] * len(order),
                     merges=[], lengths=[0], word_level=0, mode="word")
    rows = base[:n_base].copy()
    rows[np.asarray(order)] = dynamic_rows(mb, base[:n_base], method).rows
    return rows


def prefill_fidelity(model: str | Path, tokenizer, corpus="wikitext2-test", *, n_windows: int = 16,
                     prefix: int = 128, continuation: int = 64, budgets=(0, 10, None),
                     methods=("mean", "position_mean"), control: bool = False, mode: str = "word",
                     batch: int = 4, threads: int | None = None, progress: bool = False) -> dict:
    """Bits/byte of the continuation with the prefix merged at each budget (an int: merges; None:
    exhaustion; "P%": P % of the word level; 0: the unmerged model) and each embedding method; with
    `control`, one more row per method: the original tokens, every row re-made by that method (the
    `original tokens + new embedding` control that separates embedding error from segmentation change).
    See the module docstring for what is measured."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from tokbench.assets import resolve

    limits.at_least("n_windows", n_windows, 1, 100_000)
    limits.at_least("prefix", prefix, 1, 1_000_000)
    limits.at_least("continuation", continuation, 2, 1_000_000)
    limits.at_least("batch", batch, 1, 4096)
    for m in methods:
        if m not in EMBED_METHODS:
            raise TokbenchError(f"unknown dynamic embedding {m!r}", fix=f"use one of {', '.join(EMBED_METHODS)}")
    if threads:
        torch.set_num_threads(limits.threads(threads, "threads"))
    model_dir = Path(model) if Path(model).is_dir() else Path(resolve(str(model), kind="model"))
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
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
    wins = windows_from_corpus(tok, corpus, n_windows, prefix, continuation)
    prefixes = [p for p, _ in wins]
    conts = [c for _, c in wins]
    tb = tok.vocab.token_bytes
    cont_bytes = sum(len(tb[t] or b"") for c in conts for t in c)
    cut = boundary_mask(tok, prefixes, mode)
    word_level = sum(sum(c) for c in cut)
    total = sum(map(len, prefixes))
    base_t = torch.from_numpy(base)
    jobs = []
    for spec in budgets:
        if spec == 0:
            jobs.append((spec, "none", False))
            continue
        jobs += [(spec, m, False) for m in methods]
    if control:
        jobs += [("control", m, True) for m in methods]
    rows = []
    ref_bpb = None
    t_all = time.perf_counter()
    with torch.inference_mode():
        for spec, method, is_control in tqdm(jobs, desc="prefill fidelity", unit="run", disable=not progress):
            t0 = time.perf_counter()
            if is_control:
                merged, steps, lengths, label = prefixes, [], [total], "control"
                table = torch.from_numpy(_control_rows(method, base, {t for p in prefixes for t in p}, tok.n_base))
            else:
                merges, target, label = _budget(spec, total, word_level)
                merged, cons, steps, lengths = merge_ids(prefixes, cut, tok.base_bytes(), merges=merges,
                                                         target_len=target)
                table = base_t
                if cons:
                    mb = MergedBatch(ids=prefixes, merged=merged, n_base=tok.n_base, tokens=cons,
                                     token_bytes=[b"".join(tb[c] or b"" for c in con) for con in cons],
                                     merges=steps, lengths=lengths, word_level=word_level, mode=mode)
                    dyn = torch.from_numpy(dynamic_rows(mb, base[:tok.n_base], method).rows)
                    table = torch.cat([base_t[:tok.n_base], dyn])
            seqs = [table[torch.tensor(m + c[:-1], dtype=torch.long)] for m, c in zip(merged, conts)]
            bits = _score(lm, table, seqs, conts, batch)
            bpb = bits / cont_bytes
            if spec == 0:
                ref_bpb = bpb
            before, after = lengths[0], lengths[-1]
            rows.append({"budget": label, "merges_budget": spec if isinstance(spec, int) or spec is None else None,
                         "merges": len(steps), "method": method, "control": is_control,
                         "prefix_tokens": before, "prefix_tokens_merged": after,
                         "pct_shorter_prefix": 100.0 * (before - after) / before,
                         "pct_of_word_level": 100.0 * (before - after) / (before - word_level),
                         "bits_per_byte": bpb,
                         "delta_pct": None if ref_bpb is None else 100.0 * (bpb / ref_bpb - 1),
                         "seconds": time.perf_counter() - t0})
    return {"model": str(model_dir), "tokenizer": tok.name, "corpus": str(corpus), "windows": n_windows,
            "prefix": prefix, "continuation": continuation, "continuation_bytes": cont_bytes,
            "mode": mode, "word_level": word_level, "prefix_tokens": total,
            "word_level_pct_shorter": 100.0 * (total - word_level) / total,
            "rows": rows, "seconds": time.perf_counter() - t_all}
