"""Extract an archive into the cache all-or-nothing: unpack in full into a locked temporary folder next to
the destination, then move complete files and folders into place (rename, merging into folders that
exist); a move cut short by a kill is finished by the next import (`recover_imports`).
"""
from __future__ import annotations

import contextlib
import lzma
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from tokbench.assets import registry
from tokbench.errors import TokbenchError
from tokbench.outputs import apply_umask, discard_output, is_stale, make_temp


def _safe_relpath(name: str, archive: Path) -> PurePosixPath | None:
    rel = PurePosixPath(name)
    parts = [p for p in rel.parts if p not in ("", ".")]
    if rel.is_absolute() or ".." in parts:
        raise TokbenchError(f"archive member {name!r} points outside the archive", path=archive,
                            fix="repack it with relative paths only")
    return PurePosixPath(*parts) if parts else None


def _decompressed(raw):
    """A reader of the decompressed bytes (xz, gzip, bzip2 or plain tar, told by the magic bytes);
    the lzma/gzip/bz2 readers raise on a truncated or corrupt stream."""
    import bz2
    import gzip

    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(raw)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(raw)
    if head.startswith(b"BZh"):
        return bz2.open(raw)
    return contextlib.nullcontext(raw)


def _unpack(archive: Path, dest: Path, progress: bool) -> dict[str, int]:
    files: dict[str, int] = {}
    size = archive.stat().st_size
    with open(archive, "rb") as raw, tqdm(total=size, unit="B", unit_scale=True, desc=f"extract {archive.name}",
                                          disable=None if progress else True, leave=False) as bar, \
            _decompressed(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
        for member in tf:
            rel = _safe_relpath(member.name, archive)
            if rel is not None:
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    with open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    files[rel.as_posix()] = member.size
                else:
                    raise TokbenchError(f"archive member {member.name!r} is a link or special file",
                                        path=archive, fix="repack it with regular files and folders only")
            bar.update(raw.tell() - bar.n)
        # tar stops at its end-of-archive blocks; read the compressed stream to its end so a
        # truncated or damaged tail (missing end marker, bad check) is an error too
        while stream.read(1 << 20):
            pass
        bar.update(raw.tell() - bar.n)
    return files


def _merge(src: Path, dst: Path) -> None:
    """Move everything under src into dst: whole folders by one rename where dst lacks them, files by
    os.replace (atomic per file)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if not target.exists():
                os.replace(entry, target)
            elif target.is_dir():
                _merge(entry, target)
            else:
                raise TokbenchError("a file is in the way of a folder from the archive", path=target,
                                    fix="move that file away and import again")
        else:
            if target.is_dir():
                raise TokbenchError("a folder is in the way of a file from the archive", path=target,
                                    fix="move that folder away and import again")
            os.replace(entry, target)


_COMPLETE = ".complete"  # in a temporary import folder: the archive is fully unpacked under files/


def recover_imports(data_dir: Path) -> list[Path]:
    """Finish or drop the imports into `data_dir` that a killed run left (`.import-*` folders no live run
    holds): one that was fully unpacked (it has the `.complete` mark) is moved into place, the rest of it
    (roll forward: the kill came during the move); one that was not is removed. Returns the folders handled."""
    handled = []
    for p in sorted(Path(data_dir).glob(".import-*")):
        if not is_stale(p):
            continue
        if (p / _COMPLETE).is_file() and (p / "files").is_dir():
            _merge(p / "files", data_dir)
        shutil.rmtree(p, ignore_errors=True)
        handled.append(p)
    return handled


def extract_archive(archive: Path, data_dir: Path, *, progress: bool = True) -> dict[str, int]:
    """Extract `archive` into `data_dir` keeping its inner layout; returns {relative path: size}.

    Nothing appears under `data_dir` unless the whole archive read cleanly: it is unpacked in full into a
    locked temporary folder `data_dir/.import-XXXXXXXX/files`, marked complete, then moved into place
    under the cache lock. A run killed while unpacking leaves a folder the next import removes; one killed
    while moving leaves a complete one the next import finishes moving (`recover_imports`).
    """
    archive = Path(archive)
    data_dir = registry._writable_home(Path(data_dir).parent) / Path(data_dir).name
    data_dir.mkdir(parents=True, exist_ok=True)
    with registry._locked(data_dir.parent):
        recover_imports(data_dir)
    tmp = make_temp(data_dir, ".import-")
    try:
        try:
            files = _unpack(archive, tmp / "files", progress)
        except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError) as exc:
            raise TokbenchError(f"not a readable archive ({type(exc).__name__}: {exc})", path=archive,
                                fix="download it again, or check it with `tar -tf`") from None
        except OSError as exc:
            raise TokbenchError(f"extraction failed ({exc})", path=archive,
                                fix="check free space in the tokbench cache and that the archive is intact") \
                from None
        if not files:
            raise TokbenchError("the archive holds no files", path=archive,
                                fix="pass an archive of tokenizers/, corpora/ or models/")
        apply_umask(tmp / "files")
        (tmp / _COMPLETE).write_text(str(archive) + "\n", encoding="utf-8")
        with registry._locked(data_dir.parent):
            _merge(tmp / "files", data_dir)
        return files
    finally:
        discard_output(tmp)
