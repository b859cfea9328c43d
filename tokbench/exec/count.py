"""Counting as map + reduce over shards, on any executor (tokbench.exec.executors).

map (`CountTask`, run where the executor puts it): read one shard (tokbench.exec.shards), count its
pre-tokens into one Rust table per `TableSpec` (a split pattern: the words of BPE training, the runs of
``--mode super``), and return a small metadata dict plus each table cut into `partitions` hash-
partitioned count-table blobs (rust_ext/src/table.rs). reduce: blob j of every map merged in Rust
(`tokbench._core.table_merge`). The driver adds the reduced partitions, which are disjoint, into its
counters one at a time. No Python dict of keys ever crosses a process.

Memory: a map task holds the table of one shard (at most one entry per pre-token of `shard_bytes` of
text) and its blobs; reducer j holds partition j of every map (about 1/partitions of the sum of the
partial tables); the driver holds its final counters plus one reduced partition.

The result does not depend on the executor, the workers, the shard size or the partition count: every
document is read by exactly one shard and integer counts are summed exactly.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tokbench import _core
from tokbench.exec.shards import Shard, ShardStats, iter_shard

DEFAULT_PARTITIONS = 16
BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class TableSpec:
    """One count table: a split regex (None: no split) and the special tokens cut out first."""

    pattern: str | None
    specials: tuple[str, ...] = ()

    def counter(self) -> "_core.BpeCounter":
        return _core.BpeCounter(self.pattern, specials=list(self.specials))


@dataclass(frozen=True)
class CountTask:
    """The map task: picklable, so it runs in this process, a process pool or a Ray worker.

    threads: Rust counting threads inside the task (0: all cores; 1 where the executor runs one task
    per core). kill_once: fault injection for tests: the first task to see that this file does not
    exist creates it and SIGKILLs its own process after counting (the executor must retry the shard)."""

    tables: tuple[TableSpec, ...]
    partitions: int = DEFAULT_PARTITIONS
    threads: int = 1
    kill_once: str | None = None

    @property
    def outputs(self) -> int:
        return len(self.tables) * self.partitions

    def __call__(self, shard: Shard) -> tuple[dict, list[bytes]]:
        t0, c0 = time.perf_counter(), time.process_time()
        counters = [t.counter() for t in self.tables]
        stats = ShardStats()
        batch: list[str] = []
        size = 0
        for text in iter_shard(shard, stats):
            batch.append(text)
            size += len(text)
            if size >= BATCH_BYTES:
                for c in counters:
                    c.count(batch, self.threads)
                batch, size = [], 0
        if batch:
            for c in counters:
                c.count(batch, self.threads)
        if self.kill_once and not os.path.exists(self.kill_once):
            with open(self.kill_once, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        blobs = [b for c in counters for b in c.to_tables(self.partitions)]
        meta = {"shard": shard.index, "texts": stats.texts, "bytes": stats.bytes,
                "non_utf8_lines": stats.non_utf8_lines, "non_utf8_bytes": stats.non_utf8_bytes,
                "non_utf8_files": stats.non_utf8_files, "keys": [len(c) for c in counters],
                "shipped_bytes": sum(len(b) for b in blobs), "pid": os.getpid(),
                "seconds": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3),
                "peak_rss_kb": _peak_rss_kb()}
        return meta, blobs

    def reduce(self, j: int, blobs: Sequence[bytes]) -> bytes:
        """Output j of every map merged (one table's partition j % partitions)."""
        return merge_blobs(blobs)


def _peak_rss_kb() -> int:
    """This process's peak resident set so far (KiB; the worker's, when run in a worker)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def merge_blobs(blobs: Sequence[bytes]) -> bytes:
    """The reduce of one partition (in Rust, GIL released)."""
    return _core.table_merge(list(blobs))


__all__ = ["BATCH_BYTES", "CountTask", "DEFAULT_PARTITIONS", "TableSpec", "merge_blobs"]


def run_count(task: CountTask, shards: Sequence[Shard], executor, into: Sequence["_core.BpeCounter"], *,
              progress: bool = True) -> dict:
    """Count `shards` with `executor` and add table i into `into[i]`; returns the run's record: the
    executor, every shard counted (url, byte range, texts, bytes), shipped sizes and time per phase."""
    from tqdm.auto import tqdm

    if len(into) * task.partitions != task.outputs:
        raise ValueError("one counter per table of the task")
    t0 = time.perf_counter()
    done: dict[int, dict] = {}
    total = sum(s.size for s in shards)
    bar = tqdm(total=total, desc=f"counting ({executor.name})", unit="B", unit_scale=True, disable=not progress,
               leave=False)

    def on_map(meta: dict, shard: Shard) -> None:
        done[shard.index] = meta
        bar.update(shard.size)
        bar.set_postfix_str(f"shards {len(done)}/{len(shards)}")

    reduced = 0
    largest = 0
    t_map = None
    try:
        for j, blob in executor.map_reduce(task, shards, on_map) if shards else ():
            if t_map is None:
                t_map = time.perf_counter()
            reduced += len(blob)
            largest = max(largest, len(blob))
            into[j // task.partitions].add_table(blob)
            del blob
    finally:
        bar.close()
    t1 = time.perf_counter()
    t_map = t_map or t1
    metas = [done[s.index] for s in shards]
    files: dict[str, int] = {}
    for m in metas:
        for f, n in m["non_utf8_files"].items():
            files[f] = files.get(f, 0) + n
    shipped = [m["shipped_bytes"] for m in metas]
    return {
        **executor.describe(),
        "partitions": task.partitions,
        "shards": [{**s.describe(), **{k: v for k, v in m.items() if k not in ("shard", "pid", "non_utf8_files")}}
                   for s, m in zip(shards, metas)],
        "texts": sum(m["texts"] for m in metas),
        "bytes": sum(m["bytes"] for m in metas),
        "non_utf8_lines": sum(m["non_utf8_lines"] for m in metas),
        "non_utf8_bytes": sum(m["non_utf8_bytes"] for m in metas),
        "non_utf8_files": files,
        "map_shipped_bytes": sum(shipped),
        "largest_map_result_bytes": max(shipped, default=0),
        "reduced_bytes": reduced,
        "largest_partition_bytes": largest,
        "retried_tasks": getattr(executor, "retried", 0),
        # the map phase ends when the first reduced partition arrives (reduces start after every map)
        "seconds": {"map": round(t_map - t0, 3), "reduce_and_load": round(t1 - t_map, 3)},
    }


__all__ += ["run_count"]
