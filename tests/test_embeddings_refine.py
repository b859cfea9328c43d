"""tokbench.embeddings.refine_rows on tiny Llama models: the base is first trained for a few seconds on the
text (so the teacher knows it), moved onto a tokenizer with other words (new rows by subword mean), then
refined. Refinement lowers the held-out loss, leaves every other row byte-identical, never returns rows worse
than the initialisation, is deterministic for a seed, keeps its bounds and refuses bad arguments in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.embeddings import check_refine_args, refine_rows
from tokbench.embeddings.refine import native_bf16
from tokbench.errors import TokbenchError
from tokbench.transplant import transplant
from tokbench.vocab import align, load_vocabulary
from tokbench.vocab.model_io import open_model_folder, read_header
from transplant_tiny import WORDS_A, WORDS_B, corpus, make_model, save_tokenizer, train_tokenizer

torch = pytest.importorskip("torch")


def _train(folder: Path, text: str, steps: int = 60) -> None:
    """A few Adam steps of next-token training, so the teacher predicts the text far better than chance."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(folder))
    lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    ids = torch.tensor(tok(text, add_special_tokens=False).input_ids)
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    n = (len(ids) // 64) * 64
    batches = ids[:n].view(-1, 64)
    for s in range(steps):
        b = batches[(s * 8) % len(batches):][:8]
        loss = lm(input_ids=b, labels=b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(base, transplanted, new ids, refine text), for a tied and an untied base."""
    root = tmp_path_factory.mktemp("refine")
    words = WORDS_A + WORDS_B
    text = "\n".join(corpus(words, 7, 4000))
    base_tok = train_tokenizer(WORDS_A, 0, 330, ["<unk>", "<s>", "</s>"])
    tgt_tok = train_tokenizer(WORDS_B, 1, 340, ["<|endoftext|>"])
    target = root / "target"
    save_tokenizer(tgt_tok, target, None, "<|endoftext|>")
    out = {}
    for tied in (True, False):
        base = make_model(root / f"base-{tied}", base_tok, tied=tied)
        _train(base, text)
        init = root / f"init-{tied}"
        transplant(base, target, init, method="subword", progress=False)
        al = align(load_vocabulary(base), load_vocabulary(target))
        out[tied] = (base, init, sorted(al.new_only), text)
    return out


def _emb(folder: Path, tied: bool) -> tuple[np.ndarray, np.ndarray | None]:
    m = open_model_folder(folder)
    return m.read_embedding(), (None if tied else m.read_head())


@pytest.mark.parametrize("tied", [True, False])
def test_refinement_lowers_held_out_loss_and_only_new_rows_move(tiny, tmp_path, tied):
    base, init, new_ids, text = tiny[tied]
    txt = tmp_path / "refine.txt"
    txt.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    rep = transplant(base, init, out, method="subword", refine_steps=30, refine_text=txt,
                     refine_options={"lr": 1e-2, "eval_every": 5, "loss": "distill_ntp"}, progress=False)
    rf = rep["refine"]
    ho = rf["held_out"]
    assert rf["returned"] == "refined" and rf["steps"] >= 5
    assert ho["best_bpb"] < ho["initial_bpb"] - 0.01, ho
    assert ho["teacher_bpb"] < ho["initial_bpb"]  # the trained teacher knows the text
    assert rf["curve"][0]["step"] == 0 and len(rf["curve"]) >= 2
    assert rf["head_rows"] == (0 if tied else len(new_ids))
    # the model written: new rows changed, every other row and tensor byte-identical to the initialisation
    e0, h0 = _emb(init, tied)
    e1, h1 = _emb(out, tied)
    other = np.setdiff1d(np.arange(e0.shape[0]), new_ids)
    assert np.array_equal(e0[other], e1[other])
    assert not np.array_equal(e0[new_ids], e1[new_ids])
    if not tied:
        assert np.array_equal(h0[other], h1[other])
        assert not np.array_equal(h0[new_ids], h1[new_ids])
    m0, m1 = open_model_folder(init), open_model_folder(out)
    names = [n for n in read_header(m0.shards[0])[0] if n not in ("__metadata__", m0.embed_name, m0.head_name)]
    from tokbench.vocab.model_io import read_tensor_f32

    for n in names:
        assert np.array_equal(read_tensor_f32(m0.shards[0], n), read_tensor_f32(m1.shards[0], n)), n
    saved = json.loads((out / "transplant_report.json").read_text())
    assert saved["refine"]["curve"] == rf["curve"]


def test_never_worse_than_the_initialisation(tiny):
    base, init, new_ids, text = tiny[True]
    res = refine_rows(base, init, new_ids, text, steps=10, lr=1.0, eval_every=2, patience=2, progress=False)
    ho = res.record["held_out"]
    assert ho["best_bpb"] <= ho["initial_bpb"]
    assert all(ho["best_bpb"] <= c["held_out_bpb"] for c in res.record["curve"])
    assert res.record["curve"][1]["held_out_bpb"] > ho["initial_bpb"]  # lr 1.0 makes the rows worse ...
    assert res.record["returned"] == "initial" and res.record["stopped"] == "early"
    e0, _ = _emb(init, True)
    assert np.array_equal(res.rows, e0[new_ids])  # ... so the initial rows come back, exactly


def test_deterministic_for_a_seed(tiny):
    base, init, new_ids, text = tiny[False]
    a = refine_rows(base, init, new_ids, text, steps=4, lr=1e-2, eval_every=2, seed=3, progress=False)
    b = refine_rows(base, init, new_ids, text, steps=4, lr=1e-2, eval_every=2, seed=3, progress=False)
    c = refine_rows(base, init, new_ids, text, steps=4, lr=1e-2, eval_every=2, seed=4, progress=False)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.head_rows, b.head_rows)
    assert [p["held_out_bpb"] for p in a.record["curve"]] == [p["held_out_bpb"] for p in b.record["curve"]]
    assert not np.array_equal(a.rows, c.rows)  # another seed draws the batches in another order


@pytest.mark.parametrize("tied", [True, False])
def test_bf16_steps_track_float32_and_evaluations_stay_float32(tiny, tied):
    base, init, new_ids, text = tiny[tied]
    kw = dict(steps=6, lr=1e-2, eval_every=2, patience=5, seed=1, progress=False)
    f = refine_rows(base, init, new_ids, text, precision="fp32", **kw)
    b = refine_rows(base, init, new_ids, text, precision="bf16", **kw)
    a = refine_rows(base, init, new_ids, text, precision="auto", **kw)
    assert (f.record["precision"], b.record["precision"]) == ("fp32", "bf16")
    assert a.record["precision"] == ("bf16" if native_bf16("cpu") else "fp32")
    fc, bc = ([p["held_out_bpb"] for p in r.record["curve"]] for r in (f, b))
    assert fc[0] == bc[0]  # the evaluation before any step is float32 in both
    assert not np.array_equal(f.rows, b.rows)  # the steps did run in bf16 ...
    assert bc[-1] < bc[0] and np.allclose(bc, fc, rtol=0.02)  # ... and learn what float32 steps learn
    assert b.rows.dtype == np.float32 and (b.head_rows is None) == tied


def test_bounds_on_steps_and_seconds(tiny):
    base, init, new_ids, text = tiny[True]
    r = refine_rows(base, init, new_ids, text, steps=3, lr=1e-3, eval_every=100, progress=False)
    assert r.record["steps"] == 3 and r.record["stopped"] == "steps"
    r = refine_rows(base, init, new_ids, text, seconds=0.5, lr=1e-3, eval_every=1000, progress=False,
                    snapshots=[0.2])
    assert r.record["stopped"] == "seconds" and r.record["steps"] >= 1
    assert r.record["seconds"] < 0.5 + 10  # one step and the final held-out pass past the bound at most
    assert set(r.snapshots) == {0.2}
    assert r.rows.shape == (len(new_ids), open_model_folder(init).hidden)


@pytest.mark.parametrize("kw,msg", [
    ({}, "needs a bound"),
    ({"seconds": 0}, "refine seconds"),
    ({"steps": 0}, "refine steps"),
    ({"steps": 1, "lr": 0}, "refine lr"),
    ({"steps": 1, "held_out": 0.9}, "refine held_out"),
    ({"steps": 1, "window": 2}, "refine window"),
    ({"steps": 1, "loss": "mse"}, "unknown refinement loss"),
    ({"steps": 1, "warmup": -1}, "refine warmup"),
    ({"steps": 1, "rows": "some"}, "unknown refinement rows mode"),
    ({"steps": 1, "head_steps": 65}, "refine head_steps"),
    ({"steps": 1, "shared": "yes"}, "refine shared"),
    ({"steps": 1, "precision": "fp16"}, "unknown refinement precision"),
])
def test_bad_arguments_one_line(kw, msg):
    with pytest.raises(TokbenchError, match=msg) as exc:
        check_refine_args(kw.pop("seconds", None), kw.pop("steps", None), **kw)
    assert "\n" not in str(exc.value)


def test_bad_inputs_one_line(tiny, tmp_path):
    base, init, new_ids, text = tiny[True]
    with pytest.raises(TokbenchError, match="domain 'b' is not a string"):
        refine_rows(base, init, new_ids, {"a": text, "b": 3}, steps=1, progress=False)
    with pytest.raises(TokbenchError, match="domain 'b' is too short"):
        refine_rows(base, init, new_ids, {"a": text, "b": "the cat."}, steps=1, progress=False)
    with pytest.raises(TokbenchError, match="outside the student"):
        refine_rows(base, init, [10**6], text, steps=1, progress=False)
    with pytest.raises(TokbenchError, match="too short"):
        refine_rows(base, init, new_ids, "the cat.", steps=1, progress=False)
    r = CliRunner().invoke(main, ["transplant", str(base), "-t", str(init), "--method", "subword", "--refine", "5",
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--refine-text" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["transplant", str(base), "-t", str(init), "--method", "subword", "--refine", "-1",
                                  "--refine-text", "x.txt", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "refine seconds" in r.output


def test_cached_teacher_equals_recomputed(tiny):
    """The teacher's chunk log-likelihoods, computed once per segment (in whatever batch first held it) and
    cached, equal those of the teacher run on that segment alone and those of its plain full-logits forward."""
    from transformers import AutoTokenizer

    from tokbench.embeddings.refine import _load, _segments, teacher_chunk_logprobs

    base, init, new_ids, text = tiny[False]
    t_tok, t_lm, split = _load(base, "teacher", "cpu")
    segs = _segments(text[:6000], AutoTokenizer.from_pretrained(str(init)), t_tok, 48, 80)
    assert len(segs) >= 6 and len({len(s.teacher) for s in segs[:6]}) > 1  # padded batches
    together = teacher_chunk_logprobs(split, segs[:6], "cpu")
    alone = [teacher_chunk_logprobs(split, [s], "cpu") for s in segs[:6]]
    assert torch.allclose(together, torch.cat(alone), atol=1e-4, rtol=0)
    s = segs[2]
    with torch.inference_mode():
        lp = torch.log_softmax(t_lm(input_ids=torch.tensor([s.teacher])).logits[0, :-1].double(), -1)
    tok_lp = lp.gather(-1, torch.tensor(s.teacher[1:]).unsqueeze(-1)).squeeze(-1).numpy()
    want = np.zeros(len(s.chunk_bytes))
    np.add.at(want, s.t_chunk[1:], tok_lp)
    assert np.allclose(alone[2].numpy(), want[1:], atol=1e-4)
    # in training, every segment's teacher pass runs once however many epochs the steps take
    r = refine_rows(base, init, new_ids, text[:12000], steps=40, lr=1e-2, batch=4, window=48, eval_every=100,
                    loss="distill_ntp", progress=False)
    assert r.record["teacher_cached_segments"] == r.record["train"]["segments"] < 40 * 4
    assert r.record["held_out"]["best_bpb"] < r.record["held_out"]["initial_bpb"]


def test_a_domain_that_gets_worse_keeps_the_initial_rows(tiny):
    """Per-domain never-worse: refined on the mixed text, the rows improve its held-out slice; a second domain
    of words both tokenizers share (no new id to train) gets worse as new tokens gain probability, so with
    the two as domains the rows are refused although the total held-out bits/byte improved."""
    base, init, new_ids, text = tiny[True]
    shared = "\n".join(corpus(["the", "cat", "and", "one"], 9, 1500))
    kw = dict(steps=8, lr=3e-2, eval_every=4, patience=5, shared=False, progress=False)
    plain = refine_rows(base, init, new_ids, text, **kw)
    assert plain.record["returned"] == "refined"
    r = refine_rows(base, init, new_ids, {"mix": text, "shared": shared}, **kw)
    c = r.record["curve"]
    assert [p["step"] for p in c] == [0, 4, 8]
    assert all(p["held_out_bpb"] < c[0]["held_out_bpb"] for p in c[1:])  # better in total ...
    assert all(p["worse_on"] == ["shared"] for p in c[1:])  # ... but worse on one domain
    assert all(p["domains"]["mix"] < c[0]["domains"]["mix"] for p in c[1:])
    assert r.record["returned"] == "initial" and r.record["best_step"] == 0
    assert r.record["train"]["segments_without_new_ids_dropped"] > 0  # the shared-words text trains nothing
    e0, _ = _emb(init, True)
    assert np.array_equal(r.rows, e0[new_ids])


def test_touched_rows_only(tiny):
    """rows="touched": a new row that no training segment holds keeps its initial value exactly; rows="all"
    moves it (plain Adam: its logit is pushed down through the softmax)."""
    from transformers import AutoTokenizer

    base, init, new_ids, text = tiny[True]
    part = "\n".join(corpus(["the", "cat", "ran", "far", "into", "forest"], 5, 3000))
    used = set(AutoTokenizer.from_pretrained(str(init))(part, add_special_tokens=False).input_ids)
    absent = [k for k, i in enumerate(new_ids) if i not in used]
    present = [k for k, i in enumerate(new_ids) if i in used]
    assert absent and present
    e0, _ = _emb(init, True)
    kw = dict(steps=6, lr=1e-2, eval_every=100, shared=False, progress=False)
    t = refine_rows(base, init, new_ids, part, rows="touched", **kw)
    a = refine_rows(base, init, new_ids, part, rows="all", **kw)
    assert t.record["returned"] == "refined" and a.record["returned"] == "refined"
    assert np.array_equal(t.rows[absent], e0[new_ids][absent])
    assert not np.array_equal(a.rows[absent], e0[new_ids][absent])
    assert not np.array_equal(t.rows[present], e0[new_ids][present])
    assert 0 < t.record["rows_updated"] <= len(present) < a.record["rows_updated"] == len(new_ids)


def test_head_steps_learn_more_per_body_pass(tiny):
    """head_steps: extra output-side Adam steps on each step's hidden states lower the held-out loss further for
    the same number of body passes, and only new rows move (the untied head's too)."""
    base, init, new_ids, text = tiny[False]
    kw = dict(steps=5, lr=1e-2, eval_every=5, loss="ntp", progress=False)
    plain = refine_rows(base, init, new_ids, text, **kw)
    more = refine_rows(base, init, new_ids, text, head_steps=3, **kw)
    a, b = plain.record["held_out"], more.record["held_out"]
    assert a["initial_bpb"] == b["initial_bpb"]
    assert b["best_bpb"] < a["best_bpb"] - 0.01, (a, b)
    assert more.record["head_steps"] == 3 and more.record["returned"] == "refined"
    assert not np.array_equal(more.head_rows, plain.head_rows)


def test_shared_map_moves_rows_no_batch_holds(tiny):
    """shared=True: one affine map of the initial new rows, trained with the per-row deltas, reaches the new rows
    that no training segment holds (rows="touched" alone leaves them exactly as they were) and lowers the
    held-out loss of text that uses them further for the same steps."""
    from transformers import AutoTokenizer

    base, init, new_ids, text = tiny[True]
    part = "\n".join(corpus(["the", "cat", "ran", "far", "into", "forest"], 5, 3000))
    tail = text[-8000:]  # the held-out half: new tokens the part never shows
    assert len(part) > len(tail)  # so the cut at half the text falls inside the part
    used = set(AutoTokenizer.from_pretrained(str(init))(part, add_special_tokens=False).input_ids)
    absent = [k for k, i in enumerate(new_ids) if i not in used]
    e0, _ = _emb(init, True)
    kw = dict(held_out=0.5, steps=6, lr=1e-2, eval_every=3, loss="ntp", progress=False)
    own = refine_rows(base, init, new_ids, part + "\n" + tail, shared=False, **kw)
    sh = refine_rows(base, init, new_ids, part + "\n" + tail, shared=True, **kw)
    assert own.record["returned"] == sh.record["returned"] == "refined"
    assert np.array_equal(own.rows[absent], e0[new_ids][absent])
    assert not np.array_equal(sh.rows[absent], e0[new_ids][absent])
    a, b = own.record["held_out"], sh.record["held_out"]
    assert b["best_bpb"] < a["best_bpb"] - 0.02, (a, b)
    assert sh.record["shared"] is True


def test_transplant_refine_text_of_several_domains(tiny, tmp_path):
    """transplant(refine_text="a,b"): one domain per text, refine_max_chars split evenly, each one's held-out
    slice in the record; an empty name in the list is refused in one line before any work."""
    base, init, new_ids, text = tiny[True]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    mid = len(text) // 2
    assert mid > 6000
    a.write_text(text[:mid], encoding="utf-8")
    b.write_text(text[mid:], encoding="utf-8")
    rep = transplant(base, init, tmp_path / "out", method="subword", refine_steps=2, refine_text=f"{a},{b}",
                     refine_max_chars=12000, refine_options={"lr": 1e-2, "eval_every": 1}, progress=False)
    rf = rep["refine"]
    assert set(rf["domains"]) == {str(a), str(b)} and rf["chars"] == 12000
    assert all(d["chars"]["train"] + d["chars"]["held_out"] == 6000 for d in rf["domains"].values())
    assert all(set(p["domains"]) == {str(a), str(b)} for p in rf["curve"])
    with pytest.raises(TokbenchError, match="empty or repeated corpus name"):
        transplant(base, init, tmp_path / "o2", method="subword", refine_steps=2, refine_text=f"{a},,{b}",
                   progress=False)
    assert not (tmp_path / "o2").exists()
