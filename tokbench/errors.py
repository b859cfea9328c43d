"""The one exception type users can cause, and helpers that phrase it."""
from __future__ import annotations

from pathlib import Path


class TokbenchError(Exception):
    """An error the user can fix: the message names the file (or asset) and what to do.

    The CLI prints it as a single line without a traceback and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        parts = []
        if path is not None:
            parts.append(f"{path}:")
        parts.append(message.rstrip("."))
        text = " ".join(parts)
        if fix:
            text += f"; {fix.rstrip('.')}"
        super().__init__(text.replace("\n", " "))
        self.path = None if path is None else str(path)
        self.fix = fix
