"""Executors: map a task over shards, then reduce its byte outputs partition by partition.

One interface, `Executor.map_reduce(task, shards, on_map)`: `task(shard)` returns (meta, blobs) with
`task.outputs` blobs (count tables, tokbench.exec.count); output j of every shard goes to one reduce,
`task.reduce(j, blobs) -> bytes` (a Rust merge of count tables, or statistics of the merged table),
and the reduced outputs are yielded as (j, bytes), one at a time. `on_map(meta,
shard)` is called once per shard, in the driver, when its map is done (progress, provenance).

- `inline`: everything in this process (tests; tasks may use all cores through Rust threads).
- `process`: the stdlib process pool (spawned workers). Map outputs are written by the workers to
  a private spill folder (the filesystem is the shuffle), so the driver never holds a partial result;
  reducers read their partition's files. A worker that dies (killed, out of memory) breaks the pool:
  a new pool is started and every shard whose result was not in yet is run again (a shard's result
  is taken once, so nothing is counted twice), at most `max_retries` times.
- `ray`: Ray core tasks (``pip install 'tokbench[ray]'``). Map outputs stay in the object store
  (`num_returns`), reducer j fetches only output j of every map; tasks are retried by Ray
  (`max_retries`) when their worker dies. Address None: a local cluster of `workers` CPUs is started
  and shut down; "auto" or HOST:PORT: an existing cluster, with at most `workers` tasks in flight.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence

from tokbench import limits
from tokbench.errors import TokbenchError
from tokbench.exec.shards import Shard

ENGINES = ("inline", "process", "ray")
MAX_WORKERS = 4096
DEFAULT_RETRIES = 3


def default_workers() -> int:
    return os.cpu_count() or 1


class Executor:
    name = "?"

    def __init__(self, workers: int | None = None, max_retries: int = DEFAULT_RETRIES):
        self.workers = limits.at_least("workers", default_workers() if workers is None else workers, 1,
                                       MAX_WORKERS, what="processes")
        self.max_retries = limits.at_least("max_retries", max_retries, 0, 100)

    def map_reduce(self, task, shards: Sequence[Shard], on_map: Callable) -> Iterator[tuple[int, bytes]]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self.workers}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InlineExecutor(Executor):
    name = "inline"

    def __init__(self, workers: int | None = 1, max_retries: int = DEFAULT_RETRIES):
        super().__init__(1 if workers is None else workers, max_retries)

    def map_reduce(self, task, shards, on_map):
        outs = []
        for s in shards:
            meta, blobs = task(s)
            on_map(meta, s)
            outs.append(blobs)
        for j in range(task.outputs):
            yield j, task.reduce(j, [o[j] for o in outs])
            for o in outs:
                o[j] = b""  # release it


# ---- process pool ----------------------------------------------------------------------------
def _spill(task, shard: Shard, folder: str) -> tuple[dict, list[tuple[str, int]]]:
    """Run in a worker: the map, its outputs written to folder (temp name + rename: a killed worker
    leaves no file that looks complete)."""
    meta, blobs = task(shard)
    paths = []
    for j, b in enumerate(blobs):
        p = os.path.join(folder, f"s{shard.index:07d}-o{j:05d}.tbct")
        tmp = f"{p}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(b)
        os.replace(tmp, p)
        paths.append((p, len(b)))
    return meta, paths


def _reduce_files(task, j: int, paths: Sequence[str]) -> bytes:
    blobs = []
    for p in paths:
        with open(p, "rb") as f:
            blobs.append(f.read())
    return task.reduce(j, blobs)


class ProcessExecutor(Executor):
    name = "process"

    def __init__(self, workers: int | None = None, max_retries: int = DEFAULT_RETRIES, spill_dir: str | None = None):
        super().__init__(workers, max_retries)
        self.spill_dir = spill_dir
        self.retried = 0

    def _pool(self, n: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))

    def _run(self, fn, jobs: dict, n: int) -> Iterator[tuple[object, object]]:
        """Yield (key, fn(*args)) for jobs {key: args}, each key once; a broken pool is replaced and the
        unfinished keys are submitted again (each at most max_retries more times)."""
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        todo = dict(jobs)
        tries = dict.fromkeys(jobs, 0)
        while todo:
            pool = self._pool(min(n, len(todo)))
            futs = {}
            try:
                for key, args in todo.items():
                    tries[key] += 1
                    futs[pool.submit(fn, *args)] = key
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        key = futs[f]
                        try:
                            res = f.result()
                        except BrokenProcessPool:
                            continue
                        if key in todo:
                            del todo[key]
                            yield key, res
            except BaseException:
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for p in procs:
                    try:
                        p.kill()
                    except (OSError, AttributeError):
                        pass
                raise
            pool.shutdown(wait=True)
            if todo:
                self.retried += len(todo)
                worst = max(todo, key=lambda k: tries[k])
                if tries[worst] > self.max_retries:
                    raise TokbenchError(f"a worker process died {tries[worst]} times on task {worst!r} "
                                        "(killed, or out of memory)",
                                        fix="give the workers more memory, use fewer --workers or smaller shards")

    def map_reduce(self, task, shards, on_map):
        if len(shards) <= 1:  # one shard: no pool to start; the task's Rust threads use the workers' cores
            if hasattr(task, "threads"):
                task = dataclasses.replace(task, threads=self.workers)
            yield from InlineExecutor(1).map_reduce(task, shards, on_map)
            return
        folder = tempfile.mkdtemp(prefix="tokbench-count-", dir=self.spill_dir)
        try:
            by_index = {s.index: s for s in shards}
            files: dict[int, list[str]] = {}
            for idx, (meta, paths) in self._run(_spill, {s.index: (task, s, folder) for s in shards}, self.workers):
                files[idx] = [p for p, _ in paths]
                on_map(meta, by_index[idx])
            order = [s.index for s in shards]
            jobs = {j: (task, j, [files[i][j] for i in order]) for j in range(task.outputs)}
            got: dict[int, bytes] = {}
            nxt = 0
            for j, blob in self._run(_reduce_files, jobs, self.workers):
                got[j] = blob
                while nxt in got:  # in partition order
                    yield nxt, got.pop(nxt)
                    nxt += 1
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# ---- Ray -------------------------------------------------------------------------------------
def _ray_map(task, shard):
    meta, blobs = task(shard)
    return (meta, *blobs)


def _ray_reduce(task, j, *blobs):
    return task.reduce(j, list(blobs))


def _import_ray():
    from tokbench.extras import need

    need("ray", what="--engine ray")
    import ray

    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://").strip("[]") or "127.0.0.1"
    try:
        port_n = int(port)
    except ValueError:
        raise TokbenchError(f"Ray address {address!r} is not auto or HOST:PORT",
                            fix="pass --ray-address auto, HOST:PORT, or nothing for a local cluster") from None
    try:
        with socket.create_connection((host, port_n), timeout=timeout):
            pass
    except OSError as exc:
        raise TokbenchError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
                            fix="start it (ray start --head) and pass the address it prints, or pass no "
                                "--ray-address to run a local cluster") from None


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, workers: int | None = None, max_retries: int = DEFAULT_RETRIES, address: str | None = None,
                 object_store_mb: int | None = None):
        super().__init__(workers, max_retries)
        ray = self.ray = _import_ray()
        self.address = address
        self.own = False
        if ray.is_initialized():
            pass
        elif not address or address == "local":
            store = limits.optional("object_store_mb", object_store_mb, 80, 1 << 20, what="MiB")
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                     object_store_memory=(store or 256) << 20, configure_logging=False)
            self.own = True
        else:
            if address != "auto":
                _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise TokbenchError(f"cannot connect to the Ray cluster at {address} ({line})",
                                    fix="start one (ray start --head) or pass no --ray-address to run a "
                                        "local cluster") from None
            self.own = True  # the connection (not the cluster) is ours to close

    def describe(self) -> dict:
        out = {**super().describe(), "ray": self.ray.__version__, "address": self.address or "local"}
        try:
            out["cluster_cpus"] = self.ray.cluster_resources().get("CPU")
        except Exception:  # noqa: BLE001 - informational only
            pass
        return out

    def _get(self, ref):
        from ray.exceptions import RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TokbenchError):
                raise TokbenchError(str(cause)) from None
            raise

    def map_reduce(self, task, shards, on_map):
        ray = self.ray
        n_out = task.outputs
        rmap = ray.remote(num_cpus=1, max_retries=self.max_retries, num_returns=n_out + 1)(_ray_map)
        rred = ray.remote(num_cpus=1, max_retries=self.max_retries)(_ray_reduce)
        task_ref = ray.put(task)
        outs: dict[int, list] = {}
        inflight: dict = {}
        queue = list(shards)
        refs_all = []
        try:
            while queue or inflight:
                while queue and len(inflight) < self.workers:
                    s = queue.pop(0)
                    refs = rmap.remote(task_ref, s)
                    refs_all.append(refs[0])
                    inflight[refs[0]] = (s, refs[1:])
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for r in ready:
                    s, blob_refs = inflight.pop(r)
                    on_map(self._get(r), s)
                    outs[s.index] = blob_refs
            order = [s.index for s in shards]
            pending = list(range(n_out))
            running: dict[int, object] = {}
            while pending or running:
                while pending and len(running) < self.workers:
                    j = pending.pop(0)
                    running[j] = rred.remote(task_ref, j, *[outs[i][j] for i in order])
                j = min(running)
                blob = self._get(running.pop(j))
                for i in order:
                    outs[i][j] = None  # let the object store free map output j
                yield j, blob
        except BaseException:
            for r in list(inflight) + refs_all:
                try:
                    ray.cancel(r, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            raise

    def close(self) -> None:
        if self.own and self.ray.is_initialized():
            self.ray.shutdown()
        self.own = False


def make_executor(engine: str = "process", workers: int | None = None, *, ray_address: str | None = None,
                  max_retries: int = DEFAULT_RETRIES) -> Executor:
    """The executor named `engine` (inline | process | ray)."""
    if engine == "inline":
        return InlineExecutor(1 if workers is None else workers, max_retries)
    if engine == "process":
        return ProcessExecutor(workers, max_retries)
    if engine == "ray":
        return RayExecutor(workers, max_retries, address=ray_address)
    raise TokbenchError(f"unknown engine {engine!r}", fix=f"use one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Executor", "InlineExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]
