"""Command groups of the CLI, one module each: module `tokbench/commands/<name>.py` defines the
click command or group `<name>` (a trailing underscore is allowed, e.g. `eval_`), which the CLI
registers as `tokbench <name>`."""
from __future__ import annotations

import importlib
import pkgutil

import click


def _discover() -> list[click.Command]:
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, info.name, None) or getattr(module, info.name + "_", None)
        if isinstance(command, click.Command):
            out.append(command)
    return out


COMMANDS = _discover()
