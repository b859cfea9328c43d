"""Byte-level BPE training (the Rust counter + trainer) and its exports.

Pipeline: documents -> pre-token counts (map: count a batch of texts on N threads; reduce: sum
the tables) -> merges -> `tokenizer.json` (HF `tokenizers` / `transformers`) and a tiktoken rank
file. Only the distinct pre-tokens are held in memory: inputs are streamed in batches.

Vocabulary layout: ids 0..255 are the single bytes (id = byte value), then one id per merge in
merge order, then the special tokens in the order given (``vocab_size`` counts them).
Tie-breaking: the highest pair count wins; among equal counts the lexicographically smallest
pair (left token's bytes, then right token's bytes). ``max_token_length`` is in bytes.

Counts file (``save_counts`` / ``load_counts``): UTF-8 text; a first line
``# tokbench-bpe-counts v1 pattern=<json string>`` (the split regex, or a built-in pattern name in
older files; null: no split), then one ``<base64 pre-token> <count>`` line per distinct
pre-token, sorted by bytes. Loading checks that the file's pattern is the counter's.

Inputs: files, folders or corpus asset names. ``.txt`` files (and the sentence files of a Tatoeba
folder) are read line by line as bytes, and a line that is not UTF-8 is counted as skipped and
reported in a warning naming the file (never dropped silently, never an exception);
text is counted in blocks cut only before a line that starts with a non-space character, where
the built-in split patterns never join two pre-tokens, so counts equal those of the whole file.
JSONL files give one document per record (``text_field`` or the fields `tokbench.assets` tries).
A Tatoeba folder gives its non-English sentence files, as ``tokbench.assets.iter_documents`` does.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokbench import _core, limits
from tokbench.errors import TokbenchError
from tokbench.outputs import atomic_write, output_folder
from tokbench.vocab.patterns import PATTERNS, resolve_pattern

_BLOCK_BYTES = 1 << 20  # text files are read in blocks of about this size (cut before a line that starts a word)
_READ_BYTES = 4 << 20  # text files are read this much at a time
_SHARD_BYTES = 1 << 20  # a counting task (BpeCounter.count's shard_bytes)
_COUNTS_HEADER = "# tokbench-bpe-counts v1"


class ShortVocabWarning(UserWarning):
    """Training stopped before the vocabulary size asked for (or learned no merge at all)."""


def shortfall(trained: "Trained", vocab_size: int, min_frequency: int, *, flag: str = "--vocab-size") -> list[str]:
    """Warnings (one line each) when `trained` has fewer tokens than `vocab_size` asked for (`flag`: how
    the message names the setting)."""
    out = []
    if not trained.merges:
        out.append(f"no merges learned ({flag} {vocab_size:,} asked for, {trained.vocab_size:,} tokens): no pair "
                   f"of bytes occurs {max(1, min_frequency)} times or more in the corpus (random or binary data?)")
    elif trained.vocab_size < vocab_size:
        out.append(f"{flag} {vocab_size:,} asked for, {trained.vocab_size:,} tokens learned: the corpus has "
                   f"no more pairs occurring {max(1, min_frequency)} times or more (more text or a lower "
                   "minimum frequency gives more)")
    return out


class NonUtf8Warning(UserWarning):
    """Some input lines were not UTF-8 and were not counted."""


@dataclass
class CountStats:
    texts: int = 0  # texts counted (JSONL records, text-file blocks)
    bytes: int = 0
    non_utf8_lines: int = 0
    non_utf8_bytes: int = 0
    non_utf8_files: dict[str, int] = field(default_factory=dict)


# ---- reading inputs ------------------------------------------------------------------------
def _resolve(inp: str | os.PathLike) -> Path:
    p = Path(inp)
    if p.exists():
        return p
    from tokbench.assets.registry import resolve

    return resolve(str(inp), kind="corpus")


def _bad_line(stats: CountStats, path: Path, raw: bytes) -> None:
    stats.non_utf8_lines += 1
    stats.non_utf8_bytes += len(raw)
    stats.non_utf8_files[str(path)] = stats.non_utf8_files.get(str(path), 0) + 1


class _Blocks:
    """Text-file blocks: whole lines, a new block started before the first line that begins with a
    non-whitespace character once the block holds _BLOCK_BYTES (lines that are not UTF-8 are skipped
    and reported, and do not count)."""

    def __init__(self, path: Path, stats: CountStats):
        self.path, self.stats = path, stats
        self.block: list[str] = []
        self.size = 0

    def flush(self) -> str:
        out = "".join(self.block)
        self.block, self.size = [], 0
        return out

    def lines(self, data: bytes) -> Iterator[str]:
        """The rule line by line (for data holding a line that is not UTF-8)."""
        for raw in _lines_of(data):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                _bad_line(self.stats, self.path, raw)
                continue
            if self.size >= _BLOCK_BYTES and not line[:1].isspace():
                yield self.flush()
            self.block.append(line)
            self.size += len(raw)

    def feed(self, data: bytes) -> Iterator[str]:
        """Whole lines `data` (each ending in b"\n" but perhaps the file's last): the blocks `lines`
        gives, found with bytes.find and decoded a block at a time."""
        pos = 0
        while pos < len(data):
            q = _next_cut(data, pos + max(0, _BLOCK_BYTES - self.size))
            try:
                text = data[pos:q].decode("utf-8")
            except UnicodeDecodeError:
                yield from self.lines(data[pos:])
                return
            if text:
                self.block.append(text)
                self.size += q - pos
            pos = q
            if q < len(data):
                yield self.flush()


def _lines_of(data: bytes) -> list[bytes]:
    """data cut after every b"\n" (as iterating a binary file does; b"\r" does not end a line)."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _next_cut(data: bytes, at: int) -> int:
    """The first line start q >= at (lines start at 0 and after every b"\n") whose line is UTF-8 and
    begins with a character that is not whitespace; len(data) when there is none."""
    n = len(data)
    if at >= n:
        return n
    q = at if at == 0 or data[at - 1] == 0x0A else data.find(b"\n", at) + 1
    while 0 < q < n or q == at == 0:
        end = data.find(b"\n", q) + 1
        try:
            if not data[q:end or n].decode("utf-8")[:1].isspace():
                return q
        except UnicodeDecodeError:
            pass  # a line that is not UTF-8 is skipped, it never starts a block
        if end == 0:
            return n
        q = end
    return n


def _iter_txt(path: Path, stats: CountStats) -> Iterator[str]:
    blocks = _Blocks(path, stats)
    buf = bytearray()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_BYTES):
            buf += chunk
            end = chunk.rfind(b"\n")
            if end >= 0:
                cut = len(buf) - len(chunk) + end + 1
                data = bytes(buf[:cut])
                del buf[:cut]
                yield from blocks.feed(data)
    yield from blocks.feed(bytes(buf))
    if blocks.block:
        yield blocks.flush()


def _iter_jsonl(path: Path, text_field, stats: CountStats) -> Iterator[str]:
    from tokbench.assets.corpus import record_text
    from tokbench.exec.shards import parse_record

    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                _bad_line(stats, path, raw)
                continue
            if not line.strip():
                continue
            yield record_text(parse_record(line, f"line {lineno}", path), text_field, path=path, lineno=lineno)


def _iter_file(path: Path, text_field, stats: CountStats) -> Iterator[str]:
    if path.name.lower().endswith((".jsonl", ".ndjson")):
        yield from _iter_jsonl(path, text_field, stats)
    else:
        if text_field:
            raise TokbenchError("--text-field applies to JSONL files only", path=path,
                                fix="drop --text-field for text files")
        yield from _iter_txt(path, stats)


def iter_texts(inputs: Iterable[str | os.PathLike], text_field=None,
               stats: CountStats | None = None) -> Iterator[str]:
    """Texts of files, folders and corpus asset names (see the module docstring)."""
    from tokbench.assets.corpus import _tatoeba_pairs

    stats = stats if stats is not None else CountStats()
    for inp in inputs:
        path = _resolve(inp)
        if path.is_file():
            yield from _iter_file(path, text_field, stats)
        elif _tatoeba_pairs(path):
            for _lang, src, _eng in _tatoeba_pairs(path):
                yield from _iter_txt(src, stats)
        else:
            from tokbench.exec.shards import folder_files

            for f in folder_files(path):
                yield from _iter_file(f, text_field, stats)


# ---- counting ------------------------------------------------------------------------------
def new_counter(pattern: str | None = "gpt2", special_tokens: Sequence[str] = ()) -> "_core.BpeCounter":
    try:
        return _core.BpeCounter(resolve_pattern(pattern), specials=list(special_tokens))
    except ValueError as exc:
        raise TokbenchError(f"bad split pattern ({exc})", fix="pass a built-in name or a valid regex") from None


def count_texts(texts: Iterable[str], counter: "_core.BpeCounter", *, num_threads: int = 0,
                stats: CountStats | None = None, progress=None,
                also: Sequence["_core.BpeCounter"] = ()) -> "_core.BpeCounter":
    """Stream texts into counter in batches (map on num_threads + reduce in Rust); the counters in
    `also` (other split patterns, e.g. supertoken runs) get the same batches in the same pass."""
    num_threads = limits.threads(num_threads)
    # One shard a thread, at least two, a batch: texts in flight stay small (Python holds each batch, and
    # a UTF-8 copy of its non-ASCII strings, until it is counted) while every thread has work.
    batch_bytes = _SHARD_BYTES * max(2, num_threads or os.cpu_count() or 1)
    stats = stats if stats is not None else CountStats()
    batch: list[str] = []
    size = 0
    for t in texts:
        if not t:
            continue
        n = len(t)
        batch.append(t)
        size += n
        stats.texts += 1
        if size >= batch_bytes:
            for c in (counter, *also):
                c.count(batch, num_threads, _SHARD_BYTES)
            if progress is not None:
                progress.update(size)
            stats.bytes += size
            batch, size = [], 0
    if batch:
        for c in (counter, *also):
            c.count(batch, num_threads, _SHARD_BYTES)
        if progress is not None:
            progress.update(size)
        stats.bytes += size
    return counter


def save_counts(counter: "_core.BpeCounter", path: str | os.PathLike, pattern: str | None = None) -> None:
    """Write the counts file (format in the module docstring) atomically. The header records the
    counter's split regex (`pattern`, a name or regex, only has to agree with it)."""
    if pattern is not None and resolve_pattern(pattern) != counter.pattern:
        raise TokbenchError(f"pattern {pattern!r} is not the one these counts were made with",
                            path=path, fix="pass the pattern the counter was built with")
    lines = [f"{_COUNTS_HEADER} pattern={json.dumps(counter.pattern)}\n"]
    lines.extend(f"{base64.b64encode(k).decode('ascii')} {c}\n" for k, c in counter.items())
    atomic_write(Path(path), "".join(lines).encode("utf-8"))


def _pattern_name(regex: str | None) -> str:
    """A built-in name for a regex when there is one (for messages)."""
    if regex is None:
        return "none"
    names = [n for n, p in PATTERNS.items() if p == regex]
    return names[0] if names else repr(regex)


def _saved_pattern(path: Path, header: str) -> str | None:
    """The split regex of a counts file header line."""
    if not header.startswith(_COUNTS_HEADER + " pattern="):
        raise TokbenchError("no counts header (so no split pattern to check)", path=path,
                            fix="pass a file written by --save-counts, or count the corpus again")
    try:
        saved = json.loads(header[len(_COUNTS_HEADER + " pattern="):])
        if saved is not None and not isinstance(saved, str):
            raise ValueError
        return resolve_pattern(saved)
    except (ValueError, TokbenchError):
        raise TokbenchError("the pattern in the counts header is unreadable", path=path,
                            fix="pass a file written by --save-counts, or count the corpus again") from None


def load_counts(path: str | os.PathLike, counter: "_core.BpeCounter") -> "_core.BpeCounter":
    """Add the counts of a counts file into counter (several files sum: the reduce step).
    The file's split pattern must be the counter's (else a TokbenchError says which to pass)."""
    path = Path(path)
    if not path.is_file():
        raise TokbenchError("no such counts file", path=path, fix="check the path")
    items = []
    with open(path, encoding="utf-8", errors="replace") as f:  # a bad byte fails the base64 check
        saved = _saved_pattern(path, f.readline().rstrip("\n"))
        if saved != counter.pattern:
            name = _pattern_name(saved)
            raise TokbenchError(f"these counts were made with split pattern {name}, not the requested "
                                f"{_pattern_name(counter.pattern)}", path=path,
                                fix=f"pass --pattern {name if name in PATTERNS or name == 'none' else 'REGEX'} "
                                    "to train on them, or count the corpus again with the pattern you want")
        for lineno, line in enumerate(f, 2):
            if line.startswith("#") or not line.strip():
                continue
            try:
                k, c = line.split()
                items.append((base64.b64decode(k, validate=True), int(c)))
            except ValueError:
                raise TokbenchError(f"line {lineno} is not '<base64> <count>'", path=path,
                                    fix="pass a file written by --save-counts") from None
    counter.add_items(items)
    return counter


# ---- the result ----------------------------------------------------------------------------
@dataclass
class Trained:
    """A trained byte-level BPE: tokens[id] = bytes, merges as id pairs in merge order."""

    tokens: list[bytes]
    merges: list[tuple[int, int]]
    merge_counts: list[int]
    special_tokens: dict[str, int]
    pattern: str | None
    stats: CountStats
    # how it was trained (mode and its settings; tokbench.bpe.modes), printed by the CLI
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens) + len(self.special_tokens)

    def tokenizer_json(self) -> dict:
        from tokbench.bpe.encoding import bytes_to_unicode

        b2u = bytes_to_unicode()
        names = ["".join(b2u[b] for b in t) for t in self.tokens]
        pre = [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]
        if self.pattern is not None:
            pre.insert(0, {"type": "Split", "pattern": {"Regex": self.pattern},
                           "behavior": "Isolated", "invert": False})
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for s, i in self.special_tokens.items()],
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False,
                      "vocab": {n: i for i, n in enumerate(names)},
                      "merges": [f"{names[a]} {names[b]}" for a, b in self.merges]},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write tokenizer.json (atomically); path may be a folder."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        data = json.dumps(self.tokenizer_json(), ensure_ascii=False, indent=1)
        atomic_write(path, data.encode("utf-8"))
        return path

    def save_tiktoken(self, path: str | os.PathLike) -> Path:
        """Write a tiktoken rank file (`<base64> <rank>`, rank = id; specials are not in it)."""
        path = Path(path)
        body = "".join(f"{base64.b64encode(t).decode('ascii')} {i}\n" for i, t in enumerate(self.tokens))
        atomic_write(path, body.encode("ascii"))
        return path

    def save_folder(self, out: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable = (),
                    tiktoken: bool = False, report: dict | None = None) -> list[Path]:
        """Write the output folder OUT all at once (tokbench.outputs): tokenizer.json, with `tiktoken`
        tokenizer.tiktoken, with `report` train_report.json. Nothing appears in OUT until all are written;
        an existing non-empty OUT is replaced only with `overwrite` and only when tokbench wrote it.
        Returns the final paths of the files."""
        names = ["tokenizer.json"] + (["tokenizer.tiktoken"] if tiktoken else []) + \
            (["train_report.json"] if report is not None else [])
        with output_folder(out, overwrite, inputs, command="train") as tmp:
            self.save(tmp / "tokenizer.json")
            if tiktoken:
                self.save_tiktoken(tmp / "tokenizer.tiktoken")
            if report is not None:
                (tmp / "train_report.json").write_text(json.dumps({**report, "files": names}, indent=1) + "\n",
                                                       encoding="utf-8")
        return [Path(out).absolute() / n for n in names]

    def encoder(self):
        """A tokbench.bpe.BPE over this vocabulary (merge priority = merge order)."""
        from tokbench.bpe.encoding import BPE

        tokens = [(t, i) for i, t in enumerate(self.tokens)]
        core = _core.BpeEncoder(tokens, list(self.merges), ignore_merges=False, pattern=self.pattern,
                                keep_unmatched=True, specials=list(self.special_tokens.items()))
        return BPE(core, name="trained", pattern=self.pattern, source="tokenizer.json")


# ---- training ------------------------------------------------------------------------------
def _bar(total, desc, unit, show):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not show, leave=False)


def run_cancellable(call, total: int, desc: str, show: bool):
    """Run call(progress) on a worker thread (the Rust side releases the GIL) with one tqdm bar fed by
    progress.done; Ctrl-C cancels the Rust loop, waits for it and re-raises."""
    prog = _core.TrainProgress()
    result: dict = {}

    def run():
        try:
            result["out"] = call(prog)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result["err"] = exc

    worker = threading.Thread(target=run, name="tokbench-bpe-train", daemon=True)
    bar = _bar(total, desc, "merge", show)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
            bar.n = prog.done
            bar.refresh()
    except BaseException:
        prog.cancel()
        worker.join()
        raise
    finally:
        bar.close()
    if "err" in result:
        raise result["err"]
    return result["out"]


def check_vocab_size(vocab_size: int, special_tokens: Sequence[str] = ()) -> int:
    """The number of byte tokens + merges that `vocab_size` leaves after the specials (a LimitError
    when that is under the 256 byte tokens); call it before counting."""
    n = len(dict.fromkeys(special_tokens))
    return limits.at_least("vocab size", vocab_size, 256 + n,
                           what=f"the 256 byte tokens + {n} special tokens + merges") - n


def train_counts(counter: "_core.BpeCounter", vocab_size: int, *, pattern: str | None,
                 special_tokens: Sequence[str] = (), min_frequency: int = 2,
                 max_token_length: int | None = None, stats: CountStats | None = None,
                 progress: bool = True, candidates: int = 1, num_threads: int = 0) -> Trained:
    """Train merges on a filled counter (GIL released; one tqdm bar; Ctrl-C cancels cleanly).

    candidates > 1: compression-aware merges (tokbench.bpe.modes.train_compress documents them).
    num_threads: threads of the merge steps that touch many words (0 = all); the merges are the same
    at every thread count."""
    specials = list(dict.fromkeys(special_tokens))
    target = check_vocab_size(vocab_size, specials)
    if len(counter) == 0:
        raise TokbenchError("the corpus is empty (no text to count)", fix="pass files holding text")
    limits.at_least("min_frequency", min_frequency, 1)
    limits.optional("max_token_length", max_token_length, 1, what="bytes")
    limits.at_least("candidates", candidates, 1)
    vocab, merges = run_cancellable(
        lambda prog: _core.bpe_train(counter, target, max(1, min_frequency), max_token_length, prog,
                                     candidates=max(1, candidates), num_threads=limits.threads(num_threads)),
        target - 256, "merging", progress)
    tokens = list(vocab)
    trained = Trained(tokens=tokens, merges=[(a, b) for a, b, _, _ in merges],
                      merge_counts=[c for *_, c in merges],
                      special_tokens={s: len(tokens) + i for i, s in enumerate(specials)},
                      pattern=pattern, stats=stats or CountStats())
    for line in shortfall(trained, vocab_size, min_frequency, flag="vocab_size"):
        warnings.warn(line, ShortVocabWarning, stacklevel=2)
    return trained


def count_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike], counter: "_core.BpeCounter", *,
                 also: Sequence["_core.BpeCounter"] = (), text_field=None, num_threads: int = 0,
                 progress: bool = True) -> CountStats:
    """Count files / folders / corpus names into counter (and the `also` counters) with a bar;
    warns about non-UTF-8 lines; TokbenchError when nothing was counted."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    stats = CountStats()
    total = 0
    paths = []
    for inp in inputs:
        p = _resolve(inp)
        paths.append(p)
        total += sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    with _bar(total, "counting", "B", progress) as bar:
        count_texts(iter_texts(paths, text_field, stats), counter, num_threads=num_threads,
                    stats=stats, progress=bar, also=also)
    _counted(stats, counter, paths, stacklevel=4)
    return stats


def _counted(stats: CountStats, counter: "_core.BpeCounter", inputs, stacklevel: int) -> None:
    """After counting: one warning for the non-UTF-8 lines skipped; TokbenchError when nothing was counted."""
    if stats.non_utf8_lines:
        where = ", ".join(f"{f} ({n})" for f, n in list(stats.non_utf8_files.items())[:3])
        warnings.warn(f"{stats.non_utf8_lines} non-UTF-8 lines ({stats.non_utf8_bytes} bytes) were not "
                      f"counted: {where}", NonUtf8Warning, stacklevel=stacklevel)
    if len(counter) == 0:
        names = ", ".join(str(p) for p in inputs) or "no inputs"
        raise TokbenchError(f"the corpus is empty ({names}: no UTF-8 text to count)",
                            fix="pass files holding text")


def count_engine(inputs: str | os.PathLike | Sequence[str | os.PathLike], counter: "_core.BpeCounter", *,
                 special_tokens: Sequence[str] = (), also: Sequence["_core.BpeCounter"] = (), text_field=None,
                 engine: str = "process", workers: int | None = None, ray_address: str | None = None,
                 shard_bytes: int | None = None, partitions: int | None = None, num_threads: int = 0,
                 progress: bool = True, _kill_once: str | None = None) -> tuple[CountStats, dict]:
    """count_inputs on an executor (tokbench.exec): shards of files / folders / globs / corpus names /
    fsspec URLs are counted by map tasks into hash-partitioned Rust tables and reduced partition by
    partition into `counter` (and the `also` counters, which must share `special_tokens`). The counts are
    the same whatever the engine, workers, shard size or partitions. Returns (stats, the run's record:
    engine, shards counted, shipped sizes, seconds per phase)."""
    from tokbench import exec as ex

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    t0 = time.perf_counter()
    shards = ex.plan_shards(list(inputs), shard_bytes, text_field)
    parts = limits.at_least("partitions", ex.DEFAULT_PARTITIONS if partitions is None else partitions, 1, 65536)
    tables = tuple(ex.TableSpec(c.pattern, tuple(special_tokens)) for c in (counter, *also))
    task = ex.CountTask(tables, parts, threads=limits.threads(num_threads) if engine == "inline" else 1,
                        kill_once=_kill_once)
    t_plan = time.perf_counter() - t0
    with ex.make_executor(engine, workers, ray_address=ray_address) as executor:
        t1 = time.perf_counter()
        record = ex.run_count(task, shards, executor, [counter, *also], progress=progress)
        record["seconds"] = {"plan": round(t_plan, 3), "start": round(t1 - t0 - t_plan, 3), **record["seconds"]}
    stats = CountStats(texts=record["texts"], bytes=record["bytes"], non_utf8_lines=record["non_utf8_lines"],
                       non_utf8_bytes=record["non_utf8_bytes"], non_utf8_files=dict(record["non_utf8_files"]))
    _counted(stats, counter, inputs, stacklevel=3)
    return stats, record


def train(inputs: str | os.PathLike | Sequence[str | os.PathLike], vocab_size: int, pattern: str | None = "gpt2",
          special_tokens: Sequence[str] = (), min_frequency: int = 2, max_token_length: int | None = None,
          num_threads: int = 0, text_field: str | Sequence[str] | None = None, *,
          counts: "_core.BpeCounter | None" = None, progress: bool = True, engine: str | None = None,
          workers: int | None = None, ray_address: str | None = None) -> Trained:
    """Train a byte-level BPE of vocab_size tokens (specials included) on files / folders / corpus names.

    counts: a counter already filled (e.g. from load_counts); inputs are then added to it.
    engine: inline | process | ray: count on that executor (count_engine; the same counts); None: in
    this process on num_threads (count_inputs). The run's record is in `meta["engine"]`.
    """
    check_vocab_size(vocab_size, special_tokens)
    regex = resolve_pattern(pattern)
    counter = counts if counts is not None else new_counter(pattern, special_tokens)
    record = None
    if engine is None:
        stats = count_inputs(inputs, counter, text_field=text_field, num_threads=num_threads, progress=progress)
    else:
        stats, record = count_engine(inputs, counter, special_tokens=special_tokens, text_field=text_field,
                                     engine=engine, workers=workers, ray_address=ray_address,
                                     num_threads=num_threads, progress=progress)
    trained = train_counts(counter, vocab_size, pattern=regex, special_tokens=special_tokens,
                           min_frequency=min_frequency, max_token_length=max_token_length,
                           stats=stats, progress=progress, num_threads=num_threads)
    if record is not None:
        trained.meta["engine"] = record
    return trained


__all__ = ["check_vocab_size", "CountStats", "NonUtf8Warning", "ShortVocabWarning", "Trained", "shortfall", "count_engine", "count_inputs", "count_texts", "iter_texts", "load_counts",
           "new_counter", "run_cancellable", "save_counts", "train", "train_counts"]
