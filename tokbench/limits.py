"""Checks of resource arguments (threads, sizes, counts): one rule, one message, for the API and the CLI.

Every function returns the value (an int) or raises `LimitError`, a TokbenchError that is also a
ValueError, whose one-line message names the argument, the value given and the range allowed.
Thread counts are never refused for being large: a count above the cores runs on all cores (the Rust
core keeps one bounded set of pools, see rust_ext/src/pool.rs).
"""
from __future__ import annotations

import math
import numbers

from tokbench.errors import TokbenchError


class LimitError(TokbenchError, ValueError):
    """A resource argument outside its range."""


def _int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LimitError(f"{name} must be an integer, got {value!r}")
    return int(value)


def at_least(name: str, value, minimum: int, maximum: int | None = None, *, what: str = "") -> int:
    """value as int, checked to lie in minimum..maximum."""
    v = _int(name, value)
    if v < minimum or (maximum is not None and v > maximum):
        rng = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise LimitError(f"{name} must be {rng}{f' ({what})' if what else ''}, got {v}")
    return v


def optional(name: str, value, minimum: int, maximum: int | None = None, *, what: str = "") -> int | None:
    """at_least(), or None when value is None."""
    return None if value is None else at_least(name, value, minimum, maximum, what=what)


def real(name: str, value, lo: float, hi: float | None = None, *, lo_open: bool = False, what: str = "") -> float:
    """value as a finite float in [lo, hi] ((lo, hi] when lo_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise LimitError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
        rng = f"{'>' if lo_open else '>='} {lo:g}" if hi is None else f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise LimitError(f"{name} must be {rng}{f' ({what})' if what else ''}, got {v:g}")
    return v


def threads(value, name: str = "num_threads") -> int:
    """A thread count: 0 = all cores; more than the cores runs on all cores."""
    return at_least(name, value, 0, what="0: all cores")


__all__ = ["LimitError", "at_least", "optional", "real", "threads"]
