"""Optional dependencies: which extra of `pip install 'tokbench[...]'` brings which module, and a check
that names it before any work is done."""
from __future__ import annotations

import importlib.util

from tokbench.errors import TokbenchError

# import name -> (distribution name, the extra that installs it)
EXTRA_OF = {
    "torch": ("torch", "transplant"),
    "transformers": ("transformers", "transplant"),
    "faiss": ("faiss-cpu", "transplant"),
    "gguf": ("gguf", "models"),
    "accelerate": ("accelerate", "models"),
    "ray": ("ray", "ray"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def missing_message(modules: list[str], what: str) -> TokbenchError:
    """The error for `what` (e.g. "tokbench eval") needing the missing `modules`."""
    extras = sorted({EXTRA_OF.get(m, (m, "transplant"))[1] for m in modules})
    dists = ", ".join(EXTRA_OF.get(m, (m, ""))[0] for m in modules)
    return TokbenchError(f"{what} needs the Python package{'s' if len(modules) > 1 else ''} {dists}, "
                         "which is not installed",
                         fix=f"pip install 'tokbench[{','.join(extras)}]'")


def need(*modules: str, what: str) -> None:
    """Raise a TokbenchError naming the extra to install when one of `modules` is missing."""
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise missing_message(missing, what)


__all__ = ["EXTRA_OF", "missing_message", "need"]
