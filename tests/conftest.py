"""Shared test helpers.

`require_asset(name, kind=None)` (a fixture returning the helper, also importable as a function) gives the
path of a real asset registered in the user's tokbench cache. When it is not registered the test is
skipped with the command that fixes it, except under CI (`CI=true`), where that is a failure.

The real cache is only ever read: the autouse fixture below makes any write to it (registry, extracted
data, fetched models) fail the test. Tests that import or register things set `TOKBENCH_HOME` to a temp
folder with monkeypatch (see the `tokbench_home` fixture).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokbench.assets import fetch_spec, home, resolve
from tokbench.assets.catalog import CATALOG_BY_NAME
from tokbench.assets import registry as _registry
from tokbench.errors import TokbenchError

REAL_HOME: Path = home()  # the cache in effect when the test session started
IMPORT_HINT = "tokbench assets import ../shared/data/*.tar.xz"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_asset(name: str, kind: str | None = None) -> Path:
    """Path of the registered asset `name` in the real cache; skip (or fail under CI) when missing."""
    try:
        return resolve(name, kind=kind, root=REAL_HOME)
    except TokbenchError as exc:
        spec = fetch_spec(name)
        fetchable = spec is not None and (name not in CATALOG_BY_NAME or kind == spec.kind)
        how = f"tokbench assets fetch {name}" if fetchable else IMPORT_HINT
        msg = f"asset {name!r} is not available in {REAL_HOME}: run `{how}` ({str(exc).split(';')[0]})"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(name="require_asset", scope="session")
def require_asset_fixture():
    """`require_asset("gpt2")` -> Path (skips when the asset is not registered)."""
    return require_asset


@pytest.fixture
def tokbench_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty TOKBENCH_HOME for tests that import or register."""
    h = tmp_path / "tokbench-home"
    monkeypatch.setenv("TOKBENCH_HOME", str(h))
    return h


@pytest.fixture(autouse=True)
def _real_cache_is_read_only(monkeypatch):
    original = _registry._writable_home
    real = REAL_HOME.resolve()

    def guarded(root=None):
        target = (_registry.home() if root is None else Path(root)).absolute()
        if target.resolve() == real:
            pytest.fail(f"a test tried to write the real tokbench cache {real}; "
                        "use the tokbench_home fixture (monkeypatch TOKBENCH_HOME)")
        return original(root)

    monkeypatch.setattr(_registry, "_writable_home", guarded)
