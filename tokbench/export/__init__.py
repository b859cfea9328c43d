"""Writers of deployment formats below the capabilities: a model folder written by transplant or surgery
(the same Hugging Face layout) converts to GGUF here."""
from tokbench.export.gguf import ARCHITECTURES, PRE_TOKENIZERS, export_gguf, pre_tokenizer_name

__all__ = ["ARCHITECTURES", "PRE_TOKENIZERS", "export_gguf", "pre_tokenizer_name"]
