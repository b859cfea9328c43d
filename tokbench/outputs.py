"""Output folders and files: every tokbench command that writes goes through here.

The API (the same for every command; `tokbench.vocab.model_io` re-exports the first two):

    final, tmp = prepare_output(out, overwrite, inputs)   # check OUT, make a locked temporary sibling
    ... write everything into tmp ...
    commit_output(tmp, final)                              # mark it, rename it into place atomically
    # on any failure: discard_output(tmp)

or, the same as a context manager: `with output_folder(out, overwrite, inputs) as tmp: ...`.
`check_output(out, overwrite, inputs)` checks OUT without writing (before long work).
`atomic_write(path, data)` writes one file (temporary sibling + rename). `make_temp(parent, prefix)` and `is_stale(path)` serve
writers with their own layout (the asset cache). `temp_sibling(final)` makes a
scratch folder beside `final` that the leftover cleaning treats like a temporary output.

The policy (what tokbench may write and delete):

1. OUT is refused, with or without `--overwrite`, when it is the filesystem root, the home folder or one
   of its parents, the current folder or one of its parents, an input, a folder that contains an input,
   or a folder inside an input folder (inputs are never modified). One line, exit 2.
2. OUT that does not exist or is an empty folder is written. An existing non-empty OUT is refused unless
   `overwrite` is true. With `overwrite`, OUT is replaced only if tokbench made it: it holds the marker
   file `.tokbench-output.json` (written into every output folder; it lists the files tokbench wrote) and
   nothing that is not in that list. A folder without the marker, or with files tokbench did not write,
   is refused with a message saying so: tokbench never deletes anything it did not create. (Folders in
   tokbench's own cache pass `owned=True`: they are tokbench's by construction.)
3. The new output is built in a temporary sibling `.OUT.tmp-XXXXXXXX` and renamed into place when it is
   complete; an old OUT is swapped out in one step (`renameat2(RENAME_EXCHANGE)` on Linux; elsewhere
   rename to `.OUT.old-XXXXXXXX`, rename the new one in, delete the old one), so OUT is at every moment
   either the complete old output, the complete new output, or (only on the fallback, between two
   renames) absent. Nothing half-written is ever at OUT.
4. A running writer holds an exclusive `flock` on its temporary folder (released by the kernel when the
   process dies, `kill -9` included). Before making its own temporary folder, every run on OUT removes the
   `.OUT.tmp-*` and `.OUT.old-*` siblings that nobody holds: the leftovers of killed runs. A live concurrent
   run's folder is locked and left alone; creating and cleaning are serialised by a short lock on OUT's
   parent folder, so a folder is never seen between its creation and its lock. Where locks are not
   supported, leftovers older than a day are removed.
5. Folders and files get the permissions the umask gives: the temporary folder's mkdtemp 0700 is widened
   to 0777 & ~umask, and before the rename every file in it gets 0666 & ~umask (0777 & ~umask when it
   was executable), whatever made it (mkstemp, a copy, a library).
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from tokbench.errors import TokbenchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, leftovers are cleaned by age
    fcntl = None  # type: ignore[assignment]

__all__ = ["MARKER", "prepare_output", "commit_output", "discard_output", "output_folder", "atomic_write",
           "temp_sibling", "make_temp", "is_stale", "apply_umask", "clean_leftovers", "check_output", "umask"]

MARKER = ".tokbench-output.json"
_STALE_UNLOCKED_SECONDS = 24 * 3600  # only where flock is not available
_held: dict[str, tuple[int, Path, bool, bool]] = {}  # tmp -> (locked fd, final, overwrite, owned)


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def _chmod_default(path: Path, directory: bool) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


# --- locks --------------------------------------------------------------------------------------------
def _try_lock(fd: int) -> bool | None:
    """True: locked now; False: someone else holds it; None: locks unsupported here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """Serialise making and cleaning temporary folders in `parent` (held for milliseconds)."""
    fd = None
    if fcntl is not None and str(parent) not in _held:  # inside our own locked temp: nobody else works there
        with contextlib.suppress(OSError):
            fd = os.open(parent, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _leftover_patterns(final: Path) -> list[str]:
    return [f".{final.name}.tmp-*", f".{final.name}.old-*"]


def _stale(p: Path, fd: int) -> bool:
    state = _try_lock(fd)
    if state is None:  # no locks here: judge by age
        import time

        try:
            return time.time() - p.lstat().st_mtime >= _STALE_UNLOCKED_SECONDS
        except OSError:
            return False
    return state  # True: nobody held it (we hold it now); False: a live run does


def is_stale(p: str | os.PathLike) -> bool:
    """True when the temporary folder `p` belongs to no live run (its writer was killed)."""
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _stale(Path(p), fd)
    finally:
        os.close(fd)


def _remove_if_stale(p: Path) -> bool:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return False
    try:
        if not _stale(p, fd):
            return False
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        return not p.exists()
    finally:
        os.close(fd)


def clean_leftovers(final: str | os.PathLike, patterns: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporary siblings of `final` left by killed runs (those no live process holds);
    returns what was removed. `patterns`: globs in final's parent (default `.NAME.tmp-*`, `.NAME.old-*`)."""
    final = Path(final).absolute()
    parent = final.parent
    if not parent.is_dir():
        return []
    removed = []
    with _parent_lock(parent):
        for pat in (patterns if patterns is not None else _leftover_patterns(final)):
            for p in sorted(parent.glob(pat)):
                if _remove_if_stale(p):
                    removed.append(p)
    return removed


def _make_locked_temp(parent: Path, prefix: str) -> Path:
    """mkdtemp + flock, with the parent lock held so no cleaner sees it unlocked."""
    with _parent_lock(parent):
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        fd = os.open(tmp, os.O_RDONLY)
        _try_lock(fd)
    _chmod_default(tmp, True)
    _held[str(tmp)] = (fd, tmp, False, True)
    return tmp


def make_temp(parent: str | os.PathLike, prefix: str) -> Path:
    """A locked temporary folder `parent/PREFIXXXXXXXXX` with the umask's permissions (see `is_stale`)."""
    return _make_locked_temp(Path(parent), prefix)


def temp_sibling(final: str | os.PathLike) -> Path:
    """A locked scratch folder `.NAME.tmp-XXXXXXXX` beside `final` (removed by `discard_output`, or by
    the next run's leftover cleaning once this process is gone)."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    return _make_locked_temp(final.parent, f".{final.name}.tmp-")


def _release(tmp: Path) -> None:
    held = _held.pop(str(tmp), None)
    if held is not None:
        with contextlib.suppress(OSError):
            os.close(held[0])


# --- the policy ---------------------------------------------------------------------------------------
def _resolved(p) -> Path:
    try:
        return Path(p).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(p).expanduser().absolute()


def check_output(out: str | os.PathLike, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (), *,
                 owned: bool = False) -> Path:
    """Rules 1 and 2 of the policy, without writing anything (commands call it before long work):
    raise TokbenchError when OUT may not be written; returns OUT absolute."""
    final = Path(out).expanduser().absolute()
    real = _resolved(final)
    if real.parent == real:
        raise TokbenchError("the output is the filesystem root", path=out, fix="pass a new folder to -o")
    home = _resolved(Path.home())
    if real == home or real in home.parents:
        raise TokbenchError("the output is your home folder or one of its parents", path=out,
                            fix="pass a new folder to -o")
    cwd = _resolved(Path.cwd())
    if real == cwd or real in cwd.parents:
        raise TokbenchError("the output is the current folder or one of its parents", path=out,
                            fix="pass a new folder to -o (e.g. -o out)")
    for p in inputs:
        if p is None:
            continue
        rp = _resolved(p)
        if rp == real:
            raise TokbenchError("the output is an input", path=out, fix="pass a new folder to -o; inputs are never modified")
        if real in rp.parents:
            raise TokbenchError(f"the output folder contains the input {p}", path=out,
                                fix="pass a new folder to -o; inputs are never modified")
        if rp in real.parents and rp.is_dir():
            raise TokbenchError(f"the output would be inside the input folder {p}", path=out,
                                fix="pass a folder outside the inputs to -o; inputs are never modified")
    _check_replaceable(final, out, overwrite, owned)
    return final


def _listing(folder: Path) -> set[str]:
    out = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.add((rel / name).as_posix())
    out.discard(MARKER)
    return out


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return next(it, None) is None


def apply_umask(folder: Path) -> None:
    """Give every folder and file under `folder` the umask's permissions (files copied or made by
    mkstemp/mkdtemp, by us or by libraries, would keep 0600/0700); executable bits are kept."""
    m = umask()
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~m)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, (0o777 if os.stat(p).st_mode & 0o111 else 0o666) & ~m)


def _check_replaceable(final: Path, out, overwrite: bool, owned: bool) -> None:
    """Rule 2: an existing OUT may be written only when empty, or with overwrite when tokbench made it."""
    if not (final.exists() or final.is_symlink()):
        return
    if final.is_symlink() or not final.is_dir():
        raise TokbenchError("the output path exists and is not a folder", path=out, fix="choose another -o")
    try:
        empty = _is_empty(final)
    except OSError as exc:
        raise TokbenchError(f"cannot read the output folder ({exc.strerror})", path=out, fix="choose another -o") from None
    if empty:
        return
    if not overwrite:
        raise TokbenchError("output folder exists and is not empty", path=out,
                            fix="pass --overwrite to replace it or choose another -o")
    if owned:
        return
    marker = final / MARKER
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        written = set(meta["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TokbenchError(f"output folder exists and was not made by tokbench (no valid {MARKER}); "
                            "--overwrite replaces only folders tokbench wrote", path=out,
                            fix="move it away yourself or choose another -o") from None
    extra = sorted(_listing(final) - written)
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise TokbenchError(f"output folder holds files tokbench did not write ({extra[0]}{more}); "
                            "--overwrite would delete them", path=out,
                            fix="move them away or choose another -o")


def prepare_output(out: str | os.PathLike, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (), *,
                   owned: bool = False) -> tuple[Path, Path]:
    """Check OUT against the policy, clean leftovers of killed runs, make the locked temporary sibling to
    write into: returns (final path, temp path). `inputs`: every file or folder the command reads.
    `owned`: OUT is in tokbench's own cache (replaced with `overwrite` without a marker)."""
    final = check_output(out, overwrite, inputs, owned=owned)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TokbenchError(f"cannot create the output's parent folder ({exc.strerror})", path=final.parent,
                            fix="choose a writable -o") from None
    clean_leftovers(final)
    try:
        tmp = _make_locked_temp(final.parent, f".{final.name}.tmp-")
    except OSError as exc:
        raise TokbenchError(f"cannot write beside the output ({exc.strerror})", path=final.parent,
                            fix="choose a writable -o") from None
    fd = _held[str(tmp)][0]
    _held[str(tmp)] = (fd, final, overwrite, owned)
    return final, tmp


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False when not available here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        f = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    f.restype = ctypes.c_int
    if f(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit_output(tmp: str | os.PathLike, final: str | os.PathLike, *, command: str | None = None) -> None:
    """Write the marker into the finished `tmp` and rename it to `final` (replacing an old OUT in one
    step when `prepare_output` allowed it). OUT is checked again: it may have changed meanwhile."""
    tmp, final = Path(tmp), Path(final)
    fd, _, overwrite, owned = _held.get(str(tmp), (None, final, False, False))
    apply_umask(tmp)
    files = sorted(_listing(tmp))
    from tokbench import __version__

    meta = {"tool": "tokbench", "version": __version__, "command": command or Path(sys.argv[0]).name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}
    with open(tmp / MARKER, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    _check_replaceable(final, final, overwrite, owned)
    try:
        if final.is_dir() and not _is_empty(final):
            if _exchange(tmp, final):
                shutil.rmtree(tmp, ignore_errors=True)  # the old output, now at the temporary name
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                os.replace(final, old / "o")
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)  # also onto an empty folder
    finally:
        _release(tmp)


def discard_output(tmp: str | os.PathLike) -> None:
    """Remove an unfinished temporary folder (after a failure)."""
    shutil.rmtree(tmp, ignore_errors=True)
    _release(Path(tmp))


@contextlib.contextmanager
def output_folder(out: str | os.PathLike, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (), *,
                  owned: bool = False, command: str | None = None) -> Iterator[Path]:
    """`with output_folder(out, overwrite, inputs) as tmp:` write into tmp; committed to OUT when the block
    ends normally, discarded when it raises."""
    final, tmp = prepare_output(out, overwrite, inputs, owned=owned)
    try:
        yield tmp
        commit_output(tmp, final, command=command)
    except BaseException:
        discard_output(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write one file through a temporary sibling renamed into place, with the umask's permissions
    (`fsync`: also flush it to disk before the rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    clean_leftovers(path, [f".{path.name}.*.tmp"])
    with _parent_lock(path.parent):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _try_lock(fd)
    try:
        with os.fdopen(fd, "wb") as f:  # still locked while renamed, so no cleaner takes it
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~umask())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
