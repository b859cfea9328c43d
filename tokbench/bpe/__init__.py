"""BPE: fast encoding of byte-level BPE vocabularies (tiktoken rank files, tokenizer.json) and training."""
from tokbench.bpe.encoding import BPE, DisallowedSpecialError, bytelevel_bytes, bytes_to_unicode, load

from tokbench.bpe.train import Trained, train

__all__ = ["BPE", "Trained", "train", "DisallowedSpecialError", "bytelevel_bytes", "bytes_to_unicode", "load"]
