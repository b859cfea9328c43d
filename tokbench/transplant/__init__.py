"""Training-free tokenizer transplantation: `transplant(base, tokenizer, out, method=...)`."""
from tokbench.transplant.core import METHODS, transplant
from tokbench.transplant.omp import batch_omp, candidate_ks, centred_cosine, choose_omp

__all__ = ["METHODS", "batch_omp", "candidate_ks", "centred_cosine", "choose_omp", "transplant"]
