"""ANN decoding over huge output vocabularies: an index over the output rows W (n, d) with bias b that returns the
top-k logits <h, w_i> + b_i for a batch of hidden states h, against the exact BLAS matmul.

    from tokbench.dynamic.ann import OutputIndex, exact_topk, evaluate
    ex = exact_topk(rows, bias, H, k=20)                        # the reference: ids, scores, log-sum-exp per query
    ix = OutputIndex(rows, bias, kind="hnsw", m=32, ef_search=128)
    ids, scores = ix.search(H, k=20)                            # scores: exact logits of the returned ids
    evaluate(ix, H, ex)                                         # recall@1/@k, top-1 agreement, mass outside

How the bias is folded in (metric "mips"):
- kinds "flat" (faiss IndexFlatIP / fp16 ScalarQuantizer) search inner products directly on the augmented
  vectors [w, b] . [h, 1] = <h, w> + b, which is exact;
- kinds "ivf" and "hnsw" need a metric (k-means cells and graph neighbourhoods rely on distances: under a bare
  inner product a row is not its own nearest neighbour and large-norm rows hub everything), so the augmented rows
  get one more coordinate sqrt(M^2 - |[w, b]|^2) (M = the largest augmented norm) and the query a 0 there:
  |q - x|^2 = |h|^2 + 1 + M^2 - 2 (<h, w> + b), so the L2 nearest neighbours are exactly the top logits
  (the MIPS-to-L2 transform of Bachrach et al. 2014).
Metric "cosine" is the reference repo's search: L2-normalised rows and query, no bias.

Storage: "fp32", "fp16" (faiss ScalarQuantizer QT_fp16) or "sq8" (QT_8bit). The index returns `rerank`
candidates (>= k) which are rescored exactly from `rows` (which may be fp16: the exact reference computes in
fp32 from the same stored values), so the scores returned are true logits and the order is exact among them.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from tokbench import limits
from tokbench.errors import TokbenchError

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("mips", "cosine")
STORAGES = ("fp32", "fp16", "sq8")
MAX_ROWS = 20_000_000
MAX_K = 4096
CHUNK = 65536


def _faiss():
    try:
        import faiss
    except ImportError:
        raise TokbenchError("ANN decoding needs the Python package faiss-cpu, which is not installed",
                            fix="pip install 'tokbench[ann]'") from None
    return faiss


@contextmanager
def blas_threads(n: int | None):
    """Limit BLAS (numpy) and faiss OpenMP threads to n inside the block (None: leave them)."""
    if not n:
        yield
        return
    n = limits.threads(n, "threads") or (os.cpu_count() or 1)
    faiss = _faiss()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        if threadpool_limits is None:
            yield
        else:
            with threadpool_limits(limits=n):
                yield
    finally:
        faiss.omp_set_num_threads(old)


def _check_rows(rows, bias):
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
        raise TokbenchError(f"the output rows must be a 2-d array (n, d), got "
                            f"{getattr(rows, 'shape', type(rows).__name__)}", fix="pass the output head matrix")
    if rows.dtype not in (np.float16, np.float32):
        raise TokbenchError(f"the output rows must be float16 or float32, got {rows.dtype}", fix="convert them")
    limits.at_least("rows", rows.shape[0], 1, MAX_ROWS, what="output rows")
    if bias is None:
        return None
    bias = np.asarray(bias, dtype=np.float32)
    if bias.shape != (rows.shape[0],) or not np.isfinite(bias).all():
        raise TokbenchError(f"the bias must be {rows.shape[0]:,} finite numbers, got shape {bias.shape}",
                            fix="pass one bias per output row, or none")
    return None if not bias.any() else bias


def _check_queries(h, d: int) -> np.ndarray:
    h = np.asarray(h, dtype=np.float32)
    if h.ndim == 1:
        h = h[None]
    if h.ndim != 2 or h.shape[1] != d or h.shape[0] < 1:
        raise TokbenchError(f"hidden states must be (batch, {d}), got {h.shape}",
                            fix="pass final hidden states of the model whose head the index holds")
    if not np.isfinite(h).all():
        raise TokbenchError("hidden states hold NaN or infinity", fix="check the model run")
    return np.ascontiguousarray(h)


def _k(k, n: int) -> int:
    return limits.at_least("k", k, 1, min(MAX_K, n), what="candidates per query")


def _chunks(n: int, chunk: int = CHUNK):
    for a in range(0, n, chunk):
        yield a, min(n, a + chunk)


@dataclass
class Exact:
    """The exact reference for a batch of queries: top-k ids and logits (descending) and log-sum-exp over all rows."""

    ids: np.ndarray
    scores: np.ndarray
    lse: np.ndarray
    seconds: float = 0.0
    bias: np.ndarray | None = None


def _merge_topk(ids, scores, new_ids, new_scores, k):
    ids = np.concatenate([ids, new_ids], axis=1)
    scores = np.concatenate([scores, new_scores], axis=1)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else np.arange(scores.shape[1])[None].repeat(len(scores), 0)
    return np.take_along_axis(ids, part, 1), np.take_along_axis(scores, part, 1)


def exact_topk(rows: np.ndarray, bias, h, k: int = 20, *, metric: str = "mips", chunk: int = CHUNK) -> Exact:
    """Top-k of h @ rows.T + bias by BLAS, over row chunks (fp16 rows are converted chunk by chunk), plus the exact
    log-sum-exp of all logits per query (metric "mips"). metric "cosine": top-k cosine, no bias (lse is nan)."""
    if metric not in METRICS:
        raise TokbenchError(f"unknown metric {metric!r}", fix=f"use one of {', '.join(METRICS)}")
    bias = _check_rows(rows, bias)
    h = _check_queries(h, rows.shape[1])
    k = _k(k, rows.shape[0])
    t0 = time.perf_counter()
    q = h / np.linalg.norm(h, axis=1, keepdims=True).clip(1e-30) if metric == "cosine" else h
    nq = len(q)
    ids = np.empty((nq, 0), dtype=np.int64)
    scores = np.empty((nq, 0), dtype=np.float32)
    m = np.full(nq, -np.inf)
    s = np.zeros(nq)
    for a, b in _chunks(rows.shape[0], chunk):
        w = rows[a:b] if rows.dtype == np.float32 else rows[a:b].astype(np.float32)
        logits = q @ w.T
        if metric == "cosine":
            logits /= np.linalg.norm(w, axis=1).clip(1e-30)[None]
        elif bias is not None:
            logits += bias[None, a:b]
        if metric == "mips":
            cm = logits.max(axis=1).astype(np.float64)
            nm = np.maximum(m, cm)
            s = s * np.exp(m - nm) + np.exp(logits - nm[:, None].astype(np.float32)).sum(axis=1, dtype=np.float64)
            m = nm
        kk = min(k, b - a)
        part = np.argpartition(-logits, kk - 1, axis=1)[:, :kk] if b - a > kk else np.arange(b - a)[None].repeat(nq, 0)
        ids, scores = _merge_topk(ids, scores, part + a, np.take_along_axis(logits, part, 1), k)
    order = np.argsort(-scores, axis=1, kind="stable")
    lse = (m + np.log(s)) if metric == "mips" else np.full(nq, np.nan)
    return Exact(np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1), lse,
                 time.perf_counter() - t0, bias)


def logits_of(rows: np.ndarray, bias, h: np.ndarray, ids: np.ndarray, metric: str = "mips") -> np.ndarray:
    """Exact scores of candidate ids (nq, c) for queries h (nq, d): <h, w> + b, or the cosine."""
    w = rows[ids.reshape(-1)].astype(np.float32).reshape(*ids.shape, rows.shape[1])
    out = np.einsum("qcd,qd->qc", w, h.astype(np.float32))
    if metric == "cosine":
        out /= (np.linalg.norm(w, axis=2) * np.linalg.norm(h, axis=1)[:, None]).clip(1e-30)
    elif bias is not None:
        out += bias[ids]
    return out


def _mass_outside(h, cand: np.ndarray, dot, bias, lse) -> np.ndarray:
    """1 - sum over the unique candidates of exp(logit - lse), per query; dot(h_q, ids (1, c)) -> (1, c) <h, w>."""
    inside = np.zeros(len(h))
    for q in range(len(h)):
        u = np.unique(cand[q])
        lg = dot(h[q:q + 1], u[None])[0].astype(np.float64) + (0.0 if bias is None else bias[u])
        inside[q] = np.exp(lg - lse[q]).sum()
    return np.clip(1.0 - inside, 0.0, 1.0)


def softmax_mass_outside(h, candidates, rows: np.ndarray, bias=None, *, lse=None) -> np.ndarray:
    """Per query, the exact softmax probability (over all rows, with bias) of the rows NOT among `candidates`
    (nq, c): 1 - sum_c exp(logit_c - logsumexp(all logits)). Pass `lse` from exact_topk to skip the full pass."""
    bias = _check_rows(rows, bias)
    h = _check_queries(h, rows.shape[1])
    cand = np.asarray(candidates, dtype=np.int64)
    if cand.ndim != 2 or len(cand) != len(h):
        raise TokbenchError(f"candidates must be (batch, c) ids for {len(h)} queries, got {cand.shape}",
                            fix="pass one row of candidate ids per hidden state")
    if cand.size and (cand.min() < 0 or cand.max() >= rows.shape[0]):
        raise TokbenchError(f"candidate ids must lie in 0..{rows.shape[0] - 1}", fix="pass ids the index returned")
    if lse is None:
        lse = exact_topk(rows, bias, h, 1).lse
    return _mass_outside(h, cand, lambda q, ids: logits_of(rows, None, q, ids), bias, lse)


class OutputIndex:
    """A FAISS index over output rows with bias (see the module docstring for the transforms and storage).

    kind: flat | ivf | hnsw; metric: mips (the model's logits, bias folded in) | cosine (the reference repo's);
    storage: fp32 | fp16 | sq8. IVF: nlist cells (default ~4 sqrt(n)), nprobe searched, trained on `train_rows`
    sampled rows. HNSW: m links, ef_construction, ef_search. rerank: candidates fetched and rescored exactly.
    `rows` is kept by reference (not copied) for the rescoring."""

    def __init__(self, rows: np.ndarray, bias=None, *, kind: str = "hnsw", metric: str = "mips",
                 storage: str = "fp16", nlist: int | None = None, nprobe: int = 32, m: int = 32,
                 ef_construction: int = 80, ef_search: int = 128, rerank: int = 64, train_rows: int | None = None,
                 threads: int | None = None, seed: int = 0, progress: bool = False):
        faiss = _faiss()
        for name, value, allowed in (("kind", kind, KINDS), ("metric", metric, METRICS), ("storage", storage, STORAGES)):
            if value not in allowed:
                raise TokbenchError(f"unknown index {name} {value!r}", fix=f"use one of {', '.join(allowed)}")
        self.bias = _check_rows(rows, bias) if metric == "mips" else None
        self.rows, self.kind, self.metric, self.storage = rows, kind, metric, storage
        n, d = rows.shape
        self.nprobe = limits.at_least("nprobe", nprobe, 1, 1_000_000)
        self.ef_search = limits.at_least("ef_search", ef_search, 1, 100_000)
        self.rerank = limits.at_least("rerank", rerank, 1, MAX_K)
        m = limits.at_least("m", m, 2, 256, what="HNSW links per node")
        ef_construction = limits.at_least("ef_construction", ef_construction, 1, 100_000)
        self.nlist = limits.at_least("nlist", nlist if nlist is not None else max(1, min(65536, int(4 * math.sqrt(n)))),
                                     1, max(1, n), what="IVF cells, at most the rows")
        self.threads = threads
        self.params = {"kind": kind, "metric": metric, "storage": storage, "rerank": self.rerank}
        self.params |= ({"m": m, "ef_construction": ef_construction, "ef_search": self.ef_search} if kind == "hnsw"
                        else {"nlist": self.nlist, "nprobe": self.nprobe} if kind == "ivf" else {})
        # the transform: augmented dimension and the norm bound M for the L2 coordinate
        self._l2 = metric == "mips" and kind != "flat"
        self._aug = metric == "mips"
        self.dim = d + (1 if self._aug else 0) + (1 if self._l2 else 0)
        self._max_norm2 = 0.0
        if self._l2:
            for a, b in _chunks(n):
                self._max_norm2 = max(self._max_norm2, float((self._vectors(a, b, extra=False) ** 2).sum(1).max()))
        sq = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}.get(storage)
        # flat: inner product on [w, b] . [h, 1] (or unit vectors); ivf / hnsw: L2 after the transform
        fmetric = faiss.METRIC_INNER_PRODUCT if kind == "flat" else faiss.METRIC_L2
        t0 = time.perf_counter()
        with blas_threads(threads):
            if kind == "flat":
                index = faiss.IndexFlat(self.dim, fmetric) if sq is None else faiss.IndexScalarQuantizer(self.dim, sq, fmetric)
            elif kind == "hnsw":
                index = faiss.IndexHNSWFlat(self.dim, m) if sq is None else faiss.IndexHNSWSQ(self.dim, sq, m)
                index.hnsw.efConstruction = ef_construction
            else:
                self._quantizer = faiss.IndexFlatL2(self.dim)
                index = (faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist) if sq is None else
                         faiss.IndexIVFScalarQuantizer(self._quantizer, self.dim, self.nlist, sq))
            if not index.is_trained:
                ntrain = min(n, train_rows or max(32 * self.nlist, 16384))
                if kind == "ivf":
                    index.cp.niter = 10  # k-means iterations: 10 instead of 25 (build time on 2 cores)
                pick = np.sort(np.random.default_rng(seed).choice(n, ntrain, replace=False))
                index.train(self._vectors_at(pick))
            self.train_seconds = time.perf_counter() - t0
            self.index = index
            from tqdm import tqdm

            bar = tqdm(total=n, unit="row", desc=f"build {kind}", disable=not progress, leave=False)
            for a, b in _chunks(n):
                index.add(self._vectors(a, b))
                bar.update(b - a)
            bar.close()
        self.build_seconds = time.perf_counter() - t0
        self._set_search_params()

    # vectors -------------------------------------------------------------------------------------------------
    def _transform(self, w: np.ndarray, bias: np.ndarray | None, extra: bool = True) -> np.ndarray:
        w = w.astype(np.float32)
        if self.metric == "cosine":
            return np.ascontiguousarray(w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-30))
        x = np.concatenate([w, (np.zeros(len(w), np.float32) if bias is None else bias)[:, None]], axis=1)
        if extra and self._l2:
            x = np.concatenate([x, np.sqrt(np.maximum(self._max_norm2 - (x * x).sum(1), 0))[:, None]], axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _vectors(self, a: int, b: int, extra: bool = True) -> np.ndarray:
        return self._transform(self.rows[a:b], None if self.bias is None else self.bias[a:b], extra)

    def _vectors_at(self, pick: np.ndarray) -> np.ndarray:
        return self._transform(self.rows[pick], None if self.bias is None else self.bias[pick])

    def _queries(self, h: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return np.ascontiguousarray(h / np.linalg.norm(h, axis=1, keepdims=True).clip(1e-30))
        parts = [h, np.ones((len(h), 1), np.float32)] + ([np.zeros((len(h), 1), np.float32)] if self._l2 else [])
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _set_search_params(self):
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.ef_search
        elif self.kind == "ivf":
            self.index.nprobe = self.nprobe

    def set_params(self, *, ef_search: int | None = None, nprobe: int | None = None, rerank: int | None = None):
        """Change search-time parameters without rebuilding."""
        if ef_search is not None:
            self.ef_search = self.params["ef_search"] = limits.at_least("ef_search", ef_search, 1, 100_000)
        if nprobe is not None:
            self.nprobe = self.params["nprobe"] = limits.at_least("nprobe", nprobe, 1, 1_000_000)
        if rerank is not None:
            self.rerank = self.params["rerank"] = limits.at_least("rerank", rerank, 1, MAX_K)
        self._set_search_params()

    # search --------------------------------------------------------------------------------------------------
    def search(self, h, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids (nq, k) and their exact scores (logits with bias; cosines in cosine mode), best first.
        A slot the index could not fill holds id -1 and score -inf."""
        h = _check_queries(h, self.rows.shape[1])
        k = _k(k, self.rows.shape[0])
        with blas_threads(self.threads):
            _, ids = self.index.search(self._queries(h), max(k, self.rerank))
        ok = ids >= 0
        scores = logits_of(self.rows, self.bias, h, np.where(ok, ids, 0), self.metric)
        scores[~ok] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)

    @property
    def query_dim(self) -> int:
        return self.rows.shape[1]

    def dot(self, h, ids: np.ndarray) -> np.ndarray:
        """<h, w_id> without bias for candidate ids (nq, c), exact from the stored rows."""
        return logits_of(self.rows, None, _check_queries(h, self.rows.shape[1]), ids)

    def nbytes(self) -> int:
        """Bytes the index holds (codes, graph links or inverted lists, quantizer), excluding the `rows` copy."""
        faiss = _faiss()
        ix = self.index
        if self.kind == "flat":
            return int(ix.sa_code_size()) * ix.ntotal
        if self.kind == "hnsw":
            h = ix.hnsw
            return (int(ix.storage.sa_code_size()) * ix.ntotal + h.neighbors.size() * 4 + h.offsets.size() * 8
                    + h.levels.size() * 4)
        inv = faiss.extract_index_ivf(ix).invlists
        listed = sum(inv.list_size(i) for i in range(inv.nlist))
        return listed * (int(inv.code_size) + 8) + self.nlist * self.dim * 4


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:, :k] & truth[:, :k]| / k (ids; -1 never matches)."""
    found, truth = np.asarray(found), np.asarray(truth)
    k = limits.at_least("k", k, 1, min(found.shape[1], truth.shape[1]), what="columns of both id arrays")
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / k


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process in bytes (Linux /proc; zeros elsewhere)."""
    cur = peak = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return cur, peak


def latency(fn, queries: np.ndarray, batch: int, repeats: int) -> float:
    """Median seconds of fn(batch of queries) over `repeats` consecutive batches (cycling through the queries)."""
    times = []
    for r in range(repeats):
        a = (r * batch) % max(1, len(queries) - batch + 1)
        q = queries[a:a + batch]
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def evaluate(index, h, exact: Exact, k: int = 20) -> dict:
    """Recall of an index (OutputIndex, or tokbench.dynamic.factored.FactoredIndex: anything with query_dim,
    search and dot) against the exact reference (computed with the same rows and bias, metric mips):
    recall@1 = share of queries whose exact argmax is among the k returned; recall@k = mean overlap of the
    top-k sets / k; top1 = share whose first returned id is the exact argmax; mass_outside = mean (and max)
    exact softmax probability of the rows not returned."""
    h = _check_queries(h, index.query_dim)
    k = limits.at_least("k", k, 1, exact.ids.shape[1], what="at most the reference's k")
    ids, _ = index.search(h, k)
    mass = _mass_outside(h, np.where(ids >= 0, ids, exact.ids[:, :1]), index.dot, exact.bias, exact.lse) \
        if not np.isnan(exact.lse).any() else np.full(len(h), np.nan)
    return {"recall@1": float(np.mean([t in set(f.tolist()) for f, t in zip(ids, exact.ids[:, 0])])),
            f"recall@{k}": recall_at(ids, exact.ids, k), "top1": float(np.mean(ids[:, 0] == exact.ids[:, 0])),
            "mass_outside_mean": float(np.mean(mass)), "mass_outside_max": float(np.max(mass))}


def measure(index, h, exact: Exact, k: int = 20, *, repeats: int = 30, batch: int = 32) -> dict:
    """evaluate() plus latency: median seconds of index.search at batch 1 and at `batch` (cycling through h),
    build seconds and index bytes."""
    h = _check_queries(h, index.query_dim)
    out = {"params": dict(index.params), **evaluate(index, h, exact, k)}
    out["latency_b1_s"] = latency(lambda q: index.search(q, k), h, 1, repeats)
    out[f"latency_b{batch}_s"] = latency(lambda q: index.search(q, k), h, batch, max(3, repeats // 4))
    out["build_s"] = index.build_seconds
    out["index_bytes"] = index.nbytes()
    return out


def exact_latency(rows32: np.ndarray, bias, h, k: int = 20, *, repeats: int = 10, batch: int = 32) -> dict:
    """Latency of the exact reference on float32 rows held in memory (one BLAS matmul + a top-k partition)."""
    if rows32.dtype != np.float32:
        raise TokbenchError("the exact baseline times float32 rows", fix="pass rows.astype(np.float32)")
    fn = lambda q: exact_topk(rows32, bias, q, k, chunk=rows32.shape[0])  # noqa: E731
    return {"latency_b1_s": latency(fn, h, 1, repeats), f"latency_b{batch}_s": latency(fn, h, batch, max(3, repeats // 3)),
            "index_bytes": rows32.nbytes}


__all__ = ["KINDS", "METRICS", "STORAGES", "Exact", "OutputIndex", "blas_threads", "evaluate", "exact_latency",
           "exact_topk", "latency", "logits_of", "measure", "recall_at", "rss_bytes", "softmax_mass_outside"]
