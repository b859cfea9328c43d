"""Read corpora as documents (str), whatever their shape.

What one document is (one natural unit of the source, never split):

- a text file (`.txt` or any non-JSONL file): the whole file;
- a `.jsonl` file: one record. Its text is, in this order: the `text_field` asked for (one field or
  several, joined by a newline), else `text`, else `content`, else `question` + newline + `answer`
  (GSM8K), else every paragraph of a UDHR record's `sections` (title, preamble, articles 1..30, one per
  line), else every verse of a `verses` mapping (bible-mark), one per line;
- a Tatoeba folder (`tatoeba.XXX-eng.{XXX,eng}`): one document per language, its non-English lines
  joined by newlines (English sides are not repeated; use `iter_tatoeba` for the pairs);
- any other folder: every `.txt` / `.jsonl` file under it, sorted by path (other files are skipped).

Text follows tokbench.text's rule: lone surrogates (JSON escapes such as `"\\ud800"`) become U+FFFD.
Empty documents are skipped. `limit_bytes` stops once that many UTF-8 bytes were yielded, cutting the
last document at a character boundary.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

from tokbench.assets.registry import resolve
from tokbench.errors import TokbenchError
from tokbench.text import clean

_TEXT_SUFFIXES = (".txt",)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_TATOEBA = re.compile(r"^tatoeba\.([^.]+)-eng\.([^.]+)$")
_TEXT_FIELD_FIX = "pass --text-field FIELD (Python: text_field='FIELD'; several: 'question,answer')"


class UdhrLanguage(NamedTuple):
    code: str  # the UDHR package's own id (unique per record); bcp47 and iso6393 are in the record
    name: str
    paragraphs: list[str]


class TatoebaLanguage(NamedTuple):
    lang: str
    lines: list[str]
    english_lines: list[str]


def _corpus_path(name_or_path: str | os.PathLike) -> Path:
    return resolve(name_or_path, kind="corpus")


def read_text(path: str | os.PathLike) -> str:
    """A whole text file as str (UTF-8; a TokbenchError names the file when it is not)."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise TokbenchError(f"not UTF-8 text (byte {exc.start})", path=p,
                            fix="convert it to UTF-8 (e.g. `iconv -t UTF-8`)") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every non-blank line of a JSONL file."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise TokbenchError(f"line {lineno} is not JSON ({exc})", path=p,
                                        fix="fix or drop that line") from None
                if not isinstance(rec, dict):
                    raise TokbenchError(f"line {lineno} is a JSON {type(rec).__name__}, not an object", path=p,
                                        fix="write one JSON object per line")
                yield lineno, rec
    except UnicodeDecodeError as exc:
        raise TokbenchError(f"not UTF-8 text (byte {exc.start})", path=p, fix="convert it to UTF-8") from None


def udhr_paragraphs(sections: dict) -> list[str]:
    """Paragraphs of a UDHR `sections` mapping: title, preamble, articles in numeric order, then the rest."""
    def order(key: str) -> tuple:
        if key == "title":
            return (0, 0, key)
        if key == "preamble":
            return (1, 0, key)
        if key.isdigit():
            return (2, int(key), key)
        return (3, 0, key)

    out: list[str] = []
    for key in sorted(sections, key=order):
        value = sections[key]
        if value is None:
            continue
        out.extend(clean(str(v)) for v in (value if isinstance(value, list) else [value]) if v is not None)
    return out


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return None


def record_text(record: dict, text_field: str | Sequence[str] | None = None, *,
                path: str | os.PathLike = "<record>", lineno: int = 0) -> str:
    """The text of one JSONL record (see the module docstring for the fields tried), lone surrogates
    replaced (tokbench.text)."""
    return clean(_record_text(record, text_field, path, lineno))


def _record_text(record: dict, text_field, path, lineno) -> str:
    if text_field:
        fields = [f.strip() for f in text_field.split(",")] if isinstance(text_field, str) else list(text_field)
        parts = []
        for fld in fields:
            if fld not in record:
                raise TokbenchError(f"record {lineno} has no field {fld!r} (fields: {', '.join(record)})",
                                    path=path, fix=_TEXT_FIELD_FIX)
            text = _as_text(record[fld])
            if text is None:
                raise TokbenchError(f"field {fld!r} of record {lineno} is a {type(record[fld]).__name__}, "
                                    "not text", path=path, fix=_TEXT_FIELD_FIX)
            parts.append(text)
        return "\n".join(parts)
    for fld in ("text", "content"):
        if isinstance(record.get(fld), str):
            return record[fld]
    if isinstance(record.get("question"), str) and isinstance(record.get("answer"), str):
        return record["question"] + "\n" + record["answer"]
    if isinstance(record.get("sections"), dict):
        return "\n".join(udhr_paragraphs(record["sections"]))
    if isinstance(record.get("verses"), dict):
        return "\n".join(str(v) for v in record["verses"].values())
    raise TokbenchError(f"record {lineno} has no recognised text field (fields: {', '.join(record) or 'none'})",
                        path=path, fix=_TEXT_FIELD_FIX)


def _tatoeba_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    pairs = []
    for p in sorted(folder.iterdir()):
        m = _TATOEBA.match(p.name)
        if m and m.group(2) == m.group(1) and m.group(1) != "eng":
            pairs.append((m.group(1), p, folder / f"tatoeba.{m.group(1)}-eng.eng"))
    return pairs


def _lines(path: Path) -> list[str]:
    return read_text(path).splitlines()


def iter_tatoeba(name_or_path: str | os.PathLike = "tatoeba") -> Iterator[TatoebaLanguage]:
    """(lang, lines, english_lines) per language of a Tatoeba folder, sorted by language code; the two
    lists are line-aligned."""
    folder = _corpus_path(name_or_path)
    if not folder.is_dir():
        raise TokbenchError("not a Tatoeba folder", path=folder, fix="pass the tatoeba-laser-v1 folder")
    pairs = _tatoeba_pairs(folder)
    if not pairs:
        raise TokbenchError("no tatoeba.XXX-eng.XXX files in this folder", path=folder,
                            fix="pass the tatoeba-laser-v1 folder")
    for lang, src, eng in pairs:
        if not eng.exists():
            raise TokbenchError(f"the English side of {src.name} is missing", path=eng,
                                fix="re-import the Tatoeba folder")
        lines, english = _lines(src), _lines(eng)
        if len(lines) != len(english):
            raise TokbenchError(f"{len(lines)} lines against {len(english)} in {eng.name}", path=src,
                                fix="the two sides must be line-aligned")
        yield TatoebaLanguage(lang, lines, english)


def iter_udhr(name_or_path: str | os.PathLike = "udhr") -> Iterator[UdhrLanguage]:
    """(code, name, paragraphs) per language of the UDHR JSONL, in file order."""
    path = _corpus_path(name_or_path)
    for lineno, rec in iter_jsonl(path):
        if not isinstance(rec.get("sections"), dict) or "code" not in rec:
            raise TokbenchError(f"record {lineno} is not a UDHR record (fields: {', '.join(rec)})", path=path,
                                fix="pass udhr.jsonl (code, name, sections)")
        yield UdhrLanguage(str(rec["code"]), str(rec.get("name", rec["code"])), udhr_paragraphs(rec["sections"]))


def _iter_file(path: Path, text_field) -> Iterator[str]:
    if path.name.lower().endswith(_JSONL_SUFFIXES):
        for lineno, rec in iter_jsonl(path):
            yield record_text(rec, text_field, path=path, lineno=lineno)
    else:
        if text_field:
            raise TokbenchError("--text-field applies to JSONL files only", path=path,
                                fix="drop --text-field for text files")
        yield read_text(path)


def _iter_path(path: Path, text_field) -> Iterator[str]:
    if path.is_file():
        yield from _iter_file(path, text_field)
        return
    if _tatoeba_pairs(path):
        for t in iter_tatoeba(path):
            yield "\n".join(t.lines)
        return
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                   and p.name.lower().endswith(_TEXT_SUFFIXES + _JSONL_SUFFIXES))
    if not files:
        raise TokbenchError("no .txt or .jsonl files in this folder", path=path,
                            fix="pass a text file, a JSONL file or a folder holding them")
    for f in files:
        yield from _iter_file(f, text_field)


def iter_documents(name_or_path: str | os.PathLike, limit_bytes: int | None = None, *,
                   text_field: str | Sequence[str] | None = None) -> Iterator[str]:
    """Documents (str) of a corpus name, file or folder; see the module docstring for what a document is."""
    path = _corpus_path(name_or_path)
    if limit_bytes is not None and limit_bytes <= 0:
        return
    used = 0
    for doc in _iter_path(path, text_field):
        if not doc:
            continue
        if limit_bytes is None:
            yield doc
            continue
        n = len(doc.encode("utf-8"))
        if used + n >= limit_bytes:
            cut = doc.encode("utf-8")[: limit_bytes - used].decode("utf-8", errors="ignore")
            if cut:
                yield cut
            return
        used += n
        yield doc
