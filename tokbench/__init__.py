"""tokbench: a tokenizer engineering workbench.

Layers (imports point downward only): cli -> capabilities -> bpe -> vocab -> tokbench._core.
"""
from tokbench.errors import TokbenchError

__version__ = "0.1.0"
__all__ = ["TokbenchError", "__version__"]
