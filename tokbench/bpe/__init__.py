"""BPE: fast encoding of byte-level BPE vocabularies (tiktoken rank files, tokenizer.json)."""
from tokbench.bpe.encoding import BPE, DisallowedSpecialError, bytelevel_bytes, bytes_to_unicode, load

__all__ = ["BPE", "DisallowedSpecialError", "bytelevel_bytes", "bytes_to_unicode", "load"]
