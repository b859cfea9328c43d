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
from tokbench.dynamic.embed import dynamic_rows
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


def prefill_fidelity(model: str | Path, tokenizer, corpus="wikitext2-test", *, n_windows: int = 16,
                     prefix: int = 128, continuation: int = 64, budgets=(0, 10, None),
                     methods=("mean", "position_mean"), batch: int = 4, threads: int | None = None) -> dict:
    """Bits/byte of the continuation with the prefix merged at each budget (None: exhaustion) and each
    embedding method; see the module docstring for what is measured."""
    import torch
    from transformers import AutoModelForCausalLM

    from tokbench.assets import resolve

    limits.at_least("n_windows", n_windows, 1, 100_000)
    limits.at_least("prefix", prefix, 1, 1_000_000)
    limits.at_least("continuation", continuation, 2, 1_000_000)
    limits.at_least("batch", batch, 1, 4096)
    if threads:
        torch.set_num_threads(limits.threads(threads, "threads"))
    model_dir = Path(model) if Path(model).is_dir() else Path(resolve(str(model), kind="model"))
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    except Exception as exc:  # transformers raises many types
        raise TokbenchError(f"the model does not load with transformers ({exc})", path=model_dir,
                            fix="check config.json and the weights") from None
    emb = lm.get_input_embeddings()
    if emb is None or getattr(emb, "weight", None) is None:
        raise TokbenchError("the model has no input embedding matrix", path=model_dir, fix="use a causal LM")
    base = emb.weight.detach().float().numpy()
    if base.shape[0] < tok.n_base:
        raise TokbenchError(f"the model has {base.shape[0]:,} embedding rows but the tokenizer {tok.n_base:,} ids",
                            path=model_dir, fix="pass the tokenizer the model was trained with")
    wins = windows_from_corpus(tok, corpus, n_windows, prefix, continuation)
    prefixes = [p for p, _ in wins]
    conts = [c for _, c in wins]
    tb = tok.vocab.token_bytes
    cont_bytes = sum(len(tb[t] or b"") for c in conts for t in c)
    cut = boundary_mask(tok, prefixes, "word")
    word_level = sum(sum(c) for c in cut)
    base_t = torch.from_numpy(base)
    rows = []
    ref_bpb = None
    t_all = time.perf_counter()
    with torch.inference_mode():
        for budget in budgets:
            merged, cons, steps, lengths = merge_ids(prefixes, cut, tok.base_bytes(), merges=budget)
            for method in (methods if budget != 0 else ("none",)):
                t0 = time.perf_counter()
                if cons:
                    mb = MergedBatch(ids=prefixes, merged=merged, n_base=tok.n_base, tokens=cons,
                                     token_bytes=[b"".join(tb[c] or b"" for c in con) for con in cons],
                                     merges=steps, lengths=lengths, word_level=word_level, mode="word")
                    dyn = torch.from_numpy(dynamic_rows(mb, base[:tok.n_base], method).rows)
                    table = torch.cat([base_t[:tok.n_base], dyn])
                else:
                    table = base_t
                seqs = [table[torch.tensor(m + c[:-1], dtype=torch.long)] for m, c in zip(merged, conts)]
                bits = _score(lm, table, seqs, conts, batch)
                bpb = bits / cont_bytes
                if budget == 0:
                    ref_bpb = bpb
                before, after = lengths[0], lengths[-1]
                rows.append({"merges_budget": budget, "merges": len(steps), "method": method,
                             "prefix_tokens": before, "prefix_tokens_merged": after,
                             "pct_shorter_prefix": 100.0 * (before - after) / before,
                             "pct_of_word_level": 100.0 * (before - after) / (before - word_level),
                             "bits_per_byte": bpb,
                             "delta_pct": None if ref_bpb is None else 100.0 * (bpb / ref_bpb - 1),
                             "seconds": time.perf_counter() - t0})
    return {"model": str(model_dir), "tokenizer": tok.name, "corpus": str(corpus), "windows": n_windows,
            "prefix": prefix, "continuation": continuation, "continuation_bytes": cont_bytes,
            "mode": "word", "rows": rows, "seconds": time.perf_counter() - t_all}

