"""Shards: byte ranges of input files, cut at document boundaries by the workers that read them.

A shard is (url, start, end): a local path or an fsspec URL (``memory://``, ``s3://``, ``gs://`` ... when
that filesystem is installed) and the byte range whose documents it owns. Only this travels to a
task; the worker opens the file itself. The driver never reads text, it only lists files and sizes.

Documents: a JSONL line (one record) in ``.jsonl`` / ``.ndjson`` files; in text files a block of lines
that starts with a line whose first character is not whitespace (the rule tokbench.bpe.train cuts
text at, where no built-in split pattern joins two pre-tokens). A shard owns the documents that
*start* in [start, end): it skips the continuation of a document begun before `start` and reads past
`end` to the end of its last document, so every document is read by exactly one shard whatever the
cut points, and the counts do not depend on the shard size.

Lines that are not UTF-8 are skipped and counted (``non_utf8_lines``/``non_utf8_bytes``, per file),
the policy of `tokbench train`; they never start a document.
"""
from __future__ import annotations

import glob as _glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokbench import limits
from tokbench.errors import TokbenchError

TEXT_SUFFIXES = (".txt", ".jsonl", ".ndjson")
BLOCK_BYTES = 1 << 20  # texts handed to the counter: about this long, cut at document starts
DEFAULT_SHARD_BYTES = 64 << 20
MIN_SHARD_BYTES = 1 << 10


@dataclass(frozen=True)
class Shard:
    """The documents of `url` that start in [start, end) (bytes)."""

    index: int
    url: str
    start: int
    end: int
    jsonl: bool
    text_field: str | tuple[str, ...] | None = None
    # "lines": text files as blocks of documents (training); "file": a text file is one document,
    # "tatoeba": a Tatoeba sentence file is one document of its lines joined by newlines (metrics,
    # as tokbench.assets.iter_documents). strict: a line that is not UTF-8 is an error, not skipped.
    unit: str = "lines"
    strict: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start

    def describe(self) -> dict:
        return {"index": self.index, "url": self.url, "start": self.start, "end": self.end}


@dataclass
class ShardStats:
    """What one shard held (summed by the driver)."""

    texts: int = 0
    bytes: int = 0
    non_utf8_lines: int = 0
    non_utf8_bytes: int = 0
    non_utf8_files: dict = field(default_factory=dict)


def is_url(s: str) -> bool:
    return "://" in s and not Path(s).exists()


def _fsspec(url: str):
    try:
        import fsspec
    except ImportError:
        raise TokbenchError("reading URLs needs fsspec", path=url,
                            fix="pip install fsspec (and the filesystem's driver, e.g. s3fs, gcsfs)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise TokbenchError(f"no filesystem for this URL ({str(exc).splitlines()[0]})", path=url,
                            fix="install the fsspec driver for its protocol (s3fs, gcsfs, ...)") from None


def _wanted(name: str) -> bool:
    return name.lower().endswith(TEXT_SUFFIXES)


def _url_files(url: str) -> list[tuple[str, int, bool]]:
    fs, path = _fsspec(url)
    proto = url.split("://", 1)[0]

    def full(p: str) -> str:
        return p if "://" in p else f"{proto}://{p.lstrip('/') if proto == 'memory' else p}"

    try:
        if _glob.has_magic(path):
            found = [p for p in sorted(fs.glob(path)) if fs.isfile(p)]
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if _wanted(p))
        elif fs.isfile(path):
            found = [path]
        else:
            found = []
        files = [(full(p), int(fs.size(p)), False) for p in found]
    except OSError as exc:
        raise TokbenchError(f"cannot list it ({exc})", path=url, fix="check the URL and its credentials") from None
    if not files:
        raise TokbenchError("no such file, or no .txt / .jsonl file under it", path=url, fix="check the URL")
    return files


def _local_files(inp: str | os.PathLike) -> list[tuple[str, int, bool]]:
    from tokbench.assets.corpus import _tatoeba_pairs

    p = Path(inp)
    if not p.exists():
        if _glob.has_magic(str(inp)):
            found = sorted(Path(x) for x in _glob.glob(str(inp), recursive=True) if Path(x).is_file())
            if not found:
                raise TokbenchError("this pattern matches no file", path=inp, fix="check the glob pattern")
            return [(str(x), x.stat().st_size, False) for x in found]
        from tokbench.assets.registry import resolve

        p = resolve(str(inp), kind="corpus")
    if p.is_file():
        return [(str(p), p.stat().st_size, False)]
    pairs = _tatoeba_pairs(p)
    if pairs:
        return [(str(src), src.stat().st_size, True) for _lang, src, _eng in pairs]
    return [(str(f), f.stat().st_size, False) for f in folder_files(p)]


def folder_files(p: Path) -> list[Path]:
    """The text and JSONL files below folder p (hidden parts skipped), sorted; none is an error."""
    files = sorted(f for f in p.rglob("*") if f.is_file() and _wanted(f.name)
                   and not any(s.startswith(".") for s in f.relative_to(p).parts))
    if not files:
        raise TokbenchError("no .txt or .jsonl files in this folder", path=p,
                            fix="pass a text file, a JSONL file or a folder holding them")
    return files


def list_files(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, int, bool]]:
    """(url or path, size, is a Tatoeba sentence file) of every input file: files, folders, globs,
    corpus asset names, fsspec URLs."""
    out: list[tuple[str, int, bool]] = []
    for inp in inputs:
        out.extend(_url_files(str(inp)) if is_url(str(inp)) else _local_files(inp))
    return out


def plan_shards(inputs: Sequence[str | os.PathLike], shard_bytes: int | None = None,
                text_field: str | Sequence[str] | None = None, *, documents: bool = False) -> list[Shard]:
    """Shards of about shard_bytes (default 64 MiB) over every input file (empty files give none).

    documents: the documents of tokbench.assets.iter_documents (metrics): a text file is one document,
    so one shard; JSONL files are cut as usual; non-UTF-8 is an error."""
    shard_bytes = limits.at_least("shard_bytes", DEFAULT_SHARD_BYTES if shard_bytes is None else shard_bytes,
                                  MIN_SHARD_BYTES, what="bytes")
    field_ = tuple(text_field) if isinstance(text_field, (list, tuple)) else text_field
    shards: list[Shard] = []
    for url, size, tatoeba in list_files(inputs):
        jsonl = url.lower().endswith((".jsonl", ".ndjson")) and not tatoeba
        if field_ and not jsonl:
            raise TokbenchError("--text-field applies to JSONL files only", path=url,
                                fix="drop --text-field for text files")
        unit = "lines" if not documents or jsonl else ("tatoeba" if tatoeba else "file")
        step = shard_bytes if unit == "lines" else max(size, 1)
        for start in range(0, size, step):
            shards.append(Shard(len(shards), url, start, min(size, start + step), jsonl, field_, unit, documents))
    return shards


# ---- reading (in the worker) ---------------------------------------------------------------
def _open(url: str):
    if not is_url(url):
        return open(url, "rb")
    fs, path = _fsspec(url)
    return fs.open(path, "rb")


def _lines(shard: Shard) -> Iterator[tuple[int, bytes]]:
    """(offset, raw line) from the line start at or after shard.start to the end of the file."""
    try:
        f = _open(shard.url)
    except OSError as exc:
        raise TokbenchError(f"cannot read this shard's file ({exc.strerror or exc})", path=shard.url,
                            fix="check that the file exists and is readable from every worker") from None
    with f:
        try:
            pos = 0
            if shard.start > 0:
                f.seek(shard.start - 1)
                pos = shard.start - 1 + len(f.readline())
            while True:
                raw = f.readline()
                if not raw:
                    return
                yield pos, raw
                pos += len(raw)
        except OSError as exc:
            raise TokbenchError(f"reading failed at byte {pos} ({exc.strerror or exc})", path=shard.url,
                                fix="check the file and the filesystem") from None


def _bad(stats: ShardStats, url: str, raw: bytes) -> None:
    stats.non_utf8_lines += 1
    stats.non_utf8_bytes += len(raw)
    stats.non_utf8_files[url] = stats.non_utf8_files.get(url, 0) + 1


def _text_docs(shard: Shard, stats: ShardStats) -> Iterator[str]:
    """Blocks of about BLOCK_BYTES of whole documents of a text-file shard."""
    block: list[str] = []
    size = 0
    started = shard.start == 0
    for pos, raw in _lines(shard):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = None
        doc_start = pos == 0 or (line is not None and not line[:1].isspace())
        if doc_start and pos >= shard.end:
            break
        if not started:
            if not doc_start:
                continue  # the end of a document that started in an earlier shard
            started = True
        if line is None:
            _bad(stats, shard.url, raw)
            continue
        if size >= BLOCK_BYTES and doc_start:
            yield "".join(block)
            block, size = [], 0
        block.append(line)
        size += len(raw)
        stats.bytes += len(raw)
    if block:
        yield "".join(block)


def parse_record(line: str, where: str, path) -> dict:
    """One JSONL line as a dict (TokbenchError naming `where` in `path` otherwise)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TokbenchError(f"{where} is not JSON ({exc.msg})", path=path,
                            fix="pass a JSONL file, one JSON object per line") from None
    if not isinstance(rec, dict):
        raise TokbenchError(f"{where} is not a JSON object", path=path, fix="pass a JSONL file, one JSON object per line")
    return rec


def _jsonl_docs(shard: Shard, stats: ShardStats) -> Iterator[str]:
    from tokbench.assets.corpus import record_text

    lineno = 0
    for pos, raw in _lines(shard):
        if pos >= shard.end:
            break
        lineno += 1
        where = f"line {lineno}" if shard.start == 0 else f"the line at byte {pos}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _strict(shard, pos + exc.start)
            _bad(stats, shard.url, raw)
            continue
        if not line.strip():
            continue
        text = record_text(parse_record(line, where, shard.url), shard.text_field, path=shard.url, lineno=lineno)
        stats.bytes += len(text.encode("utf-8", "surrogatepass"))
        yield text


def _strict(shard: Shard, offset: int) -> None:
    if shard.strict:
        raise TokbenchError(f"not UTF-8 text (byte {offset})", path=shard.url,
                            fix="convert it to UTF-8 (e.g. `iconv -t UTF-8`)")


def _whole_docs(shard: Shard, stats: ShardStats) -> Iterator[str]:
    """A whole text file as one document (unit "file"), or a Tatoeba file's lines joined ("tatoeba")."""
    from tokbench.text import clean

    data = b"".join(raw for _pos, raw in _lines(shard))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _strict(shard, exc.start)
        raise
    if shard.unit == "tatoeba":
        text = "\n".join(text.splitlines())
    stats.bytes += len(text.encode("utf-8", "surrogatepass"))
    yield clean(text)


def iter_shard(shard: Shard, stats: ShardStats) -> Iterator[str]:
    """The texts of a shard (text blocks, whole documents or JSONL record texts), counted into stats."""
    read = _jsonl_docs if shard.jsonl else _text_docs if shard.unit == "lines" else _whole_docs
    for t in read(shard, stats):
        if t:
            stats.texts += 1
            yield t


__all__ = ["DEFAULT_SHARD_BYTES", "Shard", "ShardStats", "is_url", "iter_shard", "list_files", "parse_record", "plan_shards"]
