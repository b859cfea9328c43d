"""Batched OMP: exact recovery of sparse codes, screening, and the held-out choice of k."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tokbench.embeddings import apply_codes, batch_omp, candidate_ks, centred_cosine, choose_omp


def _problem(n=400, d=64, b=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    idx = np.stack([rng.choice(n, size=k, replace=False) for _ in range(b)])
    coef = (rng.uniform(0.5, 2.0, (b, k)) * rng.choice([-1, 1], (b, k))).astype(np.float32)
    Y = np.einsum("bk,bkd->bd", coef, X[idx])
    return X, Y, idx, coef


def test_recovers_exact_sparse_codes():
    X, Y, idx, coef = _problem()
    path = batch_omp(Y, X, 4, ridge=0.0, screen=None, block=64)
    got = path.coefs[4]
    for b in range(len(Y)):
        want = dict(zip(idx[b], coef[b]))
        have = dict(zip(path.idx[b], got[b]))
        assert set(have) == set(want)
        for j in want:
            assert have[j] == pytest.approx(want[j], abs=1e-3)
    rec = apply_codes(path.idx, got, X)
    np.testing.assert_allclose(rec, Y, atol=1e-3)


def test_screened_omp_close_to_exact():
    # screening keeps the atoms most correlated with the target; a weak atom whose correlation is masked by
    # the others can fall outside, so this is approximate: most codes exact, residuals small
    X, Y, idx, coef = _problem(n=2000, b=300)
    fast = batch_omp(Y, X, 4, ridge=0.0, screen=256, block=128)
    same = np.array([set(fast.idx[b]) == set(idx[b]) for b in range(len(Y))])
    assert same.mean() > 0.6
    rel = np.linalg.norm(apply_codes(fast.idx, fast.coefs[4], X) - Y, axis=1) / np.linalg.norm(Y, axis=1)
    assert np.median(rel) < 1e-3 and rel.mean() < 0.15


def _screened_reference(Y, X, k, ridge, screen, forbid=None):
    """Screened OMP written plainly, one target at a time: the residual's correlations with the candidate
    vectors at every step (what batch_omp replaces by the candidates' Gram matrix)."""
    idx = np.zeros((len(Y), k), dtype=np.int64)
    coefs = np.zeros((len(Y), k))
    for b, y in enumerate(Y.astype(np.float64)):
        c0 = np.abs(X @ y)
        if forbid is not None and forbid[b] >= 0:
            c0[forbid[b]] = -1.0
        cand = np.argsort(-c0, kind="stable")[:screen]
        Xc = X[cand].astype(np.float64)
        r, chosen = y.copy(), []
        for _ in range(k):
            corr = np.abs(Xc @ r)
            corr[chosen] = -1.0
            chosen.append(int(corr.argmax()))
            XS = Xc[chosen]
            c = np.linalg.solve(XS @ XS.T + ridge * np.eye(len(chosen)), XS @ y)
            r = y - c @ XS
        idx[b], coefs[b] = cand[chosen], c
    return idx, coefs


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_screened_omp_equals_the_per_step_residual_reference(ridge):
    # dense targets (no exact sparse code) so that every step has a clear winner; d > M as for a large donor
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 96)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = rng.standard_normal((40, 96)).astype(np.float32)
    forbid = np.where(np.arange(40) % 3 == 0, np.arange(40), -1)
    got = batch_omp(Y, X, 8, ridge=ridge, screen=64, forbid=forbid, block=16, block_bytes=10 * 64 * 96 * 4)
    want_idx, want_coef = _screened_reference(Y, X, 8, ridge, 64, forbid)
    np.testing.assert_array_equal(got.idx, want_idx)
    np.testing.assert_allclose(got.coefs[8], want_coef, rtol=1e-3, atol=1e-4)


def test_keep_gives_nested_path_and_ridge_shrinks():
    X, Y, _, _ = _problem(k=6)
    p = batch_omp(Y, X, 6, keep=(1, 3), screen=None)
    assert set(p.coefs) == {1, 3, 6} and p.coefs[3].shape == (len(Y), 3)
    r = batch_omp(Y, X, 6, ridge=5.0, screen=None)
    assert np.abs(r.coefs[6]).sum() < np.abs(p.coefs[6]).sum()


def test_forbid_excludes_own_atom():
    X, _, _, _ = _problem()
    forbid = np.arange(50)
    p = batch_omp(X[:50], X, 3, forbid=forbid, screen=None)
    assert not (p.idx == forbid[:, None]).any()
    p = batch_omp(X[:50], X, 3, forbid=forbid, screen=32)
    assert not (p.idx == forbid[:, None]).any()


def test_candidate_ks_bounded_by_dim():
    assert candidate_ks(128, 30000) == [1, 2, 4, 8, 16]
    assert candidate_ks(576, 30000) == [1, 2, 4, 8, 16, 32, 64]
    assert max(candidate_ks(16, 5)) <= 2


def test_centred_cosine_does_not_reward_the_mean():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((300, 16)) + 5.0  # a large common offset, as embedding rows have
    centre = truth.mean(0)
    mean_pred = np.tile(centre, (300, 1)) + 1e-3 * rng.standard_normal((300, 16))
    raw = (mean_pred * truth).sum(1) / np.linalg.norm(mean_pred, axis=1) / np.linalg.norm(truth, axis=1)
    assert raw.mean() > 0.9  # raw cosine rates the mean vector near the top
    assert abs(centred_cosine(mean_pred, truth, centre).mean()) < 0.1


def test_choose_k_sane_when_target_is_linear_in_space():
    rng = np.random.default_rng(1)
    space = rng.standard_normal((3000, 64)).astype(np.float32)
    W = rng.standard_normal((64, 24)).astype(np.float32)
    target = space @ W + 0.05 * rng.standard_normal((3000, 24)).astype(np.float32) + 3.0
    ch = choose_omp(space, target, ks=candidate_ks(64, 3000), ridges=[0.1, 1.0], holdout=0.05)
    assert ch.k == 8 and ch.held_out == 150  # more atoms fit a linear relation better; k capped at dim/8
    assert ch.scores[f"k={ch.k},ridge={ch.ridge}"] > 0.5
    assert ch.scores["k=1,ridge=0.1"] < ch.scores["k=8,ridge=0.1"]
    # unit rows + their norms (omp_rows' in-place path, no normalised copy) choose the same, score the same
    norms = np.linalg.norm(space, axis=1)
    unit = space / norms[:, None]
    same = choose_omp(unit, target, ks=candidate_ks(64, 3000), ridges=[0.1, 1.0], holdout=0.05, norms=norms)
    assert (same.k, same.ridge) == (ch.k, ch.ridge)
    assert same.scores == pytest.approx(ch.scores, abs=1e-4) and same.shrink == pytest.approx(ch.shrink, abs=1e-4)


def test_choose_k_scores_noise_near_zero():
    rng = np.random.default_rng(2)
    space = rng.standard_normal((2000, 32)).astype(np.float32)
    target = rng.standard_normal((2000, 16)).astype(np.float32) + 4.0  # unrelated to the space
    ch = choose_omp(space, target, ks=[1, 2, 4], ridges=[1.0])
    assert all(abs(v) < 0.15 for v in ch.scores.values())
