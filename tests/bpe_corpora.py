"""Lines of the shared corpora for the BPE exactness tests and the encode benchmark."""
from __future__ import annotations

import json
from pathlib import Path


def _jsonl(path: Path, fields: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out.append("\n".join(str(rec[k]) for k in fields if rec.get(k)))
    return out


def documents(name: str, path: Path) -> list[str]:
    """The texts of corpus `name` (one per file line, JSON record, paragraph or sentence file)."""
    path = Path(path)
    if name.startswith("code-"):
        return [t for t in _jsonl(path, ("text",)) if t]
    if name.startswith("gsm8k"):
        return _jsonl(path, ("question", "answer"))
    if name == "udhr":
        out: list[str] = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                for paras in (rec.get("sections") or {}).values():
                    out.extend(p for p in paras if isinstance(p, str))
        return out
    if name == "bible-mark":
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                out.extend(v for v in (json.loads(line).get("verses") or {}).values() if isinstance(v, str))
        return out
    if name == "gutenberg":
        return [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))]
    if name == "tatoeba":
        files = sorted(p for p in path.iterdir() if p.name.startswith("tatoeba."))
        return [p.read_text(encoding="utf-8") for p in files]
    return [path.read_text(encoding="utf-8")]


def lines(name: str, path: Path) -> list[str]:
    """Every line (newline kept) of corpus `name`."""
    return [ln for doc in documents(name, path) for ln in doc.splitlines(keepends=True)]
