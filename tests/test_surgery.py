"""tokbench surgery: recipes, the ops end to end on real tokenizers (tiny random models carrying the real
SmolLM2 / GPT-2 tokenizer files, and the real tbd-gpt2-d128), the writer, bad recipes and faults."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.surgery_tiny import tiny_on
from tokbench.errors import TokbenchError
from tokbench.surgery import run
from tokbench.vocab.model_io import open_model_folder, read_header


@pytest.fixture(scope="module")
def smol(require_asset, tmp_path_factory) -> Path:
    return tiny_on(require_asset("smollm2-135m", "model"), tmp_path_factory.mktemp("smol") / "m")


@pytest.fixture(scope="module")
def smol_untied(require_asset, tmp_path_factory) -> Path:
    return tiny_on(require_asset("smollm2-135m", "model"), tmp_path_factory.mktemp("smolu") / "m", tied=False,
                   sharded=True, dtype="float32")


def _tensors(folder: Path) -> dict[str, bytes]:
    m = open_model_folder(folder)
    out = {}
    for shard in m.shards:
        header, base = read_header(shard)
        with open(shard, "rb") as f:
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                s, e = info["data_offsets"]
                f.seek(base + s)
                out[name] = (info["dtype"], tuple(info["shape"]), f.read(e - s))
    return out


def _recipe(tmp_path: Path, body: dict) -> Path:
    import yaml

    p = tmp_path / "recipe.yml"
    p.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p


def _tok(folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _lines(require_asset, name: str, n: int) -> list[str]:
    from tokbench.assets import iter_documents

    out = []
    for d in iter_documents(name):
        out.extend(x for x in d.split("\n") if x.strip())
        if len(out) >= n:
            break
    return out[:n]


# --- identity ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["smol", "smol_untied"])
def test_identity_is_byte_identical(which, request, tmp_path, require_asset):
    base = request.getfixturevalue(which)
    out = tmp_path / "out"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(base), "ops": []}), out, progress=False)
    assert _tensors(out) == _tensors(base)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    cfg_a, cfg_b = (json.loads((p / "config.json").read_text()) for p in (base, out))
    assert cfg_a == cfg_b
    idmap = json.loads((out / "idmap.json").read_text())["tokens"]
    assert [r["old_id"] for r in idmap] == list(range(len(idmap)))
    lines = _lines(require_asset, "wikitext2-test", 50) + _lines(require_asset, "udhr", 20)
    a, b = _tok(base), _tok(out)
    assert [e.ids for e in a.encode_batch(lines)] == [e.ids for e in b.encode_batch(lines)]
    assert rep["checks"]["chat_template"]["unchanged_from_base"] is True
    if which == "smol_untied":
        assert len(open_model_folder(out).shards) > 1 and not open_model_folder(out).tied


# --- pad ---------------------------------------------------------------------------------------------------
def test_pad_vocab_suppressed_and_low_probability(tmp_path, require_asset):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = require_asset("tbd-gpt2-d128", "model")
    out = tmp_path / "pad"
    run(_recipe(tmp_path, {"version": 1, "base": str(base), "ops": [{"op": "pad_vocab", "multiple_of": 64}]}),
        out, progress=False)
    cfg = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert cfg["vocab_size"] == 50304 and open_model_folder(out).vocab_rows == 50304
    assert gen["suppress_tokens"] == list(range(50257, 50304))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) == 50257
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    text = " ".join(_lines(require_asset, "wikitext2-test", 40))[:6000]
    ids = tok(text, return_tensors="pt").input_ids[:, :512]
    with torch.no_grad():
        p = model(ids).logits.float().softmax(-1)
    assert float(p[0, :, 50257:].sum(-1).mean()) <= 1e-4
    with torch.no_grad():
        g = model.generate(ids[:, :20], max_new_tokens=24, do_sample=True, pad_token_id=50256)
    assert not (g[0, 20:] >= 50257).any()
    # the other tensors are untouched
    a, b = _tensors(base), _tensors(out)
    assert {k: v for k, v in a.items() if "embed" not in k} == {k: v for k, v in b.items() if "embed" not in k}


# --- special tokens + chat template ------------------------------------------------------------------------
def test_control_token_and_eos_keep_template(smol, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "ct"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
        {"op": "special_tokens", "add_control": [{"token": "<tool_call>", "init": {"method": "copy", "from": "<|im_start|>"}}],
         "roles": {"eos": "<|im_end|>"}},
        {"op": "chat_template", "source": "keep"}]}), out, progress=False)
    assert rep["checks"]["chat_template"]["unchanged_from_base"] is True
    tok = AutoTokenizer.from_pretrained(str(out))
    tid = tok.convert_tokens_to_ids("<tool_call>")
    assert tid == 49152 and tok.encode("<tool_call>", add_special_tokens=False) == [tid]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert tok.eos_token_id == cfg["eos_token_id"] == gen["eos_token_id"] == eos == 2
    m = open_model_folder(out)
    e = m.read_embedding()
    assert np.array_equal(e[tid], e[1])
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert (out / "chat_template.jinja").is_file()


def test_pruning_a_template_token_fails_at_plan_time(smol, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(TokbenchError, match=r"ops\[0\] \(prune\) removes '<\|im_end\|>', which the chat template uses"):
        run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
            {"op": "prune", "strategy": "list", "tokens": ["<|im_end|>"]}]}), out, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".x.tmp-*"))


def test_rename_special_keeps_row(smol, tmp_path):
    out = tmp_path / "rn"
    run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
        {"op": "special_tokens", "rename": {"<|endoftext|>": "<|eot|>"}}]}), out, progress=False)
    tok = _tok(out)
    assert tok.token_to_id("<|eot|>") == 0 and tok.token_to_id("<|endoftext|>") is None
    assert json.loads((out / "tokenizer_config.json").read_text())["unk_token"] == "<|eot|>"
    assert np.array_equal(open_model_folder(out).read_embedding(), open_model_folder(smol).read_embedding())


# --- prune ---------------------------------------------------------------------------------------------------
def test_prune_leaf_frequency_is_lossless_and_reachable(smol_untied, tmp_path, require_asset):
    from tokbench.surgery.prune import naive_unreachable

    wiki = tmp_path / "calib.txt"
    wiki.write_text("\n".join(_lines(require_asset, "wikitext2-valid", 400)), encoding="utf-8")
    out = tmp_path / "pr"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol_untied), "corpora": {"calib": {"path": str(wiki)}},
                                  "ops": [{"op": "prune", "corpora": ["calib"]}],
                                  "checks": {"roundtrip": ["calib"]}}), out, progress=False)
    plan = rep["plan"]["ops"][0]
    assert plan["removed"] > 20000 and rep["checks"]["reachability"]["unreachable"] == 0
    base_tok, tok = _tok(smol_untied), _tok(out)
    assert tok.get_vocab_size() == 49152 - plan["removed"]
    texts = _lines(require_asset, "udhr", 200) + _lines(require_asset, "tatoeba", 200) + \
        _lines(require_asset, "code-python", 100)
    for t, e in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        assert tok.decode(e.ids, skip_special_tokens=False) == t
    # rows follow their tokens (embedding and the untied head), by the id map
    idmap = json.loads((out / "idmap.json").read_text())["tokens"]
    old = np.array([r["old_id"] for r in idmap])
    a, b = open_model_folder(smol_untied), open_model_folder(out)
    assert np.array_equal(b.read_embedding(), a.read_embedding()[old])
    assert np.array_equal(b.read_head(), a.read_head()[old])
    # the naive edit (delete every unseen token and every merge mentioning it) strands tokens
    from tokbench.bpe.encoding import bytelevel_bytes

    data = json.loads((smol_untied / "tokenizer.json").read_text())
    counts = {}
    for e in base_tok.encode_batch(wiki.read_text(encoding="utf-8").split("\n"), add_special_tokens=False):
        for t in e.tokens:
            counts[t] = counts.get(t, 0) + 1
    added = {t["content"] for t in data["added_tokens"]}
    unseen = {t for t in data["model"]["vocab"] if t not in counts and t not in added and len(t) > 1}
    naive = naive_unreachable(data, unseen, bytelevel_bytes)
    assert naive["unreachable"] > 100 and len(unseen) > plan["removed"]


def test_leaf_prune_only_removes_leaves():
    from tokbench.surgery.prune import leaf_prune

    merges = [("a", "b"), ("ab", "c"), ("x", "y")]
    tokens = ["a", "b", "c", "x", "y", "ab", "abc", "xy"]
    removed, m = leaf_prune(tokens, merges, {"abc": 5}, candidate=lambda t: t in {"ab", "xy"},
                            protected={"a", "b", "c", "x", "y"})
    assert removed == {"xy"} and m == {2}  # "ab" is needed by the kept "abc"
    removed, m = leaf_prune(tokens, merges, {}, candidate=lambda t: True, protected={"a", "b", "c", "x", "y"})
    assert removed == {"ab", "abc", "xy"} and m == {0, 1, 2}


# --- add tokens ---------------------------------------------------------------------------------------------
def test_add_learned_tokens_are_real_merges(smol, tmp_path, require_asset):
    train = tmp_path / "gsm.txt"
    train.write_text("\n".join(_lines(require_asset, "gsm8k-train", 1500)), encoding="utf-8")
    out = tmp_path / "add"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "corpora": {"g": {"path": str(train)}},
                                  "ops": [{"op": "add_tokens", "learn": {"corpora": ["g"], "n": 100}}]}),
              out, progress=False)
    assert rep["plan"]["ops"][0]["added"] == 100
    r = rep["checks"]["reachability"]
    assert r["added_reachable"] == r["added_normal_tokens"] == 100 and r["unreachable"] == 0
    base_tok, tok = _tok(smol), _tok(out)
    assert tok.get_vocab_size(with_added_tokens=True) == 49252
    data = json.loads((out / "tokenizer.json").read_text())
    assert len(data["model"]["merges"]) == 48900 + 100 and not any(t["id"] >= 49152 for t in data["added_tokens"])
    test = _lines(require_asset, "gsm8k-test", 300)
    n_base = sum(len(e.ids) for e in base_tok.encode_batch(test))
    n_new = sum(len(e.ids) for e in tok.encode_batch(test))
    assert n_new < n_base
    wiki = _lines(require_asset, "wikitext2-test", 300)
    same = sum(a.ids == b.ids for a, b in zip(base_tok.encode_batch(wiki), tok.encode_batch(wiki)))
    assert same / len(wiki) >= 0.95
    e = open_model_folder(out).read_embedding()
    cap = float(np.median(np.linalg.norm(e[:49152], axis=1)))
    assert (np.linalg.norm(e[49152:], axis=1) <= cap * 1.01).all()


def test_keep_stable_bounds_the_reference_lines(smol, tmp_path, require_asset):
    """keep_stable: the simulated changes are the real tokenizer's, the bound holds on every reference corpus,
    and refusing merges changes fewer lines than plain continued BPE."""
    train = tmp_path / "gsm.txt"
    train.write_text("\n".join(_lines(require_asset, "gsm8k-train", 1500)), encoding="utf-8")
    ref_lines = _lines(require_asset, "wikitext2-valid", 600)
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(ref_lines), encoding="utf-8")
    reps = {}
    for bound in (None, 0.2):
        learn = {"corpora": ["g"], "n": 200}
        if bound is not None:
            learn["keep_stable"] = {"corpora": ["r"], "max_changed_lines_pct": bound}
        reps[bound] = run(_recipe(tmp_path, {"version": 1, "base": str(smol),
                                             "corpora": {"g": {"path": str(train)}, "r": {"path": str(ref)}},
                                             "ops": [{"op": "add_tokens", "learn": learn}]}),
                          tmp_path / f"out{bound}", progress=False)
    ks = reps[0.2]["plan"]["ops"][0]["keep_stable"]
    assert ks["kept"] == 200 and ks["refused"] > 0 and ks["max_changed_lines_pct"] == 0.2
    r = reps[0.2]["checks"]["reachability"]
    assert r["added_reachable"] == 200 and r["unreachable"] == 0
    base_tok = _tok(smol)
    changed = {}
    for bound in reps:
        tok = _tok(tmp_path / f"out{bound}")
        changed[bound] = sum(a.ids != b.ids for a, b in zip(base_tok.encode_batch(ref_lines, add_special_tokens=False),
                                                            tok.encode_batch(ref_lines, add_special_tokens=False)))
    assert changed[0.2] == ks["corpora"]["r"]["changed_lines"] <= int(0.002 * len(ref_lines))
    assert changed[None] > changed[0.2]


def test_learn_filters_match_a_tokenizers_count(smol, tmp_path, require_asset):
    """require_letter + min_documents keep exactly the candidates an independent count says they should: the
    unfiltered run's tokenizer (the same trainer candidates) encodes every document with `tokenizers`, a token
    used in a document also counts for the tokens it is built from, and the filtered run keeps the first n
    candidates with a letter, enough documents and kept parts."""
    docs = _lines(require_asset, "gsm8k-train", 800)
    train = tmp_path / "gsm.jsonl"  # one document per line
    train.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    n, min_docs = 20, 3
    runs = {}
    for label, learn in (("all", {"corpora": ["g"], "n": 4 * n}),
                         ("filtered", {"corpora": ["g"], "n": n, "require_letter": True, "min_documents": min_docs})):
        runs[label] = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "corpora": {"g": {"path": str(train)}},
                                             "ops": [{"op": "add_tokens", "learn": learn}]}),
                          tmp_path / label, progress=False)
    base_n = _tok(smol).get_vocab_size()
    all_tok = _tok(tmp_path / "all")
    merges = json.loads((tmp_path / "all" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"][-4 * n:]
    cands = [(a, b, a + b) for a, b in (m.split(" ") if isinstance(m, str) else m for m in merges)]
    df = {c: 0 for _, _, c in cands}
    for e in all_tok.encode_batch(docs, add_special_tokens=False):
        for t in {all_tok.id_to_token(i) for i in e.ids if i >= base_n}:
            df[t] += 1
    for a, b, c in reversed(cands):
        for part in (a, b):
            if part in df:
                df[part] = max(df[part], df[c])
    decoded = lambda t: all_tok.decoder.decode([t])  # noqa: E731
    kept: list[str] = []
    for a, b, c in cands:
        if any(p in df and p not in kept for p in (a, b)):
            continue
        if any(ch.isalpha() for ch in decoded(c)) and df[c] >= min_docs:
            kept.append(c)
    out_tok = _tok(tmp_path / "filtered")
    added = [out_tok.id_to_token(i) for i in range(base_n, out_tok.get_vocab_size())]
    assert added == kept[:n] and len(added) == n
    f = runs["filtered"]["plan"]["ops"][0]["filters"]
    assert f["refused_no_letter"] > 0 and f["refused_few_documents"] > 0
    assert runs["filtered"]["checks"]["reachability"]["unreachable"] == 0


def test_add_explicit_token(smol, tmp_path):
    out = tmp_path / "ex"
    run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
        {"op": "add_tokens", "tokens": [" zorblaxify"], "init": {"method": "mean"}}]}), out, progress=False)
    tok = _tok(out)
    ids = tok.encode("They zorblaxify it.", add_special_tokens=False).ids
    assert tok.id_to_token(ids[1]) == "Ġzorblaxify"
    with pytest.raises(TokbenchError, match=r"ops\[0\]\.tokens: 'two words' is split by the pre-tokenizer"):
        run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
            {"op": "add_tokens", "tokens": ["two words"]}]}), tmp_path / "ex2", progress=False)


# --- bad recipes, faults, determinism --------------------------------------------------------------------------
@pytest.mark.parametrize("body,pattern", [
    ({"version": 1, "base": "B", "opz": []}, r"recipe\.yml: opz: Extra inputs are not permitted; remove this key"),
    ({"version": 1, "base": "B", "ops": [{"op": "pad_vocab", "multiple_of": "lots"}]},
     r"ops\[0\]\.multiple_of: Input should be a valid integer"),
    ({"version": 1, "base": "B", "ops": [{"op": "add_tokens", "tokens": ["x"], "init": {"method": "omg"}}]},
     r"ops\[0\]\.init\.method: Input should be"),
    ({"version": 1, "base": "B", "ops": [{"op": "chat_template", "source": "file", "path": "nope.jinja"}]},
     r"ops\[0\]\.path: template file not found"),
    ({"version": 1, "base": "/no/such/model", "ops": []}, r"base: model '/no/such/model' not found"),
    ({"version": 1, "base": "B", "ops": [{"op": "pad_vocab", "multiple_of": 8}, {"op": "add_tokens", "tokens": ["x"]}]},
     r"ops\[0\] \(pad_vocab\) must be the last op"),
    ({"version": 1, "base": "B", "ops": [{"op": "prune", "corpora": ["nope"]}]},
     r"ops\[0\]\.corpora: corpus 'nope' is not defined"),
])
def test_bad_recipes_name_the_yaml_path(body, pattern, smol, tmp_path):
    body = json.loads(json.dumps(body).replace('"B"', json.dumps(str(smol))))
    rec = _recipe(tmp_path, body)
    with pytest.raises(TokbenchError, match=pattern):
        run(rec, tmp_path / "o", progress=False)
    proc = subprocess.run([sys.executable, "-m", "tokbench.cli", "surgery", str(rec), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("tokbench: error:")
    assert not (tmp_path / "o").exists()


def test_dry_run_writes_nothing(smol, tmp_path):
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [{"op": "pad_vocab", "multiple_of": 64}]}),
              tmp_path / "o", dry_run=True, progress=False)
    assert rep["plan"]["rows"] == 49152 and rep["plan"]["ops"][0]["padded_rows"] == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "recipe.yml"]


def test_same_recipe_same_bytes(smol, tmp_path):
    body = {"version": 1, "base": str(smol), "seed": 3, "ops": [
        {"op": "add_tokens", "tokens": [" zzyzx", " qwertyuiop"], "init": {"method": "random"}},
        {"op": "pad_vocab", "multiple_of": 128, "init": "negative_mean"}]}
    rec = _recipe(tmp_path, body)
    run(rec, tmp_path / "a", progress=False)
    run(rec, tmp_path / "b", progress=False)
    from tokbench.outputs import MARKER

    names = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != MARKER)  # the marker has a timestamp
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir() if p.name != MARKER)
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n


def test_sigkill_leaves_no_out(smol, tmp_path):
    rec = _recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [{"op": "pad_vocab", "multiple_of": 64}]})
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "tokbench.cli", "surgery", str(rec), "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".killed.tmp-*")) and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()


# --- under-trained tokens (detector from tokbench.surgery.undertrained, wired as an op) ------------------------
def test_undertrained_op_reports_and_reinitialises(tmp_path, require_asset):
    base = require_asset("tbd-gpt2-d128", "model")
    out = tmp_path / "ut"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(base), "ops": [
        {"op": "undertrained", "percentile": 1.0, "action": "reinit"}]}), out, progress=False)
    ut = rep["undertrained"]
    assert ut["candidates"] > 100 and ut["indicator"] == "eout_cos"
    idmap = json.loads((out / "idmap.json").read_text())["tokens"]
    redone = [r["id"] for r in idmap if r["row"]["method"] != "keep"]
    assert len(redone) == rep["plan"]["ops"][0]["acted_on"] > 100
    assert [r["old_id"] for r in idmap] == list(range(50257))
    a, b = open_model_folder(base).read_embedding(), open_model_folder(out).read_embedding()
    kept = np.setdiff1d(np.arange(50257), redone)
    assert np.array_equal(a[kept], b[kept]) and not np.array_equal(a[redone], b[redone])


# --- replace the tokenizer (alignment core + shared initialisers, as transplant) --------------------------------
def test_replace_tokenizer_keeps_shared_rows(smol, tmp_path, require_asset):
    from tokbench.vocab import align, load_vocabulary

    gpt2 = require_asset("gpt2")
    out = tmp_path / "rp"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
        {"op": "replace_tokenizer", "tokenizer": str(gpt2), "method": "subword"}]}), out, progress=False)
    p = rep["plan"]["ops"][0]
    assert p["size"] == 50257 and p["shared"] > 30000 and p["new"] > 1000
    assert json.loads((out / "tokenizer.json").read_text())["model"]["vocab"] == \
        json.loads(Path(gpt2).read_text())["model"]["vocab"]
    al = align(load_vocabulary(smol), load_vocabulary(gpt2))
    a, b = open_model_folder(smol).read_embedding(), open_model_folder(out).read_embedding()
    new, old = zip(*sorted(al.shared.items()))
    assert b.shape[0] == 50257 and np.array_equal(b[list(new)], a[list(old)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == 50257 and cfg["eos_token_id"] in (50256, None)


def test_from_mergekit_writes_a_valid_recipe(tmp_path, smol):
    from tokbench.surgery import load_recipe

    mk = tmp_path / "merge.yml"
    mk.write_text(f"merge_method: linear\nbase_model: {smol}\nmodels:\n  - model: {smol}\n  - model: other/model\n"
                  "tokenizer:\n  source: union\n  pad_to_multiple_of: 64\nchat_template: chatml\n", encoding="utf-8")
    out = tmp_path / "recipe.yml"
    proc = subprocess.run([sys.executable, "-m", "tokbench.cli", "surgery", "--from-mergekit", str(mk), "-o", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    recipe, _ = load_recipe(out)
    assert [o.op for o in recipe.ops] == ["union", "chat_template", "pad_vocab"]


def test_prune_by_script_keeps_latin_and_stays_lossless(smol, tmp_path, require_asset):
    out = tmp_path / "sc"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [
        {"op": "prune", "strategy": "script", "scripts_keep": ["Latin", "Common", "Inherited"]}]}), out, progress=False)
    assert rep["plan"]["ops"][0]["removed"] > 200 and rep["checks"]["reachability"]["unreachable"] == 0
    import regex

    from tokbench.bpe.encoding import bytelevel_bytes

    latin = regex.compile(r"^[\p{Script=Latin}\p{Script=Common}\p{Script=Inherited}]*$")
    data = json.loads((out / "tokenizer.json").read_text())["model"]
    used = {p for m in data["merges"] for p in m}
    other = [t for t in data["vocab"] if len(t) > 1 and not latin.match(bytelevel_bytes(t).decode("utf-8", errors="ignore"))]
    assert all(t in used for t in other)  # a non-Latin token survives only as a part of a kept merge
    tok = _tok(out)
    texts = _lines(require_asset, "udhr", 300)
    assert all(tok.decode(e.ids) == t for t, e in zip(texts, tok.encode_batch(texts, add_special_tokens=False)))


# --- union (tokbench.surgery.union's vocabulary and row plans, written by run) -----------------------------------
def test_union_members_give_the_same_logits(smol, tmp_path, require_asset):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    train = tmp_path / "gsm.txt"
    train.write_text("\n".join(_lines(require_asset, "gsm8k-train", 1500)), encoding="utf-8")
    other = tmp_path / "other"
    run(_recipe(tmp_path, {"version": 1, "base": str(smol), "corpora": {"g": {"path": str(train)}},
                           "ops": [{"op": "add_tokens", "learn": {"corpora": ["g"], "n": 60}}]}), other, progress=False)
    out = tmp_path / "union"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "models": {"gsm": {"path": str(other)}},
                                  "ops": [{"op": "union", "with": ["gsm"]}]}), out, progress=False)
    assert rep["union"]["size"] == 49212 and (out / "members" / "gsm" / "model.safetensors").is_file()
    utok = Tokenizer.from_file(str(out / "tokenizer.json"))
    lines = _lines(require_asset, "gsm8k-test", 5)
    perms = {"base": [r["old_id"] for r in json.loads((out / "idmap.json").read_text())["tokens"]],
             "gsm": json.loads((out / "members" / "gsm" / "idmap.json").read_text())["union_id_to_member_id"]}
    for name, member, folder in (("base", smol, out), ("gsm", other, out / "members" / "gsm")):
        a = AutoModelForCausalLM.from_pretrained(str(member), dtype=torch.float32)
        b = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        inv = {m: u for u, m in enumerate(perms[name]) if m is not None}
        mtok = Tokenizer.from_file(str(member / "tokenizer.json"))
        for line in lines:
            ids = mtok.encode(line, add_special_tokens=False).ids[:64]
            with torch.no_grad():
                la = a(torch.tensor([ids])).logits[0]
                lb = b(torch.tensor([[inv[i] for i in ids]])).logits[0]
            cols = [inv[i] for i in range(la.shape[1])]
            assert float((la - lb[:, cols]).abs().max()) <= 1e-3
    # every union token its own text can produce is produced by the union tokenizer
    assert rep["union"]["unreachable_new"] == 0
    assert utok.get_vocab_size() == 49212
    # emit: merged -> one checkpoint whose rows are the weighted mean of the members' re-indexed rows
    merged = tmp_path / "merged"
    body = {"version": 1, "base": str(smol), "models": {"gsm": {"path": str(other)}},
            "ops": [{"op": "union", "with": ["gsm"], "emit": "merged", "weights": {"base": 3, "gsm": 1}}]}
    rep = run(_recipe(tmp_path, body), merged, progress=False)
    assert rep["union"]["weights"] == {"base": 0.75, "gsm": 0.25} and not (merged / "members").exists()
    rows = {n: open_model_folder(f).read_embedding() for n, f in (("base", out), ("gsm", out / "members" / "gsm"),
                                                                  ("merged", merged))}
    assert np.abs(rows["merged"] - (0.75 * rows["base"] + 0.25 * rows["gsm"])).max() <= 1e-2  # bf16 storage
    AutoModelForCausalLM.from_pretrained(str(merged))
    body["ops"][0]["weights"] = {"nobody": 1}
    with pytest.raises(TokbenchError, match=r"ops\[0\]\.weights\.nobody"):
        run(_recipe(tmp_path, body), tmp_path / "bad", progress=False)


def test_dtype_casts_streaming_and_refuses_lossy(smol, smol_untied, tmp_path):
    """bf16 -> float32 is exact (same logits); float32 -> bfloat16 is refused at plan time unless allow_lossy,
    then counted; `tensors: embeddings` touches only the embedding and head."""
    import torch
    from transformers import AutoModelForCausalLM

    up = tmp_path / "up"
    rep = run(_recipe(tmp_path, {"version": 1, "base": str(smol), "ops": [{"op": "dtype", "to": "float32"}]}),
              up, progress=False)
    assert rep["dtype"]["changed_elements"] == 0 and rep["dtype"]["from"] == {"BF16": rep["dtype"]["tensors"]}
    assert {d for d, _, _ in _tensors(up).values()} == {"F32"}
    assert json.loads((up / "config.json").read_text())["torch_dtype"] == "float32"
    ids = torch.tensor([[1, 200, 3000, 40000, 7]])
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(str(smol), dtype=torch.float32)(ids).logits
        b = AutoModelForCausalLM.from_pretrained(str(up), dtype=torch.float32)(ids).logits
    assert torch.equal(a, b)

    body = {"version": 1, "base": str(smol_untied), "ops": [{"op": "dtype", "to": "bfloat16"}]}
    with pytest.raises(TokbenchError, match=r"ops\[0\].*float32 to bfloat16.*allow_lossy"):
        run(_recipe(tmp_path, body), tmp_path / "no", progress=False)
    assert not (tmp_path / "no").exists()
    body["ops"][0].update(allow_lossy=True, tensors="embeddings")
    down = tmp_path / "down"
    rep = run(_recipe(tmp_path, body), down, progress=False)
    kinds = {n: d for n, (d, _, _) in _tensors(down).items()}
    assert kinds["model.embed_tokens.weight"] == kinds["lm_head.weight"] == "BF16"
    assert {d for n, d in kinds.items() if n not in ("model.embed_tokens.weight", "lm_head.weight")} == {"F32"}
    assert rep["dtype"]["tensors"] == 2 and rep["dtype"]["changed_elements"] > 0
    index = json.loads((down / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(len(b) for _, _, b in _tensors(down).values())
    AutoModelForCausalLM.from_pretrained(str(down))


def test_add_tokens_refine_moves_only_new_rows(smol, tmp_path, require_asset):
    """init.refine runs the shared refinement on the written folder: only the new rows can change, the record
    is in the report, and a refine without a bound is refused naming its YAML path."""
    train = tmp_path / "gsm.txt"
    train.write_text("\n".join(_lines(require_asset, "gsm8k-train", 400)), encoding="utf-8")
    body = {"version": 1, "base": str(smol), "corpora": {"g": {"path": str(train)}},
            "ops": [{"op": "add_tokens", "learn": {"corpora": ["g"], "n": 40},
                     "init": {"method": "subword", "refine": {"text": "g", "steps": 6, "window": 64,
                                                              "max_chars": 20000}}}]}
    out = tmp_path / "ref"
    rep = run(_recipe(tmp_path, body), out, progress=False)
    assert rep["refine"]["rows"] == 40 and rep["refine"]["returned"] in ("refined", "initial")
    base, new = open_model_folder(smol).read_embedding(), open_model_folder(out).read_embedding()
    assert np.array_equal(base, new[:49152])
    plain = tmp_path / "plain"
    body["ops"][0]["init"].pop("refine")
    run(_recipe(tmp_path, body), plain, progress=False)
    same = np.array_equal(open_model_folder(plain).read_embedding()[49152:], new[49152:])
    assert same == (rep["refine"]["returned"] == "initial")
    body["ops"][0]["init"]["refine"] = {"text": "g"}
    with pytest.raises(TokbenchError, match=r"ops\[0\]\.init\.refine.*bound"):
        run(_recipe(tmp_path, body), tmp_path / "bad", progress=False)


def test_from_mergekit_converts_a_bundled_template_name(tmp_path, smol):
    """chat_template: llama3 (a mergekit bundled name) is read from the templates folder (or the installed
    mergekit), written next to the recipe, and the recipe runs; without either the error names the fix."""
    from click.testing import CliRunner

    from tokbench.cli import main
    from tokbench.surgery.union import from_mergekit

    folder = tmp_path / "mk"
    folder.mkdir()
    text = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    (folder / "llama3.jinja").write_text(text, encoding="utf-8")
    cfg = tmp_path / "merge.yml"
    cfg.write_text(f"base_model: {smol}\nmodels:\n  - model: {smol}\nchat_template: llama3\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["surgery", "--from-mergekit", str(cfg), "--mergekit-templates", str(folder),
                                    "-o", str(tmp_path / "recipe.yml")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "chat_template.jinja").read_text(encoding="utf-8") == text
    out = tmp_path / "out"
    run(tmp_path / "recipe.yml", out, progress=False)
    assert (out / "chat_template.jinja").read_text(encoding="utf-8") == text
    try:
        import mergekit  # noqa: F401
    except ImportError:
        with pytest.raises(TokbenchError, match="mergekit is not installed.*--mergekit-templates"):
            from_mergekit({"base_model": "a", "chat_template": "mistral"}, files=tmp_path / "x")
    with pytest.raises(TokbenchError, match="no alpaca.jinja"):
        from_mergekit({"base_model": "a", "chat_template": "alpaca"}, files=tmp_path / "x", templates=folder)


def test_select_stable_weighted_lines_and_filters_by_hand():
    """select_stable with line weights bounds the weight of changed lines, not their count; filter_learned drops
    symbol-only and rare candidates and everything built on them (hand-made merges over 3 base tokens)."""
    from tokbench.surgery.stable import Reference, filter_learned, select_stable

    # base tokens 0 'a', 1 'b', 2 '='; candidates: 3 = ab, 4 = ==, 5 = ab+a (built on 3), 6 = =+a
    cands = [(0, 1, 3), (2, 2, 4), (3, 0, 5), (2, 0, 6)]
    ref = Reference(words=[[0, 1], [2, 0]], lines_of=[[0], [1]], corpus_of=[0, 0], n_lines=[2],
                    line_weight=[0.9, 0.1])
    # the line with 'ab' weighs 0.9 of 1.0: a 50 % bound refuses 3 (and 5, built on it), keeps 4 and 6 (0.1)
    sel = select_stable(cands, 10, 3, ref, 50.0)
    assert sel.merges == [(2, 2, 4), (2, 0, 6)] and sel.rejected == 1 and sel.skipped == 1
    assert abs(sel.changed_lines[0] - 0.1) < 1e-12
    unweighted = Reference(words=ref.words, lines_of=ref.lines_of, corpus_of=ref.corpus_of, n_lines=[2])
    assert select_stable(cands, 10, 3, unweighted, 50.0).merges == [(0, 1, 3), (2, 2, 4), (3, 0, 5)]
    text = {3: "ab", 4: "==", 5: "aba", 6: "=a"}.get
    f = filter_learned(cands, 3, text, require_letter=True, min_documents=2, df={3: 1, 4: 9, 5: 9, 6: 2})
    assert f.merges == [(2, 0, 6)] and (f.no_letter, f.few_documents, f.skipped) == (1, 1, 1)
