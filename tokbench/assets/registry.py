"""The asset cache: where it lives, the JSON registry, importing folders and archives, resolving names.

Layout of the cache (`$TOKBENCH_HOME`, default `~/.cache/tokbench`)::

    registry.json        names -> kind, absolute path, origin (written atomically, under a lock)
    data/                archives extracted here, keeping their inner layout (tokenizers/, corpora/, ...)
    models/<name>/       models built by `tokbench assets fetch`
"""
from __future__ import annotations

import contextlib
import io
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tokbench.assets.catalog import CATALOG, CATALOG_BY_NAME, CatalogEntry, KINDS, fetch_spec, reserved_names
from tokbench.errors import TokbenchError

REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 1
IMPORT_HINT = "tokbench assets import ../shared/data/*.tar.xz"

_TOKENIZER_FILE = re.compile(r"^(tokenizer\.json|.+\.tiktoken|.+\.model(\.v\d+)?)$")
_ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tar")


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # tokenizer | corpus | model | embedder
    path: Path
    origin: str  # catalog | scan | fetch | manual
    source: str  # the archive or folder it came from
    description: str = ""

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["exists"] = self.exists
        return d


# ---------------------------------------------------------------------------------------------
# the cache folder and the registry file


def home() -> Path:
    """The cache folder: `$TOKBENCH_HOME`, else `~/.cache/tokbench` (not created here)."""
    env = os.environ.get("TOKBENCH_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return (Path.home() / ".cache" / "tokbench").absolute()


def _writable_home(root: Path | None = None) -> Path:
    """Every writer goes through here (tests guard the user's real cache by patching it)."""
    root = home() if root is None else Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TokbenchError(f"cannot create the tokbench cache ({exc.strerror})", path=root,
                            fix="set TOKBENCH_HOME to a writable folder") from None
    return root


def _empty_registry() -> dict:
    return {"format": REGISTRY_FORMAT, "assets": {}, "sources": {}}


def _load_registry(root: Path) -> dict:
    path = root / REGISTRY_FILE
    if not path.exists():
        return _empty_registry()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokbenchError(f"the asset registry is unreadable ({exc})", path=path,
                            fix=f"delete it and re-run `{IMPORT_HINT}`") from None
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        what = repr(data.get("format")) if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise TokbenchError(f"the asset registry has an unknown format ({what})", path=path,
                            fix=f"delete it and re-run `{IMPORT_HINT}`")
    data.setdefault("assets", {})
    data.setdefault("sources", {})
    if not isinstance(data["assets"], dict) or not isinstance(data["sources"], dict) or \
            not all(isinstance(a, dict) for a in data["assets"].values()):
        raise TokbenchError("the asset registry is damaged ('assets' / 'sources' are not objects of objects)",
                            path=path, fix=f"delete it and re-run `{IMPORT_HINT}`")
    return data


def _save_registry(root: Path, data: dict) -> None:
    from tokbench.outputs import atomic_write

    root = _writable_home(root)
    buf = io.StringIO()
    json.dump(data, buf, indent=1, ensure_ascii=False, sort_keys=True)
    atomic_write(root / REGISTRY_FILE, buf.getvalue() + "\n", fsync=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the cache while the registry is read, changed and written back."""
    root = _writable_home(root)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic writes only
        yield
        return
    with open(root / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _asset_from_entry(name: str, e: dict) -> Asset:
    return Asset(name=name, kind=e["kind"], path=Path(e["path"]), origin=e.get("origin", "manual"),
                 source=e.get("source", ""), description=e.get("description", ""))


def _entry(asset: Asset) -> dict:
    return {"kind": asset.kind, "path": str(asset.path), "origin": asset.origin, "source": asset.source,
            "description": asset.description}


# ---------------------------------------------------------------------------------------------
# reading


def list_assets(kind: str | None = None, *, root: Path | None = None) -> list[Asset]:
    """Registered assets, sorted by kind then name (`kind` filters)."""
    if kind is not None and kind not in KINDS:
        raise TokbenchError(f"unknown asset kind {kind!r}", fix=f"use one of {', '.join(KINDS)}")
    data = _load_registry(home() if root is None else Path(root))
    out = [_asset_from_entry(n, e) for n, e in data["assets"].items()]
    if kind is not None:
        out = [a for a in out if a.kind == kind]
    return sorted(out, key=lambda a: (KINDS.index(a.kind) if a.kind in KINDS else 99, a.name))


def get(name: str, *, root: Path | None = None) -> Asset | None:
    """The registered asset called `name`, or None."""
    e = _load_registry(home() if root is None else Path(root))["assets"].get(name)
    return None if e is None else _asset_from_entry(name, e)


def _kind_ok(asset_kind: str, wanted: str | tuple[str, ...] | None) -> bool:
    if wanted is None:
        return True
    wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    if asset_kind in wanted:
        return True
    # a model or embedder folder carries its tokenizer files
    return "tokenizer" in wanted and asset_kind in ("model", "embedder")


def _missing_fix(name: str, kind=None) -> str:
    spec = fetch_spec(name)
    if spec is not None and (name not in CATALOG_BY_NAME or (kind is not None and _kind_ok(spec.kind, kind)
                                                            and kind != "tokenizer")):
        return f"run `tokbench assets fetch {spec.aliases[0] if spec.aliases else spec.name}`"
    return f"run `{IMPORT_HINT}` (or `tokbench assets import FOLDER`), or pass a path"


def resolve(name_or_path: str | os.PathLike, kind: str | tuple[str, ...] | None = None, *,
            root: Path | None = None) -> Path:
    """Where an asset lives: an existing path wins; else a registered name; else TokbenchError.

    `kind` ("tokenizer", "corpus", "model", "embedder", or a tuple) rejects a registered name of another
    kind; asking for a tokenizer accepts model and embedder folders (they hold tokenizer files). A
    fetchable model is also found by its alias ("minilm"), and "smollm2" asked as a model gives
    "smollm2-135m".
    """
    text = os.fspath(name_or_path)
    p = Path(text).expanduser()
    if text and p.exists():
        return p.absolute()
    root = home() if root is None else Path(root)
    assets = _load_registry(root)["assets"]
    name = text
    entry = assets.get(name)
    spec = fetch_spec(name)
    if spec is not None and (entry is None or not _kind_ok(entry["kind"], kind)) and spec.name in assets:
        name, entry = spec.name, assets[spec.name]
    if entry is None:
        looks_like_path = os.sep in text or "/" in text or text.startswith((".", "~"))
        what = "no such file or folder, and no asset of that name" if looks_like_path else \
            "unknown asset name"
        raise TokbenchError(f"{what} (registry: {root / REGISTRY_FILE})", path=text, fix=_missing_fix(text, kind))
    if not _kind_ok(entry["kind"], kind):
        want = kind if isinstance(kind, str) else "/".join(kind)
        fix = f"pick a {want} from `tokbench assets list`"
        if spec is not None and _kind_ok(spec.kind, kind):
            fix = f"run `tokbench assets fetch {name}` to get the {spec.kind} {spec.name}"
        raise TokbenchError(f"asset {name!r} is a {entry['kind']}, not a {want}", path=entry["path"], fix=fix)
    path = Path(entry["path"])
    if not path.exists():
        raise TokbenchError(f"asset {name!r} is registered but its files are gone", path=path,
                            fix=f"re-import its source ({entry.get('source') or IMPORT_HINT})")
    return path


# ---------------------------------------------------------------------------------------------
# scanning a tree for assets


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return s or "asset"


def _is_model_dir(names: set[str]) -> bool:
    return "config.json" in names and any(
        n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names)


def _model_kind(names: set[str]) -> str:
    return "embedder" if ("modules.json" in names or "sentence_bert_config.json" in names) else "model"


def _catalog_match(path: Path, is_dir: bool) -> CatalogEntry | None:
    parts = path.parts
    for e in CATALOG:
        ep = e.parts
        if e.is_dir == is_dir and len(parts) >= len(ep) and parts[-len(ep):] == ep:
            return e
    return None


@dataclass
class _Found:
    name: str  # catalog name, or the base for a derived name
    kind: str
    path: Path
    origin: str
    description: str


def scan(root: Path) -> list[_Found]:
    """Catalog entries and tokenizer-looking files / model folders under `root` (or `root` itself)."""
    root = Path(root).absolute()
    found: list[_Found] = []
    if root.is_file():
        e = _catalog_match(root, False)
        if e is not None:
            return [_Found(e.name, e.kind, root, "catalog", e.description)]
        if _TOKENIZER_FILE.match(root.name):
            return [_Found(_slug(root.parent.name), "tokenizer", root, "scan", f"tokenizer file {root.name}")]
        return []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        names = set(filenames)
        e = _catalog_match(d, True)
        if e is not None:
            found.append(_Found(e.name, e.kind, d, "catalog", e.description))
            dirnames[:] = []  # a catalog folder is one asset
            continue
        if _is_model_dir(names):
            found.append(_Found(_slug(d.name), _model_kind(names), d, "scan", "model folder"))
            dirnames[:] = []
            continue
        primary_taken = False
        for fn in sorted(filenames, key=lambda n: (n not in ("tokenizer.json", "tokenizer.model"), n)):
            if fn.startswith("."):
                continue
            f = d / fn
            e = _catalog_match(f, False)
            if e is not None:
                found.append(_Found(e.name, e.kind, f, "catalog", e.description))
                continue
            if not _TOKENIZER_FILE.match(fn):
                continue
            if not primary_taken and fn in ("tokenizer.json", "tokenizer.model"):
                base = _slug(d.name)
                primary_taken = True
            else:
                stem = re.sub(r"\.(json|tiktoken|model(\.v\d+)?)$", "", fn)
                base = _slug(f"{d.name}-{stem}")
            found.append(_Found(base, "tokenizer", f, "scan", f"tokenizer file {fn}"))
    return found


def _register_found(data: dict, found: Iterable[_Found], source_of) -> list[Asset]:
    """Merge scan results into the registry dict; returns the assets touched (idempotent)."""
    assets = data["assets"]
    reserved = reserved_names()
    by_path = {e["path"]: n for n, e in assets.items()}
    out = []
    for f in found:
        spath = str(f.path)
        if f.origin == "catalog":
            name = f.name
        elif spath in by_path and assets[by_path[spath]].get("origin") == "scan":
            name = by_path[spath]
        else:
            name, n = f.name, 1
            while name in reserved or (name in assets and assets[name]["path"] != spath):
                n += 1
                name = f"{f.name}-{n}"
        prev = assets.get(name)
        src = source_of(f.path) or (prev or {}).get("source", "")
        asset = Asset(name=name, kind=f.kind, path=f.path, origin=f.origin, source=src,
                      description=f.description)
        assets[name] = _entry(asset)
        by_path[spath] = name
        out.append(asset)
    return out


# ---------------------------------------------------------------------------------------------
# importing


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ImportResult:
    source: Path
    kind: str  # "archive" | "folder" | "file"
    assets: list[Asset]
    files: int = 0
    skipped: bool = False  # archive already extracted and intact
    seconds: float = 0.0


def _archive_intact(data_dir: Path, rec: dict | None) -> bool:
    if not rec:
        return False
    for rel, size in rec.get("files", {}).items():
        p = data_dir / rel
        try:
            if p.stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def import_assets(paths: Iterable[str | os.PathLike], *, progress: bool = True,
                  root: Path | None = None) -> list[ImportResult]:
    """Register folders (in place, by absolute path) and archives (extracted under `home()/data`).

    Re-importing the same archive or folder changes nothing. A corrupt archive raises TokbenchError and
    leaves nothing behind (it is extracted in full into a temporary folder before anything moves).
    """
    from tokbench.assets.archive import extract_archive, recover_imports

    results = []
    for raw in paths:
        t0 = time.perf_counter()
        p = Path(raw).expanduser()
        if not p.exists():
            raise TokbenchError("no such file or folder", path=raw,
                                fix="pass a folder or a .tar.xz archive of tokenizers/corpora/models")
        p = p.absolute()
        root_ = _writable_home(root)
        if _is_archive(p):
            data_dir = root_ / "data"
            sha = sha256_of(p)
            with _locked(root_):
                if data_dir.is_dir():  # first finish or drop what a killed import left (before any scan)
                    recover_imports(data_dir)
                rec = _load_registry(root_)["sources"].get(f"archive:{sha}")
            skipped = _archive_intact(data_dir, rec)
            if skipped:
                files = rec["files"]
            else:
                files = extract_archive(p, data_dir, progress=progress)
            with _locked(root_):
                data = _load_registry(root_)
                data["sources"][f"archive:{sha}"] = {"type": "archive", "path": str(p), "sha256": sha,
                                                     "files": files}
                fileset = set(files)

                def source_of(path: Path, _d=data_dir, _fs=fileset, _p=str(p)) -> str | None:
                    rel = path.relative_to(_d).as_posix()
                    if rel in _fs or any(f.startswith(rel + "/") for f in _fs):
                        return _p
                    return None

                # this archive's assets, plus anything under data/ that is not registered at all (an
                # earlier import's names stay where they point)
                known_paths = {e["path"] for e in data["assets"].values()}
                found = [f for f in scan(data_dir) if source_of(f.path) is not None or (
                    str(f.path) not in known_paths and (f.origin != "catalog" or f.name not in data["assets"]))]
                touched = _register_found(data, found, source_of)
                _save_registry(root_, data)
            mine = [a for a in touched if a.source == str(p)]
            results.append(ImportResult(p, "archive", mine, len(files), skipped, time.perf_counter() - t0))
        elif p.is_dir() or p.is_file():
            if p.is_file() and not _TOKENIZER_FILE.match(p.name):
                raise TokbenchError("not a folder, a tokenizer file or a .tar.xz archive", path=p,
                                    fix="pass a folder or an archive (.tar.xz, .tar.gz, .tar)")
            found = scan(p)
            with _locked(root_):
                data = _load_registry(root_)
                data["sources"][f"folder:{p}"] = {"type": "folder" if p.is_dir() else "file", "path": str(p)}
                touched = _register_found(data, found, lambda _path, _p=str(p): _p)
                _save_registry(root_, data)
            results.append(ImportResult(p, "folder" if p.is_dir() else "file", touched, 0, False,
                                        time.perf_counter() - t0))
        else:  # pragma: no cover - sockets and such
            raise TokbenchError("not a regular file or folder", path=p, fix="pass a folder or a .tar.xz archive")
    return results


def register(path: str | os.PathLike, name: str | None = None, kind: str | None = None, *,
             root: Path | None = None, origin: str = "manual", description: str = "") -> list[Asset]:
    """Register `path`. With `name` (and `kind`): exactly that asset under that name. Without: import it
    like `tokbench assets import PATH` and return the assets found."""
    if name is None:
        return [a for r in import_assets([path], progress=False, root=root) for a in r.assets]
    if kind not in KINDS:
        raise TokbenchError(f"unknown asset kind {kind!r}", fix=f"use one of {', '.join(KINDS)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TokbenchError(f"bad asset name {name!r}", fix="use letters, digits, '.', '_' and '-'")
    p = Path(path).expanduser()
    if not p.exists():
        raise TokbenchError("no such file or folder", path=path, fix="register an existing path")
    p = p.absolute()
    asset = Asset(name=name, kind=kind, path=p, origin=origin, source=str(p), description=description)
    root_ = _writable_home(root)
    with _locked(root_):
        data = _load_registry(root_)
        data["assets"][name] = _entry(asset)
        _save_registry(root_, data)
    return [asset]


def forget(name: str, *, root: Path | None = None) -> bool:
    """Drop `name` from the registry (files are left alone). True when it was registered."""
    root_ = _writable_home(root)
    with _locked(root_):
        data = _load_registry(root_)
        if name not in data["assets"]:
            return False
        del data["assets"][name]
        _save_registry(root_, data)
    return True
