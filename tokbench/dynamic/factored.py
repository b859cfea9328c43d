"""Factored output index: the exact top-k over output rows that are sparse linear combinations of base rows.

Every training-free row tokbench makes for a dynamic token (`mean`, `position_mean`, `omp` over the model's own
table: tokbench.embeddings) is w_t = sum_j c_tj a_j over atoms a_j: the model's n_base head rows, plus optional
extra atoms that are not outputs themselves (the mean row that omp shrinks towards and empty decompositions fall
back to). So the logits factor exactly:

    l_t = sum_j c_tj (h . a_j) + b_t

and scoring 1M rows costs one pass over the base rows and atoms, one pass over the sparse coefficients of the
combined rows, the bias and a top-k that never sorts all rows. engine "rust" (tokbench._core.FactoredTopk, GIL
released, float32 accumulation over float32 or bfloat16 atoms: "auto" storage picks bfloat16 only when it holds
every atom exactly, as for a head stored in bfloat16 like SmolLM2's) or "numpy" (BLAS matmul + scipy CSR). The result is the exact top-k up to float rounding
(the sums are taken in another order than h . w_t). Output ids: 0..n_base-1 are the base rows, n_base + r is
row r of the coefficient matrix.

    from tokbench.dynamic.factored import FactoredIndex, combinations_from_records
    coeffs, atoms = combinations_from_records(new_rows.records, n_base, rows=new_rows.rows, base_rows=head)
    ix = FactoredIndex(head, coeffs, bias=None, atoms=atoms)
    ids, scores = ix.search(H, k=20)

It applies only to rows given as combinations. Rows a learned pooling net (or tokenadapt, random) makes are not:
`combinations_from_records` says so in one line, and only the FAISS kinds (tokbench.dynamic.ann.OutputIndex)
apply to them.
"""
from __future__ import annotations

import time

import numpy as np

from tokbench import limits
from tokbench.dynamic.ann import MAX_ROWS, _check_queries, _chunks, _k, blas_threads
from tokbench.errors import TokbenchError

COMBINATION_METHODS = ("subword", "mean", "position_mean", "omp", "copy", "zero")
QUERY_BLOCK = 32
ENGINES = ("auto", "rust", "numpy")
PREFILTERS = ("none", "int8")


def _sparse():
    try:
        import scipy.sparse as sp
    except ImportError:
        raise TokbenchError("the factored index needs the Python package scipy, which is not installed",
                            fix="pip install 'tokbench[ann]'") from None
    return sp


def _as_csr(coeffs, n_cols: int):
    """coeffs as a float32 CSR matrix with n_cols columns (a scipy sparse matrix, a dense 2-d array, or a tuple
    (indptr, indices, data)); one-line errors for ids out of range, bad shapes, non-finite values."""
    sp = _sparse()
    if isinstance(coeffs, tuple) and len(coeffs) == 3:
        indptr, indices, data = (np.asarray(x) for x in coeffs)
        if indptr.ndim != 1 or len(indptr) < 1 or indices.shape != data.shape or indices.ndim != 1 \
                or indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
            raise TokbenchError("the coefficients (indptr, indices, data) are not a valid CSR layout",
                                fix="indptr must start at 0, never decrease and end at len(indices) == len(data)")
        if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
            raise TokbenchError(f"coefficient columns must lie in 0..{n_cols - 1} (the base rows and atoms), got "
                                f"{int(indices.min())}..{int(indices.max())}", fix="index the base rows by id")
        m = sp.csr_matrix((data.astype(np.float32), indices.astype(np.int32), indptr.astype(np.int64)),
                          shape=(len(indptr) - 1, n_cols))
    elif sp.issparse(coeffs) or (isinstance(coeffs, np.ndarray) and coeffs.ndim == 2):
        if coeffs.shape[1] != n_cols:
            raise TokbenchError(f"the coefficient matrix has {coeffs.shape[1]:,} columns, not {n_cols:,} (one per base "
                                "row and atom)", fix="give one column per base row (plus one per extra atom)")
        m = sp.csr_matrix(coeffs, dtype=np.float32)
    else:
        raise TokbenchError(f"coefficients must be a sparse matrix, a 2-d array or (indptr, indices, data), got "
                            f"{type(coeffs).__name__}", fix="pass a scipy.sparse CSR matrix over the base ids")
    if not np.isfinite(m.data).all():
        raise TokbenchError("the coefficients hold NaN or infinity", fix="check how the rows were made")
    m.sort_indices()
    return m


class FactoredIndex:
    """Exact top-k over n_base base rows plus coeffs.shape[0] rows that are combinations of them (module docstring).

    base_rows: (n_base, d) float16 / float32, the model's head rows (outputs 0..n_base-1).
    coeffs: (n_extra, n_base + len(atoms)) coefficients (scipy sparse, dense or (indptr, indices, data)).
    atoms: (a, d) extra rows the coefficients may use (columns n_base..), not outputs themselves; or None.
    bias: (n_base + n_extra,) one bias per output row (free: not combined), or None.
    threads: threads inside search (None: BLAS as it is; all cores for the Rust kernel). engine: auto (rust when
    the extension has it) | rust | numpy; storage: auto | fp32 | bf16 (rust only; bf16 must be lossless).
    prune (Rust): score only the convex rows that hold a high-logit atom when those are under rows / prune
    (0: always one pass over all rows). prefilter (Rust): "none", or "int8": the atom pass first reads int8 copies
    of the atoms (one scale per row; half the bytes of bfloat16) and bounds each approximate logit's error by
    ||a - a_int8|| ||h|| (Cauchy-Schwarz, plus float rounding); only the rows whose upper bound reaches the k-th best
    lower bound are rescored with the exact atoms, so the result is the same top-k and the same scores as without
    it. Search scores are the exact logits (float32 sums)."""

    kind = "factored"

    def __init__(self, base_rows: np.ndarray, coeffs, bias=None, *, atoms: np.ndarray | None = None,
                 threads: int | None = None, engine: str = "auto", storage: str = "auto", prune: int = 4,
                 prefilter: str = "none"):
        t0 = time.perf_counter()
        if not isinstance(base_rows, np.ndarray) or base_rows.ndim != 2 or min(base_rows.shape) < 1 \
                or base_rows.dtype not in (np.float16, np.float32):
            raise TokbenchError(f"the base rows must be a float16/float32 (n_base, d) array, got "
                                f"{getattr(base_rows, 'shape', type(base_rows).__name__)} "
                                f"{getattr(base_rows, 'dtype', '')}", fix="pass the model's head matrix")
        n_base, d = base_rows.shape
        atoms = np.zeros((0, d), np.float32) if atoms is None else np.asarray(atoms, dtype=np.float32)
        if atoms.ndim == 1:
            atoms = atoms[None]
        if atoms.ndim != 2 or atoms.shape[1] != d:
            raise TokbenchError(f"extra atoms must be (a, {d}) rows, got {atoms.shape}", fix="pass rows of width d")
        self.table = np.ascontiguousarray(np.concatenate([np.asarray(base_rows, np.float32), atoms]))
        if not np.isfinite(self.table).all():
            raise TokbenchError("the base rows or atoms hold NaN or infinity", fix="check the model's head")
        self.coeffs = _as_csr(coeffs, len(self.table))
        self.n_base, self.n_atoms, self.n_extra, self.dim = n_base, len(atoms), self.coeffs.shape[0], d
        self.n = limits.at_least("rows", n_base + self.n_extra, 1, MAX_ROWS, what="output rows")
        self.bias = None
        if bias is not None:
            b = np.asarray(bias, dtype=np.float32)
            if b.shape != (self.n,) or not np.isfinite(b).all():
                raise TokbenchError(f"the bias must be {self.n:,} finite numbers (base rows + combined rows), got "
                                    f"shape {b.shape}", fix="pass one bias per output row, or none")
            self.bias = b if b.any() else None
        self.threads = threads
        # pruning needs every combined row convex (weights >= 0 summing to 1): then its logit is at most its best
        # constituent's logit plus its bias; the postings (CSC) say which rows hold a given base row or atom
        sums = np.asarray(self.coeffs.sum(axis=1)).ravel()
        self.convex = bool(self.n_extra and (self.coeffs.data >= 0).all() and (np.abs(sums - 1) <= 1e-4).all())
        self._bias_max = 0.0 if self.bias is None else float(self.bias[n_base:].max(initial=0.0))
        self.prune = limits.at_least("prune", prune, 0, 1_000_000)
        if prefilter not in PREFILTERS:
            raise TokbenchError(f"unknown prefilter {prefilter!r}", fix=f"pass one of {', '.join(PREFILTERS)}")
        self.prefilter = prefilter
        self.engine, self.storage, self._kernel = self._make_kernel(engine, storage)
        self._post = self.coeffs.tocsc() if self.convex and self._kernel is None else None
        self.params = {"kind": "factored", "engine": self.engine, "storage": self.storage,
                       "prefilter": self.prefilter, "n_base": n_base,
                       "n_combined": self.n_extra, "atoms": self.n_atoms, "nnz": int(self.coeffs.nnz)}
        self.build_seconds = time.perf_counter() - t0

    def _make_kernel(self, engine: str, storage: str):
        if engine not in ENGINES or storage not in ("auto", "fp32", "bf16"):
            raise TokbenchError(f"unknown engine {engine!r} or storage {storage!r}",
                                fix=f"engine one of {', '.join(ENGINES)}; storage auto, fp32 or bf16")
        from tokbench import _core

        has = hasattr(_core, "FactoredTopk")
        if engine == "rust" and not has:
            raise TokbenchError("this build of tokbench._core has no FactoredTopk kernel",
                                fix="rebuild the extension (maturin build), or pass engine='numpy'")
        if engine == "numpy" or not has:
            if storage == "bf16" or self.prefilter != "none":
                what = "bf16 storage" if storage == "bf16" else f"the {self.prefilter} prefilter"
                raise TokbenchError(f"{what} needs the Rust engine", fix="pass engine='rust' (or leave the "
                                    "storage and prefilter at their defaults)")
            return "numpy", "fp32", None
        bits = self.table.view(np.uint32)
        lossless = bool(((bits & 0xFFFF) == 0).all())
        if storage == "bf16" and not lossless:
            raise TokbenchError("the base rows are not exactly bfloat16 (storing them so would change the logits)",
                                fix="pass storage='fp32' or 'auto'")
        bf16 = storage == "bf16" or storage == "auto" and lossless
        atoms = (bits >> 16).astype(np.uint16) if bf16 else self.table
        c = self.coeffs
        kernel = _core.FactoredTopk(atoms.tobytes(), self.dim, self.n_base, bf16, c.indptr.astype("<u8").tobytes(),
                                    c.indices.astype("<u4").tobytes(), c.data.astype("<f4").tobytes(),
                                    None if self.bias is None else self.bias.astype("<f4").tobytes(), self.prune,
                                    self.prefilter == "int8")
        return "rust", "bf16" if bf16 else "fp32", kernel

    @property
    def query_dim(self) -> int:
        return self.dim

    # scores ------------------------------------------------------------------------------------------------------
    def _split(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(base logits (n_base, nq), combined rows' logits (n_extra, nq)), bias added: one matmul over the base
        rows and atoms, one CSR product over the combined rows."""
        with blas_threads(self.threads):  # (n_base + a, nq): atom logits, one column per query (gemv for one)
            lt = (self.table @ h[0])[:, None] if len(h) == 1 else self.table @ h.T
        merged = (self.coeffs @ lt[:, 0])[:, None] if len(h) == 1 else self.coeffs @ lt
        base = lt[:self.n_base]
        if self.bias is not None:
            base = base + self.bias[:self.n_base, None]
            merged += self.bias[self.n_base:, None]
        return base, merged

    def scores(self, h) -> np.ndarray:
        """All n logits (nq, n) float32: base rows by one matmul, combined rows by the sparse product, plus bias."""
        h = _check_queries(h, self.dim)
        out = np.empty((len(h), self.n), np.float32)
        for a, b in _chunks(len(h), QUERY_BLOCK):
            base, merged = self._split(h[a:b])
            out[a:b, :self.n_base], out[a:b, self.n_base:] = base.T, merged.T
        return out

    def search(self, h, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids (nq, k) and their logits, best first (exact up to float rounding).

        No sort over all n rows: the k-th best base score f of a query is a lower bound of its final k-th best
        score (those k base rows are candidates), so only combined rows scoring >= f can enter its top k. When
        the rows are convex combinations (mean, position_mean), a row's logit is at most its best constituent's
        logit plus the largest bias, so only rows holding a base row or atom with logit >= f - max bias are
        scored (the postings of a few ids instead of the whole CSR product); otherwise (or when those postings
        reach a quarter of the rows) every combined row is scored and compared with f. Queries go QUERY_BLOCK
        at a time through one matmul."""
        h = _check_queries(h, self.dim)
        k = _k(k, self.n)
        ids = np.empty((len(h), k), np.int64)
        top = np.empty((len(h), k), np.float32)
        if self._kernel is not None:
            for a, b in _chunks(len(h), QUERY_BLOCK):
                ib, sb = self._kernel.topk(h[a:b].tobytes(), b - a, k, self.threads or 0)
                ids[a:b] = np.frombuffer(ib, "<u8").reshape(b - a, k)
                top[a:b] = np.frombuffer(sb, "<f4").reshape(b - a, k)
            return ids, top
        kb = min(k, self.n_base)
        for a, b in _chunks(len(h), QUERY_BLOCK):
            with blas_threads(self.threads):  # atom logits (nq, n_base + a)
                lt = (self.table @ h[a])[None] if b - a == 1 else np.ascontiguousarray((self.table @ h[a:b].T).T)
            merged_all = None
            if not self.convex and self.n_extra:
                merged_all = (self.coeffs @ lt.T).T if b - a > 1 else (self.coeffs @ lt[0])[None]
            for q in range(b - a):
                lq = lt[q]
                bs = lq[:self.n_base] if self.bias is None else lq[:self.n_base] + self.bias[:self.n_base]
                bids = np.argpartition(bs, self.n_base - kb)[self.n_base - kb:] if self.n_base > kb \
                    else np.arange(self.n_base)
                bsc = bs[bids]
                floor = float(bsc.min()) if kb == k else -np.inf
                rows = self._candidates(lq, floor) if merged_all is None else None
                if rows is None:  # every combined row
                    m = merged_all[q] if merged_all is not None else self.coeffs @ lq
                    m = m if self.bias is None else m + self.bias[self.n_base:]
                    rows = np.flatnonzero(m >= floor)
                    vals = m[rows]
                else:
                    vals = self.coeffs[rows] @ lq if len(rows) else np.zeros(0, np.float32)
                    if self.bias is not None:
                        vals = vals + self.bias[self.n_base + rows]
                    keep = vals >= floor
                    rows, vals = rows[keep], vals[keep]
                cid = np.concatenate([bids, rows + self.n_base])
                csc = np.concatenate([bsc, vals.astype(np.float32)])
                best = np.lexsort((cid, -csc))[:k]  # by score, ties by id
                ids[a + q], top[a + q] = cid[best], csc[best]
        return ids, top

    def _candidates(self, lq: np.ndarray, floor: float) -> np.ndarray | None:
        """Combined rows (sorted ids) that hold an atom with logit >= floor - max bias: the only convex rows that
        can reach floor. None when pruning does not apply or would touch a quarter of the rows or more."""
        if self._post is None or not np.isfinite(floor):
            return None
        ptr, ind = self._post.indptr, self._post.indices
        atoms = np.flatnonzero(lq >= floor - self._bias_max)
        if not len(atoms):
            return np.zeros(0, np.int64)
        if int((ptr[atoms + 1] - ptr[atoms]).sum()) * 4 >= self.n_extra:
            return None
        mask = np.zeros(self.n_extra, bool)
        for j in atoms:
            mask[ind[ptr[j]:ptr[j + 1]]] = True
        return np.flatnonzero(mask)

    def rows_at(self, ids) -> np.ndarray:
        """The output rows of `ids` (any shape), materialised in float32: (*ids.shape, d)."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.n):
            raise TokbenchError(f"row ids must lie in 0..{self.n - 1}", fix="pass ids the index returned")
        out = np.empty((flat.size, self.dim), np.float32)
        base = flat < self.n_base
        out[base] = self.table[flat[base]]
        if (~base).any():
            out[~base] = self.coeffs[flat[~base] - self.n_base] @ self.table
        return out.reshape(*ids.shape, self.dim)

    def dot(self, h, ids: np.ndarray) -> np.ndarray:
        """<h, w_id> without bias for candidate ids (nq, c), from the materialised rows."""
        h = _check_queries(h, self.dim)
        return np.einsum("qcd,qd->qc", self.rows_at(ids), h)

    def materialize(self, dtype=np.float32, chunk: int = 65536, out: np.ndarray | None = None) -> np.ndarray:
        """The full (n, d) output table the combinations stand for (what a dense exact matmul multiplies)."""
        out = np.empty((self.n, self.dim), dtype) if out is None else out
        out[:self.n_base] = self.table[:self.n_base]
        for a, b in _chunks(self.n_extra, chunk):
            out[self.n_base + a:self.n_base + b] = self.coeffs[a:b] @ self.table
        return out

    def nbytes(self) -> int:
        """Bytes search reads. Rust: what the kernel holds (the atoms in float32 or bfloat16, the CSR, the bias,
        for convex rows the postings with each row's coefficients inline, and the int8 prefilter's copies); the
        float32 table and scipy CSR kept in Python (for rows_at, materialize, scores) come on top. numpy: the
        float32 atoms, the CSR (uint64 indptr, int32 columns, float32 weights), the bias and the CSC postings."""
        if self._kernel is not None:
            return int(self._kernel.nbytes())
        c = self.coeffs
        post = 0 if self._post is None else self._post.indices.nbytes + self._post.indptr.nbytes
        return int(self.table.nbytes + c.data.nbytes + c.indices.nbytes + (len(c.indptr) * 8) + post
                   + (0 if self.bias is None else self.bias.nbytes))


def combine(coeffs, n_base: int):
    """The CSR matrix of mean (or weighted) combinations: coeffs is a list of (base ids, weights or None = equal
    weights summing to 1) per row; returns (indptr, indices, data)."""
    lens = np.fromiter((len(c[0]) for c in coeffs), dtype=np.int64, count=len(coeffs))
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = np.fromiter((i for ids, _ in coeffs for i in ids), dtype=np.int32, count=int(indptr[-1]))
    data = np.fromiter((x for ids, w in coeffs for x in (np.full(len(ids), 1.0 / len(ids)) if w is None else w)),
                       dtype=np.float32, count=int(indptr[-1]))
    if len(indices) and (indices.min() < 0 or indices.max() >= n_base):
        raise TokbenchError(f"constituent ids must lie in 0..{n_base - 1}", fix="use ids of the model's tokenizer")
    return indptr, indices, data


def _record_parts(i: int, rec: dict, n_base: int) -> list[dict]:
    """The record's row as 1 or 2 parts {col: coefficient} whose weighted sum is the row (before norm capping):
    a plain combination, or omp's (shrunk code, subword mean) pair with weights (1 - blend, blend)."""
    mean_col = n_base  # the extra atom: the mean row

    def sub(pieces, weights=None):
        if not pieces:
            return {mean_col: 1.0}
        out: dict = {}
        w = weights if weights is not None else [1.0 / len(pieces)] * len(pieces)
        for p, x in zip(pieces, w):
            out[int(p)] = out.get(int(p), 0.0) + float(x)
        return out

    method = rec.get("method")
    if method in ("subword", "mean"):
        return [sub(rec.get("pieces", []))]
    if method == "position_mean":
        return [sub(rec.get("pieces", []), rec.get("weights") or None)]
    if method == "copy":
        return [{int(rec["source"]): 1.0}]
    if method == "zero":
        return [{}]
    if method == "omp":
        s = float(rec["shrink"])
        code: dict = {mean_col: 1.0 - s}
        for a, c in zip(rec["anchors"], rec["coefficients"]):
            code[int(a)] = code.get(int(a), 0.0) + s * float(c)
        blend = float(rec.get("blend_subword", 0.0))
        return [{c: (1.0 - blend) * v for c, v in code.items()}, {c: blend * v for c, v in sub(rec["pieces"]).items()}]
    raise TokbenchError(f"row {i} was made by {method!r}, which is not a fixed combination of base rows",
                        fix="the factored index needs mean / position_mean / omp / copy rows; use a FAISS index "
                            "kind (flat, ivf, hnsw) for these")


def combinations_from_records(records, n_base: int, *, rows: np.ndarray | None = None,
                              base_rows: np.ndarray | None = None, mean_row: np.ndarray | None = None,
                              rtol: float = 1e-4):
    """The coefficients of rows made by tokbench.embeddings (NewRows.records of mean / subword / position_mean /
    omp / copy / zero), as (CSR (len(records), n_base + 1), atoms (1, d)): column n_base is the mean row atom (the
    base rows' mean unless `mean_row` is given), which omp shrinks towards and empty decompositions fall back to.

    With `rows` and `base_rows`, every combination is checked against its row (relative error <= rtol), and the
    scale of norm-capped rows (shrunk in place by the initialiser; omp caps its code and the blend separately)
    is recovered by least squares over the row's parts. A row that is not the combination its record states
    (a learned net's row, a different table) is a one-line error."""
    sp = _sparse()
    n_base = limits.at_least("n_base", n_base, 1, MAX_ROWS, what="base rows")
    if base_rows is not None and (base_rows.ndim != 2 or base_rows.shape[0] != n_base):
        raise TokbenchError(f"base_rows must be ({n_base}, d), got {base_rows.shape}", fix="pass the model's head")
    if mean_row is None:
        mean_row = None if base_rows is None else np.asarray(base_rows, np.float32).mean(axis=0)
    parts = [_record_parts(i, r, n_base) for i, r in enumerate(records)]
    if rows is not None:
        if base_rows is None:
            raise TokbenchError("checking rows against their records needs base_rows", fix="pass base_rows=head")
        rows = np.asarray(rows, np.float32)
        if rows.shape != (len(records), base_rows.shape[1]):
            raise TokbenchError(f"rows must be ({len(records)}, {base_rows.shape[1]}), one per record, got "
                                f"{rows.shape}", fix="pass NewRows.rows with its records")
    table = None if base_rows is None else np.concatenate([np.asarray(base_rows, np.float32), mean_row[None]])
    indptr, indices, data = [0], [], []
    for i, (rec, ps) in enumerate(zip(records, parts)):
        scales = [1.0] * len(ps)
        if rows is not None:
            vecs = np.stack([sum((v * table[c] for c, v in p.items()), np.zeros(table.shape[1], np.float32))
                             for p in ps])
            if rec.get("norm_capped"):
                scales = np.linalg.lstsq(vecs.T.astype(np.float64), rows[i].astype(np.float64), rcond=None)[0].tolist()
            err = np.abs(np.asarray(scales, np.float32) @ vecs - rows[i]).max()
            if err > rtol * max(1.0, float(np.abs(rows[i]).max())):
                raise TokbenchError(f"row {i} ({rec.get('method')}) is not the combination its record states (off by "
                                    f"{err:.3g})", fix="the factored index needs rows made from these base rows by "
                                    "mean / position_mean / omp; use a FAISS index kind (flat, ivf, hnsw) otherwise")
        merged: dict = {}
        for p, s in zip(ps, scales):
            for c, v in p.items():
                merged[c] = merged.get(c, 0.0) + s * v
        cols = sorted(c for c, v in merged.items() if v != 0.0)
        indices.extend(cols)
        data.extend(merged[c] for c in cols)
        indptr.append(len(indices))
    coeffs = sp.csr_matrix((np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr, np.int64)),
                           shape=(len(records), n_base + 1))
    atoms = np.zeros((1, 0 if base_rows is None else base_rows.shape[1]), np.float32) if mean_row is None \
        else np.asarray(mean_row, np.float32)[None]
    return coeffs, atoms


__all__ = ["COMBINATION_METHODS", "FactoredIndex", "combinations_from_records", "combine"]
