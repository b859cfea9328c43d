"""Training-free tokenizer transplantation: `transplant(base, tokenizer, out, method=...)`.

The row initialisers it uses live in `tokbench.embeddings` (re-exported here for existing callers)."""
from tokbench.embeddings import batch_omp, candidate_ks, centred_cosine, choose_omp
from tokbench.transplant.core import METHODS, transplant

__all__ = ["METHODS", "batch_omp", "candidate_ks", "centred_cosine", "choose_omp", "transplant"]
