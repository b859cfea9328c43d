"""Length statistics of dynamic merging over a corpus, batch by batch (what `tokbench dynamic stats` prints)."""
from __future__ import annotations

import time
from pathlib import Path

from tokbench import limits
from tokbench.errors import TokbenchError

def corpus_lines(corpus: str | Path, limit_lines: int | None = None, limit_bytes: int | None = None) -> list[str]:
    """The non-blank lines of a corpus (asset name or path), in order."""
    from tokbench.assets.corpus import iter_documents

    out: list[str] = []
    for doc in iter_documents(corpus, limit_bytes):
        for line in doc.splitlines():
            if line.strip():
                out.append(line)
                if limit_lines is not None and len(out) >= limit_lines:
                    return out
    return out


def corpus_stats(tokenizer, corpus: str | Path, *, mode: str = "word", batch: int = 32, merges: int | None = None,
                 shorter_pct: float | None = None, pct_of_word_level: float | None = None, max_constituents: int | None = None, max_bytes: int | None = None,
                 limit_lines: int | None = None, limit_bytes: int | None = None, progress: bool = False,
                 keep=None) -> dict:
    """Merge every batch of `batch` consecutive non-blank lines of `corpus` with the same budget (per batch) and
    sum the lengths (`pct_of_word_level`: each batch goes that % of the way to its own word level). Returns tokens before / after, absolute % shorter, % of the word level, merges, seconds,
    and the merges -> length curve summed over batches (for `merges` or exhaustion budgets).

    With `shorter_pct`, a batch whose word level cannot reach the target is merged to exhaustion and counted in
    `batches_short_of_target`. `keep`: a keep policy (merge_batch); the word level stays the mode's own, and
    `keep_level` / `keep_pct_of_word_level` give the policy's exhaustion point."""
    from tqdm import tqdm

    from tokbench.dynamic.merge import DynamicTokenizer, merge_batch

    limits.at_least("batch", batch, 1, 100_000, what="lines per batch")
    tok = tokenizer if isinstance(tokenizer, DynamicTokenizer) else DynamicTokenizer.load(tokenizer)
    lines = corpus_lines(corpus, limit_lines, limit_bytes)
    if not lines:
        raise TokbenchError(f"corpus {corpus} has no non-blank lines", fix="pass a corpus with text")
    before = after = word = kept = n_merges = short = 0
    kernel = 0.0
    curve: list[int] = []
    t0 = time.perf_counter()
    chunks = [lines[i:i + batch] for i in range(0, len(lines), batch)]
    for chunk in tqdm(chunks, desc="dynamic merge", unit="batch", disable=not progress):
        try:
            mb = merge_batch(tok, chunk, mode=mode, merges=merges, shorter_pct=shorter_pct,
                             pct_of_word_level=pct_of_word_level, max_constituents=max_constituents, max_bytes=max_bytes,
                             keep=keep)
        except TokbenchError as exc:
            if (shorter_pct is None and pct_of_word_level is None) or "cannot be met" not in str(exc):
                raise
            short += 1
            mb = merge_batch(tok, chunk, mode=mode, max_constituents=max_constituents, max_bytes=max_bytes, keep=keep)
        before += mb.tokens_before
        after += mb.tokens_after
        word += mb.word_level
        kept += mb.keep_level
        n_merges += len(mb.merges)
        kernel += mb.seconds
        if shorter_pct is None and pct_of_word_level is None:
            _add_curve(curve, mb.lengths)
    seconds = time.perf_counter() - t0
    room = before - word
    return {
        "tokenizer": tok.name, "corpus": str(corpus), "mode": mode, "batch": batch, "batches": len(chunks),
        "lines": len(lines), "budget": {"merges": merges, "shorter_pct": shorter_pct, "pct_of_word_level": pct_of_word_level,
                                        "max_constituents": max_constituents, "max_bytes": max_bytes},
        "tokens_before": before, "tokens_after": after, "word_level": word, "keep": mb.keep, "keep_level": kept,
        "keep_pct_of_word_level": 100.0 * (before - kept) / room if room else 100.0,
        "pct_shorter": 100.0 * (before - after) / before,
        "pct_of_word_level": 100.0 * (before - after) / room if room else 100.0,
        "word_level_pct_shorter": 100.0 * room / before,
        "merges": n_merges, "merges_per_batch": n_merges / len(chunks), "batches_short_of_target": short,
        "seconds": seconds, "kernel_seconds": kernel,
        "kernel_tokens_per_s": before / kernel if kernel else None,
        "curve": curve,
    }


def _add_curve(total: list[int], lengths: list[int]) -> None:
    """Add one batch's lengths after 0..k merges to the summed curve (a batch that stopped early stays flat)."""
    if len(total) < len(lengths):
        # the batches summed so far stay flat after they stopped: total[-1] is the sum of their final lengths
        total.extend([total[-1] if total else 0] * (len(lengths) - len(total)))
    for i in range(len(total)):
        total[i] += lengths[min(i, len(lengths) - 1)]


# the reference repo's curve CSV (data/xnli/sequence_length_to_merges_dynamic_bpe.csv, read by its
# run_glue_dynamic.py) has exactly these two columns; ours adds the rest after them
REFERENCE_CURVE_COLUMNS = ("Number of Merges", "Avg Sequence Length")
CURVE_COLUMNS = REFERENCE_CURVE_COLUMNS + ("Total Tokens", "% Shorter", "% of Word Level")


def curve_rows(stats: dict) -> list[dict]:
    """The merges -> length curve of `corpus_stats` as rows under CURVE_COLUMNS: merges per batch, mean tokens
    per sequence (what the reference repo's CSV holds, so the two overlay), total tokens, absolute % shorter
    and % of the word level."""
    curve, seqs = stats["curve"], stats["lines"]
    if not curve:
        raise TokbenchError("no curve: the budget was a % (the curve needs a number of merges or exhaustion)",
                            fix="drop --shorter-pct / --pct-of-word-level")
    before, room = curve[0], curve[0] - stats["word_level"]
    return [dict(zip(CURVE_COLUMNS, (k, n / seqs, n, 100.0 * (before - n) / before,
                                     100.0 * (before - n) / room if room else 100.0)))
            for k, n in enumerate(curve)]


def rows_csv(rows: list[dict], columns=None) -> str:
    """CSV text of a list of flat dicts (columns: the first row's keys unless given)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns or (rows[0] if rows else [])), extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def length_profile(tok, texts, *, mode: str = "word", batch: int = 32, marks=(10, 100)) -> dict:
    """Merge `texts` in consecutive batches of `batch` to exhaustion and sum the lengths: tokens before, after
    each number of merges per batch in `marks`, and at the word level (exhaustion). One kernel run per batch
    gives all of them (a budget is a prefix of exhaustion)."""
    from tokbench.dynamic.merge import boundary_mask, merge_ids

    texts = [t for t in texts if t]
    out = {"sequences": len(texts), "tokens": 0, "word_level": 0} | {f"tokens_at_{m}": 0 for m in marks}
    if not texts:
        return out
    ids_all = tok.bpe.encode_ordinary_batch(texts)
    bb = tok.base_bytes()
    for b0 in range(0, len(ids_all), batch):
        ids = ids_all[b0:b0 + batch]
        if not any(ids):
            continue
        cut = boundary_mask(tok, ids, mode)
        lengths = merge_ids(ids, cut, bb)[3]
        out["tokens"] += lengths[0]
        out["word_level"] += lengths[-1]
        for m in marks:
            out[f"tokens_at_{m}"] += lengths[min(m, len(lengths) - 1)]
    return out
