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
    r = CliRunner().invoke(main, ["dynamic", "ann", "--rows", "49152", "--index", "factored", "--queries", "24",
                                  "--threads", "2", "--repeats", "3", "--json", str(out), "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["index"]["params"]["kind"] == "factored" and data["index"]["top1"] == 1.0
    assert data["index"]["max_abs_logit_diff"] < 1e-4 and "factored max |logit diff|" in r.output


# the factored index (tokbench.dynamic.factored): exact top-k over rows that are combinations of base rows -------

def _same_topk(ids, scores, ex, tol=1e-4):
    """ids/scores equal the exact top-k up to float rounding: the scores agree per rank, and ids differ only
    where the exact logits tie within tol (a swap among equal rows is no error)."""
    np.testing.assert_allclose(scores, ex.scores, rtol=0, atol=tol)
    for q in range(len(ids)):
        diff = set(ids[q].tolist()) ^ set(ex.ids[q].tolist())
        assert not diff or abs(float(ex.scores[q, -1]) - float(scores[q, -1])) <= tol, (q, diff)
        moved = ids[q] != ex.ids[q]
        assert (np.abs(ex.scores[q][moved] - scores[q][moved]) <= tol).all()


@pytest.fixture(scope="module")
def smollm2_dynamic():
    """SmolLM2's head rows and the dynamic tokens of 32 WikiText-2 test lines merged to exhaustion (word mode)."""
    from conftest import require_asset
    from tokbench.dynamic import DynamicTokenizer, merge_batch
    from tokbench.dynamic.ann_data import load_head
    from tokbench.dynamic.stats import corpus_lines

    require_asset("smollm2-135m", "model")
    require_asset("wikitext2-test")
    head = load_head("smollm2-135m")[0]
    lines = [t for t in corpus_lines("wikitext2-test") if t.strip()][:32]
    return head, merge_batch(DynamicTokenizer.load("smollm2"), lines)


@pytest.mark.parametrize("method", ["mean", "position_mean", "omp", "omp_capped"])
def test_factored_topk_equals_exact_on_real_rows(smollm2_dynamic, ann_cache, method):
    from tokbench.dynamic import dynamic_rows
    from tokbench.dynamic.factored import FactoredIndex, combinations_from_records
    from tokbench.embeddings import RowStats

    head, mb = smollm2_dynamic
    h = ann_cache[1]
    kw = {}
    if method.startswith("omp"):  # OMP over the model's own rows (8,192 anchors: keeps the test fast)
        anchors = np.arange(8192)
        kw = dict(k=8, ridge=0.1, anchors=(anchors, anchors))
        if method == "omp_capped":  # a norm cap below most rows: the initialiser shrinks them in place
            st = RowStats.of(head)
            kw["stats"] = RowStats(st.mean, st.std, st.cap * 0.5, st.reference)
    new = dynamic_rows(mb, head, method.split("_capped")[0], **kw)
    assert len(new.records) == len(mb.tokens) >= 50
    if method == "omp_capped":
        assert sum(r["norm_capped"] for r in new.records) >= len(new.records) // 2
    coeffs, atoms = combinations_from_records(new.records, head.shape[0], rows=new.rows, base_rows=head,
                                              mean_row=kw["stats"].mean if "stats" in kw else None)
    table = np.concatenate([head, new.rows])  # what the dense exact path multiplies
    bias = (np.random.default_rng(3).standard_normal(len(table)) * 4).astype(np.float32)
    bias[head.shape[0]:] += 12  # lifts the merged rows into the top 20 (each has its own free bias)
    # pruned, full pass, numpy, and the int8 prefilter (pruned and full): the same top-k and scores
    engines = ({"engine": "rust"}, {"engine": "rust", "prune": 0}, {"engine": "numpy"},
               {"engine": "rust", "prefilter": "int8"}, {"engine": "rust", "prune": 0, "prefilter": "int8"})
    plain = {}
    for bias, kw in [(b, e) for b in (None, bias) for e in engines]:
        ix = FactoredIndex(head, coeffs, bias, atoms=atoms, **kw)
        assert np.abs(ix.materialize() - table).max() < 1e-5
        ex = exact_topk(table, bias, h, 20)
        ids, scores = ix.search(h, 20)
        _same_topk(ids, scores, ex)
        assert (ids[:, 0] == ex.ids[:, 0]).all() and recall_at(ids, ex.ids, 20) >= 0.99
        assert (ids >= head.shape[0]).any() or method == "omp_capped" and bias is None  # merged rows in the top 20
        r = evaluate(ix, h, ex, 20)
        assert r["top1"] == 1.0 and r["mass_outside_mean"] == pytest.approx(
            float(np.mean(softmax_mass_outside(h, ex.ids, table, bias, lse=ex.lse))), abs=1e-5)
        one, _ = ix.search(h[:1], 20)  # batch 1 takes the matrix-vector path
        assert (one == ids[:1]).all()
        key = (bias is not None, kw.get("prune", 4))
        if kw["engine"] == "rust" and "prefilter" not in kw:
            plain[key] = ids, scores
        elif kw.get("prefilter"):  # bit-identical to the plain kernel: same ids, same float32 sums
            assert (ids == plain[key][0]).all() and (scores == plain[key][1]).all()


def test_factored_inline_postings_keep_ties_and_equal_the_full_pass(smollm2_dynamic, ann_cache):
    """The walk over the inline postings (each convex row's coefficients stored with every atom it holds) returns
    bit-identically what one pass over all rows returns, on real rows with exact ties: every merged token of 32
    WikiText-2 lines twice (the same row and bias: equal logits, broken by id) and once more naming its first
    constituent twice; best first, ties by id, and equal to the exact top-k over the dense rows."""
    from tokbench.dynamic.factored import FactoredIndex, combine

    head, mb = smollm2_dynamic
    h = ann_cache[1]
    n_base, toks = head.shape[0], [list(t) for t in mb.tokens]
    rows = toks + toks + [t + t[:1] for t in toks]
    coeffs = combine([(t, None) for t in rows], n_base)
    rng = np.random.default_rng(5)
    b = (rng.standard_normal(n_base + len(toks)) * 4).astype(np.float32)
    b[n_base:] += 12  # lifts the merged rows into the top 20
    bias = np.concatenate([b, b[n_base:], b[n_base:]])
    full = FactoredIndex(head, coeffs, bias, prune=0)
    want_ids, want_scores = full.search(h, 20)
    table = full.materialize()
    _same_topk(want_ids, want_scores, exact_topk(table, bias, h, 20))
    n, tied = len(toks), 0
    for q in range(len(h)):  # best first, equal scores in ascending id order; duplicates appear as pairs
        i, sc = want_ids[q], want_scores[q]
        assert ((sc[:-1] > sc[1:]) | ((sc[:-1] == sc[1:]) & (i[:-1] < i[1:]))).all()
        tied += len({int(x) for x in i if n_base <= x < n_base + n} & {int(x) - n for x in i if x >= n_base + n})
    assert tied >= len(h)  # exact ties in the top 20: a row next to its copy
    for kw in ({}, {"prune": 1}, {"prefilter": "int8"}, {"prefilter": "int8", "prune": 0}):
        ix = FactoredIndex(head, coeffs, bias, **kw)
        ids, scores = ix.search(h, 20)
        assert (ids == want_ids).all() and (scores == want_scores).all(), kw
        one = ix.search(h[:1], 20)
        assert (one[0] == want_ids[:1]).all() and (one[1] == want_scores[:1]).all()


def test_factored_head_rows_coefficients_rebuild_the_table(ann_cache, tmp_path):
    from tokbench.dynamic.ann_data import head_rows, load_head
    from tokbench.dynamic.factored import FactoredIndex

    head = load_head("smollm2-135m")[0]
    text = tmp_path / "lines.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\nThe lazy dog sleeps under the brown tree.\n" * 20)
    for method in ("mean", "position_mean"):
        hr = head_rows("smollm2-135m", 49152 + 30, corpora=(str(text),), cache_dir=tmp_path, method=method)
        again = head_rows("smollm2-135m", 49152 + 30, corpora=(str(text),), cache_dir=tmp_path, method=method)
        assert again.constituents is None and all((a == b).all() for a, b in zip(hr.coeffs, again.coeffs))
        ix = FactoredIndex(head, again.coeffs)
        full = ix.materialize()
        assert np.abs(full - hr.rows.astype(np.float32)).max() < 2e-3  # the stored rows are the fp16 of these
        ex = exact_topk(full, None, ann_cache[1], 20)
        _same_topk(*ix.search(ann_cache[1], 20), ex)
        _same_topk(*FactoredIndex(head, again.coeffs, engine="numpy").search(ann_cache[1], 20), ex)


def test_factored_bad_inputs_are_one_line_errors(smollm2_dynamic):
    import scipy.sparse as sp

    from tokbench import _core
    from tokbench.dynamic import dynamic_rows
    from tokbench.dynamic.factored import FactoredIndex, combinations_from_records

    rows, _, h = _random(n=50, d=8, nq=2)
    good = (np.array([0, 2, 3]), np.array([1, 4, 7]), np.array([0.5, 0.5, 1.0], np.float32))
    with pytest.raises(TokbenchError, match=r"coefficient columns must lie in 0\.\.49"):
        FactoredIndex(rows, (good[0], np.array([1, 50, 7]), good[2]))
    with pytest.raises(TokbenchError, match=r"coefficient columns must lie in 0\.\.50"):  # one extra atom
        FactoredIndex(rows, (good[0], np.array([1, -1, 7]), good[2]), atoms=rows[:1])
    with pytest.raises(TokbenchError, match="not a valid CSR layout"):
        FactoredIndex(rows, (np.array([0, 2, 5]), good[1], good[2]))
    with pytest.raises(TokbenchError, match="has 40 columns, not 50"):
        FactoredIndex(rows, sp.csr_matrix(np.ones((3, 40), np.float32)))
    with pytest.raises(TokbenchError, match=r"extra atoms must be \(a, 8\)"):
        FactoredIndex(rows, good, atoms=np.ones((1, 5), np.float32))
    with pytest.raises(TokbenchError, match="bias must be 52 finite numbers"):
        FactoredIndex(rows, good, np.zeros(50, np.float32))
    with pytest.raises(TokbenchError, match="NaN"):
        FactoredIndex(rows, (good[0], good[1], np.array([0.5, np.nan, 1.0], np.float32)))
    with pytest.raises(TokbenchError, match="base rows must be a float16/float32"):
        FactoredIndex(rows.astype(np.float64), good)
    with pytest.raises(TokbenchError, match="not exactly bfloat16"):
        FactoredIndex(rows, good, storage="bf16")
    with pytest.raises(TokbenchError, match="unknown engine 'gpu'"):
        FactoredIndex(rows, good, engine="gpu")
    with pytest.raises(TokbenchError, match="unknown prefilter 'int4'.*none, int8"):
        FactoredIndex(rows, good, prefilter="int4")
    with pytest.raises(TokbenchError, match="int8 prefilter needs the Rust engine"):
        FactoredIndex(rows, good, engine="numpy", prefilter="int8")
    with pytest.raises(ValueError, match="column 50 is not an atom"):  # the kernel checks on its own too
        _core.FactoredTopk(rows.tobytes(), 8, 50, False, good[0].astype("<u8").tobytes(),
                           np.array([1, 50, 7], "<u4").tobytes(), good[2].tobytes())
    ix = FactoredIndex(rows, good)
    with pytest.raises(TokbenchError, match=r"hidden states must be \(batch, 8\)"):
        ix.search(h[:, :4], 5)
    with pytest.raises(TokbenchError, match="k must be in 1..52"):
        ix.search(h, 60)
    with pytest.raises(TokbenchError, match="coefficients must be a sparse matrix"):
        FactoredIndex(rows, [1, 2, 3])
    head, mb = smollm2_dynamic
    new = dynamic_rows(mb, head, "mean")
    with pytest.raises(TokbenchError, match=r"'random', which is not a fixed combination.*FAISS index kind"):
        combinations_from_records([{"method": "random", "seed": 0}], head.shape[0])
    bent = new.rows.copy()
    bent[3] += 0.05  # e.g. a learned pooling net's row: not the mean its record names
    with pytest.raises(TokbenchError, match=r"row 3 \(subword\) is not the combination its record states"):
        combinations_from_records(new.records, head.shape[0], rows=bent, base_rows=head)
