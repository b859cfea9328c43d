"""Dynamic batch merging (Feher, Vulić & Minixhofer 2024): BPE applied inside one batch at run time, so
frequent subword runs become single dynamic tokens and sequences get shorter without retraining.

    from tokbench.dynamic import merge_batch, dynamic_rows
    mb = merge_batch("smollm2", texts, mode="word", shorter_pct=10)     # or merges=100, or neither: exhaustion
    mb.merged, mb.tokens, mb.token_bytes, mb.lengths                   # batch, dynamic tokens, length curve
    mb.pct_shorter, mb.pct_of_word_level                               # absolute % and % of the word level
    merge_batch("smollm2", texts, mode="pretokens", keep="last-punct+recent:32")  # a keep policy (dynamic.keep)
    rows = dynamic_rows(mb, embedding_matrix, "mean").rows             # or "position_mean", "norm_mean", "omp"

The merge loop is the Rust kernel `tokbench._core.dynamic_merge` (incremental pair counts, occurrence lists,
lazily invalidated heap; ties go to the smallest pair ids). tests/dynamic_reference.py is its pure-Python twin.
"""
from tokbench.dynamic.embed import EMBED_METHODS, dynamic_rows, embed_batch
from tokbench.dynamic.merge import MODES, DynamicTokenizer, MergedBatch, boundary_mask, merge_batch, merge_ids
from tokbench.dynamic.stats import corpus_stats

__all__ = ["EMBED_METHODS", "MODES", "DynamicTokenizer", "MergedBatch", "boundary_mask", "corpus_stats",
           "dynamic_rows", "embed_batch", "merge_batch", "merge_ids"]
