"""Batched Orthogonal Matching Pursuit and the held-out choice of its sparsity.

`batch_omp(Y, X, k)` finds for every row y of Y a set of at most k atoms (rows of X) and coefficients c
minimising ||y - c X_S||^2 + ridge ||c||^2, greedily: pick the atom most correlated with the residual, re-solve
the small (ridge-regularised) normal equations on the atoms chosen so far (the Gram matrix of the chosen
atoms, one s x s system per target, solved batched), update the residual. Every step is one GEMM of the
block's residuals against all atoms, so the work is BLAS-bound; torch runs it on the GPU when present.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
              device: str | None = None, progress: bool = False, desc: str = "omp") -> OmpPath:
    """OMP of every row of Y (B, d) over the atoms X (N, d), k atoms each.

    keep: sparsities (1..k) whose coefficients are returned as well (the greedy path is shared).
    forbid: (B,) atom index per target that it may not use (its own row, in held-out tests), or -1.
    screen: when set (and smaller than N), each target first keeps the `screen` atoms most correlated
        with it (one GEMM per block) and the greedy steps search only those: the per-step cost no longer
        grows with N. None searches all atoms at every step (exact OMP).
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
        pos = torch.zeros((nb, k), dtype=torch.long, device=dev)  # chosen positions (in cand when screening)
        R = Yb.clone()
        c = None
        for s in range(k):
            if use_screen:
                corr = torch.bmm(Xc, R.unsqueeze(-1)).squeeze(-1).abs_()
            else:
                corr = (R @ Xt.T).abs_()
                if fb is not None:
                    corr[rows[fb_ok], fb[fb_ok]] = -1.0
            if s:
                corr.scatter_(1, pos[:, :s], -1.0)
            pos[:, s] = corr.argmax(dim=1)
            del corr
            if use_screen:
                XS = Xc[rows.unsqueeze(1), pos[:, : s + 1]]
            else:
                XS = Xt[pos[:, : s + 1]]  # (nb, s+1, d)
            G = XS @ XS.transpose(1, 2)
            if ridge:
                G = G + ridge * eye[: s + 1, : s + 1]
            rhs = XS @ Yb.unsqueeze(-1)
            try:
                c = torch.linalg.solve(G, rhs)
            except RuntimeError:  # singular (duplicate atoms, ridge 0): least squares instead
                c = torch.linalg.lstsq(G, rhs).solution
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
               progress: bool = False) -> OmpChoice:
    """Pick k and ridge by held-out reconstruction: hide a fraction of the anchors, code each hidden one
    over the others in `space` (normalised atoms), rebuild its `target` row from the codes, score by
    centred cosine to its true row; return the best (ties -> smaller k), with the scale (0..1) that best maps
    the centred rebuilt rows onto the true ones: how far an OMP row may be trusted to leave the mean row."""
    n = space.shape[0]
    rng = np.random.default_rng(seed)
    m = int(min(max(1, round(n * holdout)), max_held, n - 1))
    held = rng.choice(n, size=m, replace=False)
    norms = np.linalg.norm(space, axis=1)
    norms[norms == 0] = 1.0
    atoms = space / norms[:, None]
    centre = target.mean(axis=0)
    scores: dict[str, float] = {}
    best = None
    for ridge in ridges:
        path = batch_omp(space[held], atoms, max(ks), ridge, keep=tuple(ks), forbid=held, device=device,
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
