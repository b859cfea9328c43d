"""OMP rows: new tokens coded as sparse combinations of anchor tokens in another space, codes applied to the base.

`omp_rows(...)` codes each new token's vector in a space (a donor model's rows, an auxiliary embedder's
vectors, or any `lookup(ids) -> (found, vectors)`) over the anchors' vectors in that space, applies the codes
to the anchors' base rows, shrinks towards the mean row by the held-out scale, caps norms and blends with the
subword mean. k and the ridge are chosen by held-out reconstruction of anchors (`choose_omp`).

Batched Orthogonal Matching Pursuit and the held-out choice of its sparsity:

`batch_omp(Y, X, k)` finds for every row y of Y a set of at most k atoms (rows of X) and coefficients c
minimising ||y - c X_S||^2 + ridge ||c||^2, greedily: pick the atom most correlated with the residual, re-solve
the small (ridge-regularised) normal equations on the atoms chosen so far (the Gram matrix of the chosen
atoms, one s x s system per target, solved batched), update the residual. Exact OMP (no screening) makes
every step one GEMM of the block's residuals against all atoms. Screened OMP keeps each target's M most
correlated atoms and then never touches the d-dimensional vectors again: with c0 = X_c y and the candidates'
Gram matrix G = X_c X_c^T (one batched GEMM per block), the residual's correlations are c0 - G[:, S] c and the
normal equations are G[S, S] c = c0[S]; so the steps cost O(M k) per target whatever d is (with per-step
residual products a 3,584-d donor at k = 64 needs about 10 TB of memory reads for 42k targets: hours here).
Both are BLAS-bound; torch runs them on the GPU when present.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tokbench.embeddings.norms import cap_mask
from tokbench.embeddings.request import NewTokens, RowStats
from tokbench.embeddings.subword import subword_record, subword_rows
from tokbench.errors import TokbenchError

# lookup(ids) -> (found: bool array, vectors: (len(ids), dim) float32, zero where not found); vectors must be a new
# array (omp_rows normalises it in place)
SpaceLookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _torch_device(device: str | None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class OmpPath:
    """Result of batch_omp: idx (B, k) atom indices, coefs[s] (B, s+1) coefficients after step s
    (only for the steps listed in `keep`, else just the last)."""

    idx: np.ndarray
    coefs: dict[int, np.ndarray]


def batch_omp(Y: np.ndarray, X: np.ndarray, k: int, ridge: float = 0.0, *, keep: tuple[int, ...] = (),
              forbid: np.ndarray | None = None, screen: int | None = 256, block: int = 1024,
              device: str | None = None, progress: bool = False, desc: str = "omp",
              block_bytes: int = 256 << 20) -> OmpPath:
    """OMP of every row of Y (B, d) over the atoms X (N, d), k atoms each.

    keep: sparsities (1..k) whose coefficients are returned as well (the greedy path is shared).
    forbid: (B,) atom index per target that it may not use (its own row, in held-out tests), or -1.
    screen: when set (and smaller than N), each target first keeps the `screen` atoms most correlated
        with it (one GEMM per block) and the greedy steps search only those: the per-step cost no longer
        grows with N. None searches all atoms at every step (exact OMP).
    block: targets per block; with screening also at most `block_bytes` of gathered candidate vectors
        (nb x M x d float32) per block, so memory stays bounded for large d.
    Returns idx (B, k) and coefs {s: (B, s)} for s in keep plus k.
    """
    import torch
    from tqdm import tqdm

    dev = _torch_device(device)
    B, d = Y.shape
    N = X.shape[0]
    k = int(min(k, N))
    steps = sorted({int(s) for s in keep if 1 <= s <= k} | {k})
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(dev)
    idx_out = np.zeros((B, k), dtype=np.int64)
    coefs = {s: np.zeros((B, s), dtype=np.float32) for s in steps}
    eye = torch.eye(k, device=dev, dtype=torch.float32)
    use_screen = screen is not None and k < screen < N
    if use_screen:
        block = max(1, min(block, block_bytes // (int(screen) * d * 4)))
    blocks = range(0, B, block)
    for b0 in tqdm(blocks, desc=desc, unit="block", disable=not progress or len(blocks) < 2):
        Yb = torch.from_numpy(np.ascontiguousarray(Y[b0:b0 + block], dtype=np.float32)).to(dev)
        nb = Yb.shape[0]
        rows = torch.arange(nb, device=dev)
        fb = None
        if forbid is not None:
            fb = torch.from_numpy(np.asarray(forbid[b0:b0 + block], dtype=np.int64)).to(dev)
            fb_ok = fb >= 0
        if use_screen:
            corr0 = (Yb @ Xt.T).abs_()
            if fb is not None:
                corr0[rows[fb_ok], fb[fb_ok]] = -1.0
            cand = corr0.topk(screen, dim=1).indices  # (nb, M) atom ids
            del corr0
            Xc = Xt[cand]  # (nb, M, d)
            c0 = torch.bmm(Xc, Yb.unsqueeze(-1)).squeeze(-1)  # (nb, M): X_c y
            Gc = torch.bmm(Xc, Xc.transpose(1, 2))  # (nb, M, M): X_c X_c^T
            del Xc
        pos = torch.zeros((nb, k), dtype=torch.long, device=dev)  # chosen positions (in cand when screening)
        R = Yb  # the residual (exact OMP only; rebound each step, never written in place)
        c = None
        for s in range(k):
            if use_screen:
                corr = c0 if c is None else c0 - torch.bmm(Gc[rows.unsqueeze(1), :, pos[:, :s]].transpose(1, 2),
                                                           c).squeeze(-1)
                corr = corr.abs()
            else:
                corr = (R @ Xt.T).abs_()
                if fb is not None:
                    corr[rows[fb_ok], fb[fb_ok]] = -1.0
            if s:
                corr.scatter_(1, pos[:, :s], -1.0)
            pos[:, s] = corr.argmax(dim=1)
            del corr
            S = pos[:, : s + 1]
            if use_screen:
                G = Gc[rows.view(-1, 1, 1), S.unsqueeze(2), S.unsqueeze(1)]  # (nb, s+1, s+1): G[S, S]
                rhs = c0.gather(1, S).unsqueeze(-1)
            else:
                XS = Xt[S]  # (nb, s+1, d)
                G = XS @ XS.transpose(1, 2)
                rhs = XS @ Yb.unsqueeze(-1)
            if ridge:
                G = G + ridge * eye[: s + 1, : s + 1]
            try:
                c = torch.linalg.solve(G, rhs)
            except RuntimeError:  # singular (duplicate atoms, ridge 0): least squares instead
                c = torch.linalg.lstsq(G, rhs).solution
            if not use_screen:
                R = Yb - (c.transpose(1, 2) @ XS).squeeze(1)
            if s + 1 in coefs:
                coefs[s + 1][b0:b0 + nb] = c.squeeze(-1).cpu().numpy()
        idx = cand.gather(1, pos) if use_screen else pos
        idx_out[b0:b0 + nb] = idx.cpu().numpy()
    return OmpPath(idx=idx_out, coefs=coefs)


def apply_codes(idx: np.ndarray, coef: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """sum_j coef[:, j] * rows[idx[:, j]]  -> (B, dim)."""
    s = coef.shape[1]
    out = np.zeros((idx.shape[0], rows.shape[1]), dtype=np.float32)
    for j in range(s):
        out += coef[:, j:j + 1] * rows[idx[:, j]]
    return out


def centred_cosine(pred: np.ndarray, truth: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Cosine between pred and truth after subtracting `centre` (the mean row) from both, per row.
    Raw cosine rates the constant mean vector near the top; centred it scores about 0."""
    a = pred - centre
    b = truth - centre
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)


@dataclass
class OmpChoice:
    k: int
    ridge: float
    scores: dict[str, float]  # "k=..,ridge=.." -> mean centred cosine on held-out anchors
    held_out: int
    shrink: float = 1.0  # least-squares scale of the centred rebuilt rows onto the true ones (held out)


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean length of every row, 1 for a zero row (so dividing by it leaves the row zero)."""
    norms = np.linalg.norm(X, axis=1)
    norms[norms == 0] = 1.0
    return norms


def candidate_ks(dim: int, n_atoms: int, k_max: int | None = None) -> list[int]:
    """Sparsities worth trying: powers of two up to dim/8 and at most 64. Many atoms in a small donor space
    (d=128) fit the donor vector but transfer noise to the base (k=64 ruins SmolLM2 with a d=128 donor)."""
    top = min(64, max(1, dim // 8), n_atoms)
    if k_max is not None:
        top = min(top, k_max)
    ks = [1]
    while ks[-1] * 2 <= top:
        ks.append(ks[-1] * 2)
    return ks


def choose_omp(space: np.ndarray, target: np.ndarray, *, ks: list[int], ridges: list[float],
               holdout: float = 0.05, max_held: int = 2000, seed: int = 0, device: str | None = None,
               progress: bool = False, norms: np.ndarray | None = None) -> OmpChoice:
    """Pick k and ridge by held-out reconstruction: hide a fraction of the anchors, code each hidden one
    over the others in `space` (normalised atoms), rebuild its `target` row from the codes, score by
    centred cosine to its true row; return the best (ties -> smaller k), with the scale (0..1) that best maps
    the centred rebuilt rows onto the true ones: how far an OMP row may be trusted to leave the mean row.

    norms: when given, `space` already holds the unit rows and `norms` their lengths (no normalised copy of
    the anchors is made: at 110k x 3,584 that copy is 1.6 GB)."""
    n = space.shape[0]
    rng = np.random.default_rng(seed)
    m = int(min(max(1, round(n * holdout)), max_held, n - 1))
    held = rng.choice(n, size=m, replace=False)
    if norms is None:
        norms = row_norms(space)
        atoms = space / norms[:, None]
        held_vecs = space[held]
    else:
        atoms = space
        held_vecs = space[held] * norms[held, None]
    centre = target.mean(axis=0)
    scores: dict[str, float] = {}
    best = None
    for ridge in ridges:
        path = batch_omp(held_vecs, atoms, max(ks), ridge, keep=tuple(ks), forbid=held, device=device,
                         progress=progress, desc=f"held-out omp ridge={ridge}")
        for kk in ks:
            coef = path.coefs[kk] / norms[path.idx[:, :kk]]
            pred = apply_codes(path.idx[:, :kk], coef, target)
            score = float(centred_cosine(pred, target[held], centre).mean())
            scores[f"k={kk},ridge={ridge}"] = round(score, 5)
            if best is None or score > best[0] + 1e-4:
                pc, tc = pred - centre, target[held] - centre
                shrink = float(np.clip((pc * tc).sum() / max(float((pc * pc).sum()), 1e-30), 0.0, 1.0))
                best = (score, kk, ridge, shrink)
    assert best is not None
    return OmpChoice(k=best[1], ridge=best[2], scores=scores, held_out=m, shrink=best[3])


def donor_space(space: np.ndarray, dmap: dict[int, int]) -> SpaceLookup:
    """Lookup of new ids in a donor's rows `space` through `dmap` (new id -> donor id)."""
    def lookup(target_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.array([int(t) in dmap and dmap[int(t)] < space.shape[0] for t in target_ids], dtype=bool)
        vecs = np.zeros((len(target_ids), space.shape[1]), dtype=np.float32)
        if ok.any():
            vecs[ok] = space[[dmap[int(t)] for t in target_ids[ok]]]
        return ok, vecs
    return lookup


def table_space(space: np.ndarray, pos: dict[int, int]) -> SpaceLookup:
    """Lookup of ids in a table of vectors `space` whose row for id i is pos[i] (an auxiliary embedder's)."""
    def lookup(target_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.array([int(t) in pos for t in target_ids], dtype=bool)
        vecs = np.zeros((len(target_ids), space.shape[1]), dtype=np.float32)
        if ok.any():
            vecs[ok] = space[[pos[int(t)] for t in target_ids[ok]]]
        return ok, vecs
    return lookup


def omp_rows(rows: np.ndarray, req: NewTokens, stats: RowStats, space_of: SpaceLookup,
             anchor_keys: np.ndarray, anchor_rows_ids: np.ndarray, *, k: int | None, ridge: float | None,
             blend: float, seed: int, device: str | None, progress: bool):
    """OMP rows for `req`: anchors are `anchor_keys` (ids looked up in the space) with base rows
    `rows[anchor_rows_ids]`; returns (rows, records, params, held_out, norm_capped)."""
    ok, X = space_of(anchor_keys)  # a fresh array: normalised in place below
    anchors_old = anchor_rows_ids[ok]
    if not ok.all():
        X = X[ok]
    if len(X) < 2:
        raise TokbenchError("fewer than 2 anchor tokens (shared between base and target, with donor rows)",
                            fix="use a donor whose tokenizer overlaps the target, or --method tokenadapt")
    dim = X.shape[1]
    anchor_rows = rows[anchors_old]
    ks = [k] if k else candidate_ks(dim, len(X))
    ridges = [ridge] if ridge is not None else [0.1, 1.0]
    norms = row_norms(X)
    X /= norms[:, None]  # one copy of the anchors (unit rows) for the held-out choice and the coding
    choice = choose_omp(X, anchor_rows, ks=ks, ridges=ridges, seed=seed, device=device, progress=progress,
                        norms=norms)
    sub = subword_rows(req.decompositions, rows, stats.mean)
    est = sub.copy()
    new_ids = req.ids
    ids = np.array(new_ids, dtype=np.int64)
    has, Y = space_of(ids)
    use = has & np.array([i not in req.subword_only for i in new_ids], dtype=bool)
    capped_rows = np.zeros(len(new_ids), dtype=bool)
    path = coef = None
    if use.any():
        path = batch_omp(Y if use.all() else Y[use], X, choice.k, choice.ridge, device=device, progress=progress,
                         desc=f"omp k={choice.k}")
        coef = path.coefs[choice.k] / norms[path.idx]
        omp = apply_codes(path.idx, coef, anchor_rows)
        # shrink towards the mean row by the held-out least-squares scale: with a weak donor (low held-out
        # cosine) a full-size OMP row is mostly noise, and in a tied model it becomes a loud output logit
        omp = stats.mean + choice.shrink * (omp - stats.mean)
        over = cap_mask(omp, stats.cap)
        capped = int(over.sum())
        capped_rows[use] = over
        est[use] = (1.0 - blend) * omp + blend * sub[use]
    else:
        capped = 0
    over = cap_mask(est, stats.cap)
    capped += int(over.sum())
    capped_rows |= over
    records = []
    u = 0
    for r, (i, pieces) in enumerate(zip(new_ids, req.decompositions)):
        if use[r]:
            assert path is not None and coef is not None
            rec = {"method": "omp", "anchors": [int(a) for a in anchors_old[path.idx[u]]],
                   "coefficients": [float(c) for c in coef[u]], "k": choice.k, "shrink": round(choice.shrink, 5),
                   "blend_subword": blend, "pieces": list(pieces)}
            u += 1
        else:
            rec = subword_record(pieces)
            rec["reason"] = "subword_only" if i in req.subword_only else "not in the space"
        rec["norm_capped"] = bool(capped_rows[r])
        records.append(rec)
    params = {"k": choice.k, "ridge": choice.ridge, "shrink": round(choice.shrink, 5), "blend_subword": blend, "anchors": int(len(X)),
              "space_dim": int(dim), "k_candidates": ks, "omp_tokens": int(use.sum()),
              "decomposition_tokens": int((~use).sum()), "norm_cap": round(stats.cap, 5)}
    held = {"metric": "centred cosine of rebuilt held-out anchor rows (before blending)",
            "held_out": choice.held_out, "chosen": choice.scores[f"k={choice.k},ridge={choice.ridge}"],
            "scores": choice.scores}
    return est, records, params, held, capped
