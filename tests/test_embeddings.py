"""The shared initialisers layer (tokbench.embeddings): every method against a small direct reference, complete
per-row records, bad requests, and transplant writing exactly what the layer makes."""
from __future__ import annotations

import numpy as np
import pytest

from tokbench.embeddings import (METHODS, AuxSpace, NewTokens, RowStats, assemble, cap_norms, donor_space,
                                 make_rows, table_space)
from tokbench.errors import TokbenchError

N_BASE, D = 300, 24


def _base(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N_BASE, D)) + 0.5).astype(np.float32)


def _request(n: int = 40, seed: int = 1) -> NewTokens:
    rng = np.random.default_rng(seed)
    decs = [list(rng.choice(N_BASE, size=rng.integers(0, 4), replace=False)) for _ in range(n)]
    decs[0] = []  # one token without pieces: the mean row stands in
    ids = list(range(1000, 1000 + n))
    return NewTokens(ids=ids, decompositions=decs, token_bytes=[f"t{i}".encode() for i in ids])


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _aux_space(rows: np.ndarray, req: NewTokens, seed: int = 2) -> AuxSpace:
    rng = np.random.default_rng(seed)
    old_vecs = rng.standard_normal((N_BASE, 16)).astype(np.float32)
    old_vecs /= np.linalg.norm(old_vecs, axis=1, keepdims=True)
    new_vecs = rng.standard_normal((len(req), 16)).astype(np.float32)
    new_vecs /= np.linalg.norm(new_vecs, axis=1, keepdims=True)
    return AuxSpace(path=None, old_ids=np.arange(N_BASE, dtype=np.int64), old_vecs=old_vecs,
                    old_lens={j: 1 + j % 5 for j in range(N_BASE)}, new_pos={i: r for r, i in enumerate(req.ids)},
                    new_vecs=new_vecs)


def _check_records(res, req: NewTokens, d: int = D) -> None:
    assert res.rows.shape == (len(req), d) and res.rows.dtype == np.float32
    assert len(res.records) == len(req)
    for rec, i, tb in zip(res.records, req.ids, req.token_bytes):
        assert rec["method"] in METHODS and isinstance(rec["norm_capped"], bool)
        assert rec["id"] == i and rec["bytes"] == tb.hex()
    assert res.norm_capped == sum(r["norm_capped"] for r in res.records)


def test_baselines_match_direct_reference():
    rows, req = _base(), _request()
    ref = np.arange(0, N_BASE, 2)
    st = RowStats.of(rows, ref)
    np.testing.assert_array_equal(st.mean, rows[ref].mean(axis=0))
    assert st.cap == float(np.median(np.linalg.norm(rows[ref], axis=1)))
    sub = make_rows("subword", rows, req, reference=ref)
    for r, pieces in enumerate(req.decompositions):
        np.testing.assert_array_equal(sub.rows[r], rows[pieces].mean(axis=0) if pieces else st.mean)
        assert sub.records[r]["pieces"] == pieces and (("fallback" in sub.records[r]) == (not pieces))
    np.testing.assert_array_equal(make_rows("mean", rows, req, reference=ref).rows, np.tile(st.mean, (len(req), 1)))
    assert not make_rows("zero", rows, req).rows.any()
    rnd = make_rows("random", rows, req, reference=ref, seed=7).rows
    want = (st.mean + st.std * np.random.default_rng(7).standard_normal((len(req), D))).astype(np.float32)
    np.testing.assert_array_equal(rnd, want)
    assert not np.array_equal(rnd, make_rows("random", rows, req, reference=ref, seed=8).rows)
    src = [5, 0, 299] * 13 + [1]
    cp = make_rows("copy", rows, req, sources=src)
    np.testing.assert_array_equal(cp.rows, rows[src])
    assert [r["source"] for r in cp.records] == src
    for res in (sub, cp):
        _check_records(res, req)


def test_position_mean_weights_pieces_by_position():
    rows, req = _base(), _request()
    res = make_rows("position_mean", rows, req)
    _check_records(res, req)
    st = RowStats.of(rows)
    for r, pieces in enumerate(req.decompositions):
        n = len(pieces)
        w = np.arange(n, 0, -1) / (n * (n + 1) / 2)
        want = (w[:, None] * rows[pieces]).sum(0) if n else st.mean
        np.testing.assert_allclose(res.rows[r], want, rtol=1e-5, atol=1e-6)
        assert res.records[r]["weights"] == pytest.approx(list(w))
    flat = make_rows("position_mean", rows, req, weights=lambda n: np.ones(n))  # equal weights: the subword mean
    np.testing.assert_allclose(flat.rows, make_rows("subword", rows, req).rows, rtol=1e-5, atol=1e-6)
    given = [[1.0] + [0.0] * (len(p) - 1) if p else [] for p in req.decompositions]  # first piece only
    first = make_rows("position_mean", rows, req, weights=given).rows
    for r, p in enumerate(req.decompositions):
        if p:
            np.testing.assert_array_equal(first[r], rows[p[0]])
    with pytest.raises(TokbenchError, match="position weights"):
        make_rows("position_mean", rows, req, weights=lambda n: -np.ones(n))


def test_norm_mean_keeps_the_direction_of_the_mean_and_the_length_of_the_pieces():
    from tokbench.embeddings import geometric

    rows, req = _base(), _request()
    res = make_rows("norm_mean", rows, req)
    _check_records(res, req)
    mean = make_rows("subword", rows, req).rows
    for r, pieces in enumerate(req.decompositions):
        if not pieces:
            np.testing.assert_array_equal(res.rows[r], RowStats.of(rows).mean)
            continue
        want = np.linalg.norm(rows[pieces], axis=1).mean()
        assert np.linalg.norm(res.rows[r]) == pytest.approx(want, rel=1e-5)
        cos = res.rows[r] @ mean[r] / np.linalg.norm(res.rows[r]) / np.linalg.norm(mean[r])
        assert cos == pytest.approx(1.0, abs=1e-5)
        if len(pieces) == 1:  # a one-piece token gets its own row back
            np.testing.assert_allclose(res.rows[r], rows[pieces[0]], rtol=1e-5, atol=1e-6)
        else:  # averaging shortens: the rescaled row is longer than the plain mean
            assert np.linalg.norm(res.rows[r]) > np.linalg.norm(mean[r])
    # geometric weights r**i; ratio 1e6 is (numerically) the last piece alone; scale multiplies the length
    last = make_rows("norm_mean", rows, req, weights=geometric(1e6), scale=2.0)
    for r, p in enumerate(req.decompositions):
        if p:
            want = 2.0 * np.linalg.norm(rows[p], axis=1).mean() * rows[p[-1]] / np.linalg.norm(rows[p[-1]])
            np.testing.assert_allclose(last.rows[r], want, rtol=1e-4, atol=1e-4)
            assert last.records[r]["scale"] == 2.0
    # centred: only the part that differs from the mean row is rescaled
    mu = RowStats.of(rows).mean
    cen = make_rows("norm_mean", rows, req, centred=True, scale=0.5)
    for r, p in enumerate(req.decompositions):
        if len(p) > 1:
            dev = mean[r] - mu
            want = mu + dev * 0.5 * np.linalg.norm(rows[p] - mu, axis=1).mean() / np.linalg.norm(dev)
            np.testing.assert_allclose(cen.rows[r], want, rtol=1e-4, atol=1e-5)
            assert cen.records[r]["centred"] is True
    for bad in ({"scale": 0.0}, {"scale": float("nan")}):
        with pytest.raises(TokbenchError, match="norm scale"):
            make_rows("norm_mean", rows, req, **bad)
    with pytest.raises(TokbenchError, match="weight ratio"):
        geometric(-1.0)


def test_cap_option_bounds_every_row_by_the_typical_norm():
    rows, req = _base(), _request()
    rows[:10] *= 50.0  # a few huge rows: copies of them must be shrunk
    src = list(range(len(req)))
    res = make_rows("copy", rows, req, sources=src, cap=True)
    st = RowStats.of(rows)
    norms = np.linalg.norm(res.rows, axis=1)
    assert norms.max() <= st.cap * (1 + 1e-5)
    assert [r["norm_capped"] for r in res.records][:10] == [True] * 10 and res.norm_capped >= 10
    assert make_rows("copy", rows, req, sources=src).norm_capped == 0  # off by default for copies
    x = rows[:20].copy()
    assert cap_norms(x, 1.0) == 20 and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_omp_rows_rebuilt_from_their_records():
    rows, req = _base(), _request()
    rng = np.random.default_rng(3)
    space_rows = rng.standard_normal((N_BASE, 32)).astype(np.float32)
    anchors = np.arange(N_BASE, dtype=np.int64)
    # new tokens' donor vectors: sparse combinations of anchor vectors; token 1003 has no donor row
    dmap = {i: N_BASE + r for r, i in enumerate(req.ids) if i != 1003}
    codes = [rng.choice(N_BASE, 3, replace=False) for _ in req.ids]
    new_vecs = np.stack([space_rows[c].sum(0) for c in codes]).astype(np.float32)
    donor = np.concatenate([space_rows, new_vecs])
    dmap.update({int(a): int(a) for a in anchors})
    req.subword_only = frozenset({1005})
    res = make_rows("omp", rows, req, space=donor_space(donor, dmap), anchors=(anchors, anchors), k=4, seed=0)
    _check_records(res, req)
    st = RowStats.of(rows)
    assert res.params["k"] == 4 and res.params["anchors"] == N_BASE and res.held_out["held_out"] == 15
    blend, shrink = res.params["blend_subword"], res.params["shrink"]
    for r, rec in enumerate(res.records):
        pieces = req.decompositions[r]
        sub = rows[pieces].mean(0) if pieces else st.mean
        if req.ids[r] in (1003, 1005):
            assert rec["method"] == "subword" and rec["reason"] in ("not in the space", "subword_only")
            np.testing.assert_allclose(res.rows[r], sub * min(1.0, st.cap / np.linalg.norm(sub)), rtol=1e-5)
            continue
        assert rec["method"] == "omp" and len(rec["anchors"]) == 4 and rec["k"] == 4
        assert set(codes[r]) <= set(rec["anchors"])  # exact sparse codes are found
        omp = (np.array(rec["coefficients"])[:, None] * rows[rec["anchors"]]).sum(0)
        omp = st.mean + shrink * (omp - st.mean)
        omp *= min(1.0, st.cap / np.linalg.norm(omp))
        want = (1 - blend) * omp + blend * sub
        want *= min(1.0, st.cap / np.linalg.norm(want))
        np.testing.assert_allclose(res.rows[r], want, rtol=2e-3, atol=2e-4)


def test_omp_in_a_table_space_uses_default_anchors():
    rows, req = _base(), _request(10)
    vecs = np.concatenate([rows, np.stack([rows[[1, 2]].sum(0)] * len(req))])
    pos = {j: j for j in range(N_BASE)} | {i: N_BASE + r for r, i in enumerate(req.ids)}
    res = make_rows("omp", rows, req, space=table_space(vecs, pos), k=2)
    assert all(sorted(r["anchors"]) == [1, 2] for r in res.records)


def test_tokenadapt_matches_direct_reference():
    rows, req = _base(), _request()
    aux = _aux_space(rows, req)
    req.subword_only = frozenset({1002})
    gw, T, k = 0.3, 0.3, 5
    res = make_rows("tokenadapt", rows, req, aux=aux, global_weight=gw, temperature=T, top_k=k)
    _check_records(res, req)
    st = RowStats.of(rows)
    for r, i in enumerate(req.ids):
        pieces, q = req.decompositions[r], aux.new_vecs[r]
        if i == 1002:
            want = rows[pieces].mean(0) if pieces else st.mean
        else:
            if pieces:
                w = _softmax(aux.old_vecs[pieces] @ q / T) * np.array([1 + p % 5 for p in pieces])
                local = ((w / w.sum())[:, None] * rows[pieces]).sum(0)
            else:
                local = st.mean
            sims = aux.old_vecs @ q
            nb = np.argsort(-sims)[:k]
            assert res.records[r]["neighbours"] == [int(j) for j in nb]
            glob = (_softmax(sims[nb] / T)[:, None] * rows[nb]).sum(0)
            want = (1 - gw) * local + gw * glob
        want = want * min(1.0, st.cap / np.linalg.norm(want))
        np.testing.assert_allclose(res.rows[r], want, rtol=1e-4, atol=1e-5)
    assert "global_estimate" in res.held_out


def test_assemble_writes_parts_in_order():
    fill = np.full(3, 9.0, dtype=np.float32)
    t = assemble(5, fill, [(np.array([0, 1]), np.ones((2, 3))), (np.array([1]), np.zeros((1, 3))),
                           (np.array([], dtype=np.int64), np.zeros((0, 3)))])
    np.testing.assert_array_equal(t, [[1] * 3, [0] * 3, [9] * 3, [9] * 3, [9] * 3])


@pytest.mark.parametrize("call, msg", [
    (lambda rows, req: make_rows("fvt", rows, req), "unknown initialiser"),
    (lambda rows, req: make_rows("copy", rows, req, sources=[1]), "one source id per new token"),
    (lambda rows, req: make_rows("copy", rows, req, sources=[N_BASE] * len(req)), "outside"),
    (lambda rows, req: make_rows("omp", rows, req), "needs a space"),
    (lambda rows, req: make_rows("tokenadapt", rows, req), "auxiliary space"),
    (lambda rows, req: make_rows("subword", rows[0], req), "matrix"),
    (lambda rows, req: make_rows("subword", rows, NewTokens([1], [[N_BASE + 5]])), "outside"),
    (lambda rows, req: NewTokens([1, 2], [[0]]), "decompositions"),
    (lambda rows, req: NewTokens([1], [[0]], token_bytes=[b"a", b"b"]), "token_bytes"),
])
def test_bad_requests_are_one_line_errors(call, msg):
    with pytest.raises(TokbenchError, match=msg) as e:
        call(_base(), _request(3))
    assert "\n" not in str(e.value)


def test_from_alignment_on_real_tokenizers_and_transplant_writes_the_layers_rows(tmp_path, require_asset):
    pytest.importorskip("torch")
    from tokbench.transplant import transplant
    from tokbench.vocab import align, load_vocabulary
    from tokbench.vocab.model_io import bf16_to_f32, f32_to_bf16, open_model_folder

    base = require_asset("tbd-mistral-d128", kind="model")
    gpt2 = require_asset("gpt2", kind="tokenizer")
    al = align(load_vocabulary(base), load_vocabulary(gpt2))
    req = NewTokens.from_alignment(al)
    assert req.ids == al.new_only and len(req) > 20000
    assert req.decompositions[5] == al.decompositions[al.new_only[5]]
    assert req.token_bytes[5] == al.new.token_bytes[al.new_only[5]]
    rows = open_model_folder(base).read_embedding()
    shared_old = np.array([al.shared[i] for i in sorted(al.shared)], dtype=np.int64)
    numeric = set(al.numeric_new)
    res = make_rows("subword", rows, NewTokens.from_alignment(al, subword_only=numeric), reference=shared_old)
    _check_records(res, req, rows.shape[1])
    transplant(base, gpt2, tmp_path / "out", method="subword", progress=False)
    written = open_model_folder(tmp_path / "out")
    assert written.dtype == "BF16"  # the base's dtype is kept: the layer's float32 rows are rounded once on writing
    want = bf16_to_f32(f32_to_bf16(res.rows))
    np.testing.assert_array_equal(written.read_embedding()[al.new_only], want)
