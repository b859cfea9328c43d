"""ANN decoding (tokbench.dynamic.ann): the exact reference equals BLAS, the MIPS-to-L2 transform keeps the model's
argmax with a bias where cosine does not, recall / softmax mass are computed right, real head rows and hidden
states of SmolLM2, bad arguments give one line."""
from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.dynamic.ann import (OutputIndex, evaluate, exact_topk, logits_of, recall_at, softmax_mass_outside)
from tokbench.errors import TokbenchError


def _random(n=3000, d=32, nq=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, (n, 1))).astype(np.float32)
    bias = (rng.standard_normal(n) * 2).astype(np.float32)
    return rows, bias, rng.standard_normal((nq, d)).astype(np.float32)


def _blas_topk(rows, bias, h, k):
    logits = h.astype(np.float64) @ rows.astype(np.float64).T + (0 if bias is None else bias)
    return np.argsort(-logits, axis=1, kind="stable")[:, :k], logits


def test_exact_reference_and_flat_index_equal_blas_topk():
    rows, bias, h = _random()
    ref, logits = _blas_topk(rows, bias, h, 20)
    for chunk in (rows.shape[0], 700):  # one matmul, and row chunks merged
        ex = exact_topk(rows, bias, h, 20, chunk=chunk)
        assert (ex.ids == ref).all()
        np.testing.assert_allclose(ex.scores, np.take_along_axis(logits, ref, 1), rtol=1e-5, atol=1e-4)
        m = logits.max(1, keepdims=True)
        np.testing.assert_allclose(ex.lse, (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0], rtol=1e-6)
    for storage in ("fp32", "fp16"):
        ids, scores = OutputIndex(rows.astype(np.float16) if storage == "fp16" else rows, bias, kind="flat",
                                  storage=storage, rerank=20).search(h, 20)
        want = ref if storage == "fp32" else exact_topk(rows.astype(np.float16), bias, h, 20).ids
        assert (ids == want).all()


def test_exhaustive_ivf_and_hnsw_on_the_transform_are_exact():
    rows, bias, h = _random(n=2000)
    ref, _ = _blas_topk(rows, bias, h, 10)
    ivf = OutputIndex(rows, bias, kind="ivf", storage="fp32", nlist=8, nprobe=8, rerank=10)
    assert (ivf.search(h, 10)[0] == ref).all()  # every cell probed: the L2 transform is exactly MIPS
    hn = OutputIndex(rows, bias, kind="hnsw", storage="fp32", m=16, ef_search=2000, rerank=10)
    assert recall_at(hn.search(h, 10)[0], ref, 10) >= 0.99


def test_mips_transform_keeps_the_argmax_with_a_bias_and_cosine_does_not():
    rng = np.random.default_rng(1)
    d = 8
    rows = (rng.standard_normal((500, d)) * 0.1).astype(np.float32)
    h = np.zeros((1, d), np.float32)
    h[0, 0] = 10.0
    rows[0] = 0.0
    rows[0, 0] = 1.0  # cosine 1 with h, logit 10 - 10 = 0
    rows[1] = 0.0
    rows[1, 0], rows[1, 1] = 3.0, 3.0  # cosine 0.71, logit 30 + 5 = 35: the model's argmax
    bias = np.zeros(500, np.float32)
    bias[0], bias[1] = -10.0, 5.0
    ex = exact_topk(rows, bias, h, 5)
    assert ex.ids[0, 0] == 1
    for kind in ("ivf", "hnsw", "flat"):
        ix = OutputIndex(rows, bias, kind=kind, storage="fp32", nlist=4, nprobe=4, rerank=5)
        assert ix.search(h, 5)[0][0, 0] == 1, kind
    cos = OutputIndex(rows, bias, kind="flat", metric="cosine", storage="fp32", rerank=5)
    assert cos.search(h, 5)[0][0, 0] == 0
    assert evaluate(cos, h, ex, 5)["top1"] == 0.0
    dropped = OutputIndex(rows, None, kind="ivf", storage="fp32", nlist=4, nprobe=4, rerank=5)  # bias ignored
    ids, scores = dropped.search(h, 5)
    assert ids[0, 0] == 1 and scores[0, 0] == pytest.approx(30.0)  # right here only because the norm wins
    bias[1] = -40.0  # row 1's logit drops to -10: the argmax moves to another row
    ex2 = exact_topk(rows, bias, h, 5)
    assert ex2.ids[0, 0] != 1 and dropped.search(h, 5)[0][0, 0] == 1  # dropping the bias picks the wrong row
    assert OutputIndex(rows, bias, kind="ivf", storage="fp32", nlist=4, nprobe=4).search(h, 5)[0][0, 0] == ex2.ids[0, 0]


def test_recall_top1_and_softmax_mass_outside():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[2, 1, 9, -1], [5, 6, 7, 8]])
    assert recall_at(found, truth, 4) == pytest.approx((2 / 4 + 1) / 2)
    assert recall_at(found, truth, 2) == pytest.approx((1 + 1) / 2)
    rows, bias, h = _random(n=500, nq=5)
    cand = np.array([[0, 1, 2], [3, 3, 4], [5, 6, 7], [8, 9, 10], [11, 12, 13]])
    _, logits = _blas_topk(rows, bias, h, 1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = 1 - np.array([p[q, np.unique(c)].sum() for q, c in enumerate(cand)])
    np.testing.assert_allclose(softmax_mass_outside(h, cand, rows, bias), want, atol=1e-6)
    ex = exact_topk(rows, bias, h, 20)
    r = evaluate(OutputIndex(rows, bias, kind="flat", storage="fp32", rerank=20), h, ex, 20)
    assert r["recall@1"] == r["recall@20"] == r["top1"] == 1.0
    assert r["mass_outside_mean"] == pytest.approx(float(np.mean(1 - np.sort(p, 1)[:, -20:].sum(1))), abs=1e-6)
    np.testing.assert_allclose(logits_of(rows, bias, h, ex.ids), ex.scores, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def ann_cache(tmp_path_factory):
    """A cache folder holding 24 real SmolLM2 hidden states (one model run for the module)."""
    from tokbench.assets import resolve
    from tokbench.dynamic.ann_data import hidden_states

    from conftest import require_asset

    require_asset("smollm2-135m", "model")
    folder = tmp_path_factory.mktemp("ann-cache")
    return folder, hidden_states(resolve("smollm2-135m", kind="model"), positions=24, cache_dir=folder, threads=2)


def test_real_smollm2_rows_and_hidden_states(ann_cache, tmp_path):
    from tokbench.dynamic.ann_data import head_rows, hidden_states, load_head

    folder, h = ann_cache
    head, bias, _ = load_head("smollm2-135m")
    assert head.shape == (49152, 576) and bias is None
    text = tmp_path / "lines.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\nThe lazy dog sleeps under the brown tree.\n" * 20)
    hr = head_rows("smollm2-135m", 49152 + 30, corpora=(str(text),), cache_dir=tmp_path)
    assert hr.rows.dtype == np.float16 and hr.rows.shape == (49182, 576) and hr.n_dynamic + hr.n_ngram == 30
    for t, cons in enumerate(hr.constituents):
        np.testing.assert_allclose(hr.rows[49152 + t].astype(np.float32), head[list(cons)].mean(0), atol=2e-3)
    assert (hr.rows[:49152] == head.astype(np.float16)).all()
    again = head_rows("smollm2-135m", 49152 + 30, corpora=(str(text),), cache_dir=tmp_path)  # from the cache
    assert (again.rows == hr.rows).all()
    assert h.shape == (24, 576)
    assert (hidden_states("smollm2-135m", positions=24, cache_dir=folder) == h).all()  # from the cache
    sub = np.ascontiguousarray(hr.rows[::4])  # a real subset: every 4th row
    ex = exact_topk(sub, None, h, 20)
    ref, _ = _blas_topk(sub.astype(np.float32), None, h, 20)
    assert (ex.ids[:, 0] == ref[:, 0]).all() and recall_at(ex.ids, ref, 20) >= 0.99  # float32 vs float64 ties
    ivf = OutputIndex(sub, None, kind="ivf", nlist=16, nprobe=16, rerank=20)
    assert evaluate(ivf, h, ex, 20)["top1"] == 1.0
    cos = exact_topk(sub, None, h, 20, metric="cosine")
    assert recall_at(cos.ids, ex.ids, 20) < 0.9  # the reference repo's cosine loses the model's top 20


def test_bad_arguments_are_one_line_errors(monkeypatch):
    rows, bias, h = _random(n=200)
    with pytest.raises(TokbenchError, match="unknown index kind"):
        OutputIndex(rows, bias, kind="lsh")
    with pytest.raises(TokbenchError, match="unknown index storage"):
        OutputIndex(rows, bias, storage="int4")
    with pytest.raises(TokbenchError, match="nlist must be in 1..200"):
        OutputIndex(rows, bias, kind="ivf", nlist=500)
    with pytest.raises(TokbenchError, match="bias must be 200"):
        exact_topk(rows, bias[:10], h, 5)
    with pytest.raises(TokbenchError, match=r"hidden states must be \(batch, 32\)"):
        exact_topk(rows, bias, h[:, :8], 5)
    with pytest.raises(TokbenchError, match="NaN"):
        exact_topk(rows, bias, np.full((1, 32), np.nan, np.float32), 5)
    with pytest.raises(TokbenchError, match="k must be in 1..200"):
        exact_topk(rows, bias, h, 0)
    with pytest.raises(TokbenchError, match="float16 or float32"):
        exact_topk(rows.astype(np.float64), bias, h, 5)
    with pytest.raises(TokbenchError, match="candidate ids must lie"):
        softmax_mass_outside(h[:1], np.array([[0, 999]]), rows, bias)
    real_import = builtins.__import__

    def no_faiss(name, *a, **kw):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(TokbenchError, match=r"faiss-cpu.*tokbench\[ann\]"):
        OutputIndex(rows, bias, kind="flat")


def test_cli_ann_bad_args_exit_2_and_small_run(ann_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKBENCH_ANN_CACHE", str(ann_cache[0]))  # the module's hidden states, no second model run
    r = CliRunner().invoke(main, ["dynamic", "ann", "--rows", "100", "-q"])
    assert r.exit_code == 2 and "rows must be in 49152..20000000" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["dynamic", "ann", "--index", "lsh"])
    assert r.exit_code == 2 and "lsh" in r.output
    out = tmp_path / "ann.json"
    r = CliRunner().invoke(main, ["dynamic", "ann", "--rows", "49152", "--index", "flat", "--queries", "24",
                                  "--threads", "2", "--repeats", "3", "--json", str(out), "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["rows"] == 49152 and data["index"]["top1"] == 1.0 and data["index"]["recall@20"] == 1.0
    assert "top-1 agreement 1.000" in r.output and "x at batch 1" in r.output
