"""tokbench boundaries: causality of every arm, deterministic evaluation, training lowers the loss, atomic
checkpoints and resume, priors from the real Tatoeba split (MAGNET's 0.2 / 0.1 / 0.08), script routing, the
parity arithmetic on real parallel text against known tokenizers, export round trips, one-line errors."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tokbench.boundaries.data import load_splits, tatoeba_cut
from tokbench.boundaries.metrics import Segmenter, boundary_f1, route_for, word_ends
from tokbench.boundaries.model import HourglassLM, ModelConfig
from tokbench.boundaries.predictors import binomial_loss, hinge_loss, sample_boundaries
from tokbench.boundaries.priors import MAGNET_RELEASED, check_prior, parallel_priors
from tokbench.boundaries.scripts import dominant_group
from tokbench.boundaries.train import PRESETS, TrainConfig, load_checkpoint, load_model, train
from tokbench.cli import main
from tokbench.errors import TokbenchError
from tokbench.fairness import spread

torch.set_num_threads(1)
ARMS = ("dtp", "priors", "magnet", "bytes")


@pytest.fixture(scope="module")
def splits(require_asset):
    return load_splits(tatoeba=require_asset("tatoeba", "corpus"), udhr=require_asset("udhr", "corpus"),
                       english_train=require_asset("gutenberg", "corpus"),
                       english_test=require_asset("wikitext2-test", "corpus"), english_train_bytes=150_000)


@pytest.fixture(scope="module")
def runs(splits, tmp_path_factory):
    """50 steps of two arms on the test preset (shared by the tests below)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for arm in ("dtp", "magnet"):
        cfg = TrainConfig(preset="test", arm=arm, steps=50, log_every=10, checkpoint_every=25, threads=1)
        out[arm] = (root / arm, train(cfg, root / arm, splits=splits, progress=False))
    return out


def _model(arm: str, seed: int = 0) -> HourglassLM:
    """A test-preset model whose predictors fire on about half the bytes (a fresh one fires on none at
    evaluation: its bias sits at the prior, below the 0.5 threshold)."""
    torch.manual_seed(seed)
    routes = ["cyrillic", "latin"] if arm == "magnet" else ["all"]
    cfg = ModelConfig(**PRESETS["test"]["model"], arm=arm, routes=routes, route_priors=[0.2] * len(routes))
    m = HourglassLM(cfg)
    if m.predictor is not None:
        with torch.no_grad():
            m.predictor.b2.zero_()
            m.predictor.w2.normal_(0, 3.0)
    return m


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_changing_later_bytes_changes_nothing_before(arm, mode):
    m = _model(arm)
    m.train(mode == "train")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 64), generator=g)
    route = torch.tensor([0, 1, 0]) if arm == "magnet" else torch.zeros(3, dtype=torch.long)
    base = m(x, route, generator=torch.Generator().manual_seed(7))
    if base["boundaries"] is not None:
        rate = base["boundaries"].mean().item()
        assert 0.1 < rate < 0.9, rate  # the test must exercise shortening
    for t in (0, 5, 31, 62):
        y = x.clone()
        y[:, t + 1:] = torch.randint(0, 256, (3, 63 - t), generator=g)
        assert not torch.equal(x[:, t + 1:], y[:, t + 1:])
        other = m(y, route, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(other["logits"][:, :t + 1], base["logits"][:, :t + 1], rtol=0, atol=1e-5)
        if base["boundaries"] is not None:
            assert torch.equal(other["boundaries"][:, :t + 1], base["boundaries"][:, :t + 1])
        if mode == "eval" and t < 62:  # the later bytes do matter (the test can fail)
            assert not torch.allclose(other["logits"][:, t + 1:], base["logits"][:, t + 1:])


def test_two_evaluation_passes_are_bit_identical(splits, runs):
    for arm in ("dtp", "magnet"):
        m, state = load_model(runs[arm][0])
        x = torch.from_numpy(np.frombuffer(splits.test["rus"][:640].encode()[:640], dtype=np.uint8)
                             .astype(np.int64).reshape(10, 64))
        a, b = m(x), m(x)
        assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["boundaries"], b["boundaries"])
    m = _model("magnet")
    seg = Segmenter(m, ["latin", "cyrillic"])
    lines = splits.test["rus"].split("\n")[:40] + splits.test["eng"].split("\n")[:40]
    first, second = seg.ends(lines), seg.ends(lines)
    assert first == second
    assert sum(len(e) for e in first) > 2 * len(lines)  # non-trivial segmentations


def test_fifty_steps_of_two_arms_lower_the_loss(runs):
    for arm, (folder, summary) in runs.items():
        log = summary["log"]
        assert summary["step"] == 50 and summary["finished"] and len(log) == 5
        assert log[-1]["loss"] < log[0]["loss"] - 0.3, (arm, log[0]["loss"], log[-1]["loss"])
        assert set(log[-1]["rate"]) == {"latin", "cyrillic", "indic"}
        assert (folder / "train.json").is_file() and load_checkpoint(folder)["step"] == 50
    # MAGNET's routes are the script groups, each predictor's bias initialised at its prior
    m, state = load_model(runs["magnet"][0])
    assert m.cfg.routes == ["cyrillic", "indic", "latin"]
    assert m.cfg.route_priors == pytest.approx([state["priors"]["scripts"][g] for g in m.cfg.routes])
    # training rates follow the priors early on (bias at logit(prior))
    first = runs["magnet"][1]["log"][0]["rate"]
    for g, r in first.items():
        assert abs(r / state["priors"]["scripts"][g] - 1) < 0.5, (g, r)


def test_resume_continues_the_same_run(splits, runs, tmp_path):
    cfg = TrainConfig(preset="test", arm="dtp", steps=50, log_every=10, checkpoint_every=25, threads=1)
    half = train(cfg, tmp_path, splits=splits, progress=False, stop_at=30)
    assert half["step"] == 30 and not half["finished"]
    with pytest.raises(TokbenchError, match="already holds a checkpoint"):
        train(cfg, tmp_path, resume=False, splits=splits, progress=False)
    resumed = train(cfg, tmp_path, splits=splits, progress=False)
    straight = runs["dtp"][1]
    assert resumed["step"] == 50 and resumed["finished"]
    assert [e["loss"] for e in resumed["log"]] == pytest.approx([e["loss"] for e in straight["log"]], rel=1e-5)


def test_line_windows_start_at_a_newline_of_the_training_text(splits):
    from tokbench.boundaries.calibrate import windows_of
    from tokbench.boundaries.train import Sampler

    seq = PRESETS["test"]["model"]["seq_len"]
    texts = {k: splits.train[k] for k in ("eng", "rus", "hin")}
    n = 600

    def at_line(sampler):
        xb, langs = sampler.batch(n)
        heads = [bytes(r.astype(np.uint8)) for r in xb]
        starts = {(k, h) for k, h in zip(langs, heads)}
        ok = [h[0] == 10 or h == sampler.data[k][:seq + 1].tobytes() for k, h in zip(langs, heads)]
        return float(np.mean(ok)), len(starts), set(langs)

    share, distinct, langs = at_line(Sampler(texts, seq, 0, "line"))
    assert share == 1.0 and langs == set(texts) and distinct > 0.9 * n  # many different lines, not one
    # each such window reads a line of the text right after its newline
    line = Sampler(texts, seq, 5, "line")
    xb, langs = line.batch(50)
    for row, k in zip(xb, langs):
        head = bytes(row.astype(np.uint8))
        assert ("\n" + texts[k]).encode().find(head if head[0] == 10 else b"\n" + head[:-1]) >= 0
    share, _, _ = at_line(Sampler(texts, seq, 0, "random"))
    assert share < 0.1  # the test can fail: random windows rarely start at a newline
    share, _, _ = at_line(Sampler(texts, seq, 0, "mixed"))
    assert 0.4 < share < 0.65
    # random draws what the sampler always drew (same generator calls as before the policy existed)
    rng = np.random.default_rng(3)
    xb, langs = Sampler(texts, seq, 3, "random").batch(8)
    ks = [sorted(texts)[i] for i in rng.integers(0, 3, 8)]
    assert ks == langs
    for row, k in zip(xb, ks):
        a = np.frombuffer(texts[k].encode(), dtype=np.uint8)
        s = int(rng.integers(0, a.size - seq))
        assert np.array_equal(row, a[s:s + seq + 1])
    # calibration windows follow the same policy
    w = windows_of(list(texts.values()), seq, 90, np.random.default_rng(0), "line")
    assert w.shape == (90, seq) and (w[:, 0] == 10).mean() > 0.95
    with pytest.raises(TokbenchError, match="unknown window policy 'words'"):
        TrainConfig(windows="words").check()


def test_the_window_policy_is_saved_and_resumes_exactly(splits, runs, tmp_path):
    from tokbench.boundaries.train import Sampler

    cfg = TrainConfig(preset="test", arm="magnet", steps=20, log_every=5, checkpoint_every=5, threads=1,
                      windows="line")
    straight = train(cfg, tmp_path / "straight", splits=splits, progress=False)
    assert straight["config"]["windows"] == "line"
    assert {c["windows"] for c in straight["calibration"].values()} == {"line"}
    half = train(cfg, tmp_path / "half", splits=splits, progress=False, stop_at=10)
    state = load_checkpoint(tmp_path / "half")
    # the sampler's state round-trips through the checkpoint: a fresh sampler given it draws the batches
    # that the straight run drew after step 10
    seq = PRESETS["test"]["model"]["seq_len"]
    fresh = Sampler(splits.train, seq, 0, "line")
    fresh.rng.bit_generator.state = state["sampler"]
    ref = Sampler(splits.train, seq, 0, "line")
    for _ in range(10):
        ref.batch(PRESETS["test"]["batch"])
    a, b = fresh.batch(PRESETS["test"]["batch"]), ref.batch(PRESETS["test"]["batch"])
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert half["step"] == 10
    with pytest.raises(TokbenchError, match="another run .windows 'line', not 'random'"):
        train(replace(cfg, windows="random"), tmp_path / "half", splits=splits, progress=False)
    resumed = train(cfg, tmp_path / "half", splits=splits, progress=False)
    assert [e["loss"] for e in resumed["log"]] == pytest.approx([e["loss"] for e in straight["log"]], rel=1e-5)
    r = CliRunner().invoke(main, ["boundaries", "train", str(tmp_path / "half"), "--preset", "test", "--steps",
                                  "20", "--resume", "--windows", "mixed", "-q"])
    assert r.exit_code == 2 and "another run" in r.output and len(r.output.strip().splitlines()) == 1


def test_a_checkpoint_without_a_window_policy_resumes_as_random(splits, runs, tmp_path):
    from tokbench.boundaries.train import recalibrate

    state = load_checkpoint(runs["dtp"][0])
    old = {k: v for k, v in state.items() if k != "path"}
    old["config"] = {k: v for k, v in state["config"].items() if k != "windows"}
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "checkpoint.pt")
    cfg = TrainConfig(preset="test", arm="dtp", steps=52, log_every=1, checkpoint_every=25, threads=1)
    with pytest.raises(TokbenchError, match="another run .windows 'random', not 'line'"):
        train(replace(cfg, windows="line"), tmp_path / "old", splits=splits, progress=False)
    more = train(cfg, tmp_path / "old", splits=splits, progress=False)
    assert more["step"] == 52 and more["config"]["windows"] == "random"
    cal = recalibrate(tmp_path / "old", tmp_path / "cal", splits, windows=32)
    assert cal["calibration"]["all"]["windows"] == "random"
    # calibration windows at line starts on request; the report names a run by its policy unless random
    cal = recalibrate(tmp_path / "old", tmp_path / "cal-line", splits, windows=32, starts="line")
    assert cal["calibration"]["all"]["windows"] == "line" and cal["config"].get("windows", "random") == "random"
    from tokbench.boundaries.report import run_name
    assert run_name({"arm": "magnet", "windows": "line"}) == "magnet, line windows"
    assert run_name({"arm": "magnet"}) == run_name({"arm": "magnet", "windows": "random"}) == "magnet"


def test_a_checkpoint_from_another_preset_is_one_line(splits, runs):
    folder = runs["dtp"][0]
    with pytest.raises(TokbenchError, match="another run .preset 'test', not 'tiny'"):
        train(TrainConfig(preset="tiny", arm="dtp", steps=60), folder, splits=splits, progress=False)
    r = CliRunner().invoke(main, ["boundaries", "train", str(folder), "--preset", "tiny", "--arm", "dtp",
                                  "--resume", "-q"])
    assert r.exit_code == 2 and "another run" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_killed_training_run_leaves_the_last_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    code = ("import torch; from tokbench.boundaries.train import TrainConfig, train; "
            "from tokbench.boundaries.data import load_splits; "
            f"train(TrainConfig(preset='test', arm='magnet', steps=100000, checkpoint_every=2, log_every=2, "
            f"threads=1), {str(out)!r}, progress=False, splits=load_splits(english_train_bytes=150_000))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        ckpt = out / "checkpoint.pt"
        deadline = time.time() + 180
        while time.time() < deadline and not (ckpt.exists() and load_checkpoint(ckpt)["step"] >= 6):
            assert proc.poll() is None, "the training process ended early"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    state = load_checkpoint(out)
    assert state["step"] >= 6 and state["step"] % 2 == 0 and not state["finished"]
    model, _ = load_model(out)
    assert model(torch.zeros(1, 8, dtype=torch.long))["logits"].shape == (1, 8, 256)


def test_priors_from_the_tatoeba_train_split_reproduce_magnet(splits):
    p = parallel_priors(splits.parallel_train, 0.2)
    for g, ref in MAGNET_RELEASED.items():
        assert p["check"][g]["agrees"], p["check"][g]
        assert abs(p["scripts"][g] / ref - 1) <= 0.25
    assert p["languages"]["hin"]["beta"] == pytest.approx(0.076, abs=0.004)
    assert p["languages"]["rus"]["beta"] == pytest.approx(0.113, abs=0.004)
    r = CliRunner().invoke(main, ["boundaries", "prior", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["scripts"]["indic"] == pytest.approx(p["scripts"]["indic"])


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan"), "x"])
def test_a_prior_outside_the_open_unit_interval_is_one_line(bad):
    with pytest.raises(TokbenchError, match="outside|not a number") as e:
        check_prior(bad)
    assert "\n" not in str(e.value)


def test_prior_errors_on_the_cli_are_one_line(tmp_path):
    for args in (["train", str(tmp_path / "a"), "--prior", "latin=1.5", "-q"],
                 ["train", str(tmp_path / "b"), "--beta-en", "0", "-q"], ["prior", "--beta-en", "2"]):
        r = CliRunner().invoke(main, ["boundaries", *args])
        assert r.exit_code == 2 and "outside (0, 1)" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "a").exists()


def test_text_without_a_trained_script_is_one_line(runs, tmp_path):
    m, state = load_model(runs["magnet"][0])
    seg = Segmenter(m, state["priors"]["script_of"].values())
    with pytest.raises(TokbenchError, match="no letters of a trained script .other"):
        seg.ends(["ok", "ქართული ენა"])
    assert seg.ends(["12 + 3", ""])[1] == []  # digits and punctuation do not need a script
    f = tmp_path / "ka.txt"
    f.write_text("სიყვარული\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["boundaries", "segment", str(runs["magnet"][0]), str(f)])
    assert r.exit_code == 2 and "no letters of a trained script" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_script_groups_and_routing_on_real_lines(splits):
    expect = {"eng": "latin", "fra": "latin", "spa": "latin", "rus": "cyrillic", "ukr": "cyrillic",
              "bel": "cyrillic", "hin": "indic", "ben": "indic", "tel": "indic"}
    for lang, group in expect.items():
        lines = [x for x in splits.test[lang].split("\n")[:50] if x]
        share = np.mean([dominant_group(x) == group for x in lines])
        assert share > 0.9, (lang, share)
    assert [dominant_group(t) for t in ("שלום", "γεια", "你好", "안녕", "สวัสดี", "...")] == \
        ["arabic", "greek", "cjk", "hangul", "thai", "other"]
    assert route_for("Привет, world", ["cyrillic", "latin"], ["cyrillic", "latin"]) == 0


def test_splits_keep_test_text_out_of_training(splits):
    for lang, pairs in splits.parallel_test.items():
        n = len(pairs) + len(splits.parallel_train[lang])
        assert len(splits.parallel_train[lang]) == tatoeba_cut(n)
        train_lines = set(splits.train[lang].split("\n"))
        leaked = [x for x, _ in pairs if x in train_lines and x not in {a for a, _ in splits.parallel_train[lang]}]
        assert not leaked, (lang, leaked[:3])
    eng_train = set(splits.train["eng"].split("\n"))
    assert not {y for pairs in splits.parallel_test.values() for _, y in pairs} & eng_train
    # UDHR article 25 is a test article
    assert "25" not in splits.train["fra"][:0] and "Toute personne a droit à un niveau de vie" not in splits.train["fra"]


def test_prior_losses_match_their_formulas():
    b = torch.tensor([[1.0, 0, 0, 1, 0, 0, 0, 0, 0, 0]])
    beta = torch.tensor([0.2])
    want = -(math.log(math.comb(10, 2)) + 2 * math.log(0.2) + 8 * math.log(0.8)) / 10
    assert binomial_loss(b, beta).item() == pytest.approx(want, rel=1e-5)
    assert hinge_loss(b, beta, torch.tensor([0.01])).item() == pytest.approx(0.0)
    assert hinge_loss(b, torch.tensor([0.5]), torch.tensor([0.01])).item() == pytest.approx(0.5 - 0.02 - 0.2)
    logits = torch.zeros(2, 50, requires_grad=True)
    hard, _ = sample_boundaries(logits, training=True, generator=torch.Generator().manual_seed(0))
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    binomial_loss(hard, torch.tensor([0.1, 0.1])).backward()
    assert logits.grad.abs().sum() > 0  # straight-through: the prior reaches the predictor
    ev, _ = sample_boundaries(torch.tensor([[-0.1, 0.1]]), training=False)
    assert ev.tolist() == [[0.0, 1.0]]


def test_parity_on_real_tatoeba_test_matches_known_tokenizers(splits, require_asset):
    from tokbench.boundaries.report import baselines

    for name in ("gpt2", "xlm-r"):
        require_asset(name, "tokenizer")
    b = baselines(splits.parallel_test, ["gpt2", "xlm-r"])
    assert b["bytes"]["mean_abs_log2"] == pytest.approx(0.89, abs=0.05)  # = the byte premium
    assert b["bytes"]["english_bytes_per_segment"] == 1.0
    assert b["gpt2"]["mean_abs_log2"] > 1.8 and b["xlm-r"]["mean_abs_log2"] < 0.25
    assert b["words"]["mean_abs_log2"] < 0.3
    s = spread([2.0, 0.5, 1.0])
    assert s["mean_abs_log2"] == pytest.approx(2 / 3) and s["max"] == 2.0


def test_whitespace_f1_and_word_ends():
    assert word_ends("ab  cd") == [2, 6] and word_ends("") == []
    assert boundary_f1([[2, 6]], [[2, 6]])["f1"] == 1.0
    assert boundary_f1([[1, 2, 6]], [[2, 6]]) == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3)}


@pytest.mark.parametrize("method", ["unigram", "bpe"])
def test_export_round_trips_and_loads_in_tokenizers_and_transformers(splits, runs, tmp_path, method):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from tokbench.boundaries.export import export, load_segmenter

    folder = runs["magnet"][0]
    m, state = load_model(folder)
    torch.manual_seed(0)
    with torch.no_grad():  # 50 steps leave the predictors flat: give them varied, multi-byte segments
        m.predictor.w2.normal_(0, 3.0)
        m.predictor.b2.fill_(-2.0)
        m.predictor.offset.zero_()
    torch.save({**state, "model": m.state_dict()}, tmp_path / "firing.pt")
    report = export(tmp_path / "firing.pt", tmp_path / "exp", splits, vocab_size=600, max_bytes=3000, method=method)
    out = tmp_path / "exp"
    assert {p.name for p in out.iterdir()} >= {"segmenter.safetensors", "segmenter.json", "tokenizer.json",
                                               "export.json"}
    lines = [x for x in splits.test["ukr"].split("\n")[:30] + splits.test["eng"].split("\n")[:30] if x]
    full = Segmenter(load_model(tmp_path / "firing.pt")[0], state["priors"]["script_of"].values())
    assert load_segmenter(out).ends(lines) == full.ends(lines)  # the standalone runner: same boundaries
    n_bytes, n_segments = sum(len(x.encode()) for x in lines), sum(len(e) for e in full.ends(lines))
    assert 3 * len(lines) < n_segments < 0.8 * n_bytes
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    for line in lines:
        ids = tok.encode(line, add_special_tokens=False).ids
        assert tok.decode(ids) == line and hf.decode(hf(line, add_special_tokens=False)["input_ids"]) == line
    assert 0.0 < report["heldout_f1_mean"] <= 1.0 and report["pretokenizer"] in report["train_f1"]
    assert report["method"] == method
    model = json.loads((out / "tokenizer.json").read_text())["model"]
    if method == "bpe":
        assert len(model["merges"]) > 100
    else:
        assert model["type"] == "Unigram" and 256 + 100 < len(model["vocab"]) <= 600
    r = CliRunner().invoke(main, ["boundaries", "segment", str(out), "-"], input="hello world\n")
    assert r.exit_code == 0 and r.output.replace("|", "") == "hello world\n"


def test_unigram_distillation_reproduces_frequent_segments():
    from tokenizers import Tokenizer

    from tokbench.boundaries.export import token_ends, unigram_json

    # learned segments: "the cat" is one segment (across the space), "s" ends plurals; Cyrillic split
    # inside a character too (byte-level)
    pieces = [b"the cat", b"s", b" sat"] * 50 + ["при".encode(), "вет".encode()] * 20 + ["м".encode()[:1]] * 3
    data = unigram_json(pieces, 300, use_regex=False, affixes=False)
    tok = Tokenizer.from_str(json.dumps(data))
    assert token_ends(tok, ["the cats sat"]) == [[7, 8, 12]]
    assert token_ends(tok, ["привет"]) == [[6, 12]]
    assert len(data["model"]["vocab"]) == 256 + 4  # the bytes, and the multi-byte segments seen twice or more
    assert sorted(s for _, s in data["model"]["vocab"])[-1] < 0  # log-probabilities
    text = "unseen ✓ text"
    assert tok.decode(tok.encode(text).ids) == text  # every byte is in the vocabulary
    with pytest.raises(TokbenchError, match="vocab-size"):
        unigram_json(pieces, 256, use_regex=False)
    # with affixes: a segment seen once is kept, and an unseen word splits at a prefix and a suffix of the
    # learned segments (one false boundary at most) where without them it falls apart into bytes
    pieces += [b"jumped", b"running"] * 3 + [b"once"]
    plain = Tokenizer.from_str(json.dumps(unigram_json(pieces, 400, use_regex=False, affixes=False)))
    rich = Tokenizer.from_str(json.dumps(unigram_json(pieces, 400, use_regex=False)))
    assert token_ends(plain, ["jumping once"]) == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    assert token_ends(rich, ["jumping once"]) == [[4, 7, 8, 12]]
    assert token_ends(rich, ["the cats sat"]) == [[7, 8, 12]]  # whole segments still win over affixes
    small = unigram_json(pieces, 262, use_regex=False)["model"]["vocab"]  # the most frequent kept first
    assert len(small) == 262 and "the" + "Ġ" + "cat" in {t for t, _ in small}


def test_segmenting_in_context_reads_the_lines_as_running_text(splits):
    from tokbench.boundaries.metrics import parity_in_context

    seg = Segmenter(_model("magnet"), ["cyrillic", "latin"])
    lines = [x for x in splits.test["rus"].split("\n")[:12] if x]
    ctx = seg.ends_in_context(lines)
    (stream,) = seg.ends(["\n".join(lines)])
    pos = 0
    for line, e in zip(lines, ctx):
        n = len(line.encode())
        assert e[-1] == n and all(0 < x <= n for x in e) and e == sorted(set(e))
        # exactly the running text's ends that fall inside this line (plus its end)
        assert e[:-1] == [x - pos for x in stream if pos < x < pos + n]
        pos += n + 1
    assert ctx[0] == seg.ends(lines[:1])[0]  # the first line has no context either way
    assert ctx != seg.ends(lines)  # later lines do see the lines before them
    # causal: changing a later line changes no earlier line's ends
    changed = lines[:6] + ["совсем другая строка"] + lines[7:]
    assert seg.ends_in_context(changed)[:6] == ctx[:6]
    par = {"rus": [(x, y) for x, y in splits.parallel_test["rus"][:40]],
           "fra": [(x, y) for x, y in splits.parallel_test["fra"][:40]]}
    t = parity_in_context(seg, par)
    assert set(t["languages"]) == {"rus", "fra"} and t["mean_abs_log2"] is not None
    row = t["languages"]["rus"]
    assert row["segments"] == sum(seg.count_in_context([x for x, _ in par["rus"]]))
    assert row["premium_sum"] == pytest.approx(row["segments"] / row["english_segments"])


def test_report_writes_every_table_for_real_runs(runs, tmp_path):
    out = tmp_path / "rep.md"
    r = CliRunner().invoke(main, ["boundaries", "report", str(runs["dtp"][0]), str(runs["magnet"][0]), "--out",
                                  str(out), "--max-bytes", "4000", "--baselines", "gpt2", "--english-bytes",
                                  "20000", "--threads", "1"])
    assert r.exit_code == 0, r.output
    md = out.read_text()
    for title in ("Segment premium on the Tatoeba test split", "each sentence read in context",
                  "Boundary rate against the prior", "Held-out bits/byte", "Speed"):
        assert title in md
    data = json.loads(out.with_suffix(".json").read_text())
    assert [x["arm"] for x in data["runs"]] == ["dtp", "magnet"] and set(data["baselines"]) == {"bytes", "words", "gpt2"}
    for run in data["runs"]:
        assert run["parity"]["mean_abs_log2"] is not None and run["parity_in_context"]["mean_abs_log2"] is not None
        for g, s in run["scripts"].items():
            assert 0 <= s["rate"] <= 1 and 0 <= s["rate_in_context"] <= 1
        assert all(0 < row["bits_per_byte"] < 8 for row in run["languages"].values())
    assert out.with_suffix(".png").stat().st_size > 1000 and out.with_suffix(".html").is_file()


def test_calibration_puts_each_route_on_its_prior(splits, runs, tmp_path):
    from tokbench.boundaries.calibrate import calibrate, raw_logits, windows_of
    from tokbench.boundaries.train import calibration_targets

    # the training run calibrated itself: on its calibration windows each route sits on its prior
    m, state = load_model(runs["magnet"][0])
    assert set(state["calibration"]) == set(m.cfg.routes)
    for g, c in state["calibration"].items():
        assert c["rate_after"] == pytest.approx(state["priors"]["scripts"][g], abs=2e-4)
    # a model whose predictors fire on most bytes, calibrated to the priors: its rate on *other*
    # windows of the same text is within 15 % of each prior (a random model: its rate depends on the bytes
    # far more than a trained one), where before it was more than twice the prior
    m = _model("magnet")
    with torch.no_grad():
        m.predictor.b2.fill_(3.0)
    priors = {"script_of": {"eng": "latin", "fra": "latin", "rus": "cyrillic", "ukr": "cyrillic"},
              "scripts": {"latin": 0.2, "cyrillic": 0.114}}
    texts = {k: splits.train[k] for k in priors["script_of"]}
    report = calibrate(m, *calibration_targets("magnet", priors, texts), seed=3)
    assert {g: c["target"] for g, c in report.items()} == priors["scripts"]
    m.eval()
    for r, g in enumerate(m.cfg.routes):
        group = [t for k, t in texts.items() if priors["script_of"][k] == g]
        x = torch.from_numpy(windows_of(group, m.cfg.seq_len, 512, np.random.default_rng(99)))
        route = torch.full((len(x),), r)
        before = (raw_logits(m, x, route) > 0).float().mean().item()
        after = m.boundaries(x, route)[1].mean().item()
        assert before > 2 * priors["scripts"][g]
        assert abs(after / priors["scripts"][g] - 1) < 0.15, (g, after)
    # `tokbench boundaries calibrate` writes a calibrated copy and leaves the run as it was
    run = runs["dtp"][0] / "checkpoint.pt"
    before_bytes = run.read_bytes()
    r = CliRunner().invoke(main, ["boundaries", "calibrate", str(runs["dtp"][0]), str(tmp_path / "cal"),
                                  "--windows", "64", "--english-bytes", "150000"])
    assert r.exit_code == 0, r.output
    assert run.read_bytes() == before_bytes
    cal = load_checkpoint(tmp_path / "cal")
    assert cal["calibration"]["all"]["rate_after"] == pytest.approx(cal["priors"]["languages"]["eng"], abs=1e-3)
    assert cal["step"] == 50 and "predictor.offset" in cal["model"]
    r = CliRunner().invoke(main, ["boundaries", "calibrate", str(runs["dtp"][0]), str(tmp_path / "cal")])
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output
    # a checkpoint written before calibration existed (no offset) loads uncalibrated
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("offset")}
    fresh = HourglassLM(m.cfg)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.predictor.offset, torch.zeros(len(m.cfg.routes)))


def test_missing_torch_names_the_extra(monkeypatch):
    from tokbench import extras
    from tokbench.boundaries import require_torch

    monkeypatch.setattr(extras, "_installed", lambda m: m != "torch")
    with pytest.raises(TokbenchError, match=r"tokbench\[transplant\]"):
        require_torch()
