"""Evaluation of language models independent of their tokenizer: bits per byte."""
from tokbench.eval.bpb import bits_per_byte, load_eval_text

__all__ = ["bits_per_byte", "load_eval_text"]
