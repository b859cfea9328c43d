"""Under-trained token detection and vocabulary union (tokbench.surgery.undertrained / .union) on real assets."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import require_asset
from tokbench.errors import TokbenchError
from tokbench.surgery import undertrained as ut
from tokbench.surgery import union as un

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_surgery_analysis", ROOT / "benchmarks" / "bench_surgery_analysis.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def tbd():
    return require_asset("tbd-gpt2-d128", kind="model")


@pytest.fixture(scope="module")
def smol():
    return require_asset("smollm2-135m", kind="model")


@pytest.fixture(scope="module")
def tbd_rows(tbd):
    from tokbench.vocab import load_vocabulary
    from tokbench.vocab.model_io import open_model_folder

    return load_vocabulary(tbd), open_model_folder(tbd).read_embedding()


@pytest.fixture(scope="module")
def smol_rows(smol):
    from tokbench.vocab import load_vocabulary
    from tokbench.vocab.model_io import open_model_folder

    return load_vocabulary(smol), open_model_folder(smol).read_embedding()


# --- under-trained detection ---------------------------------------------------------------------------
def test_auroc_equals_pairwise_count():
    rng = np.random.default_rng(1)
    s = np.round(rng.standard_normal(300), 1)  # ties on purpose
    pos = rng.random(300) < 0.3
    brute = np.mean([(a < b) + 0.5 * (a == b) for a in s[pos] for b in s[~pos]])
    assert ut.auroc(s, pos) == pytest.approx(brute, abs=1e-12)
    assert ut.auroc(np.arange(4.0), np.array([1, 1, 0, 0], bool)) == 1.0
    assert ut.auroc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 0.0


def test_known_unused_is_the_invalid_utf8_bytes_of_gpt2(tbd_rows):
    vocab, emb = tbd_rows
    refs, rule = ut.known_unused(vocab, emb.shape[0])
    assert rule == "invalid-UTF-8 byte tokens"
    assert sorted(vocab.token_bytes[i][0] for i in refs) == sorted(ut.INVALID_UTF8_BYTES)
    # padding rows count as references too
    refs2, rule2 = ut.known_unused(vocab, emb.shape[0] + 3)
    assert refs2[-3:] == [emb.shape[0], emb.shape[0] + 1, emb.shape[0] + 2] and "padding rows" in rule2


def test_smollm2_has_no_known_unused_tokens_so_the_centroid_rule_is_used(smol_rows, smol):
    vocab, emb = smol_rows
    refs, rule = ut.known_unused(vocab, emb.shape[0], smol / "tokenizer.json")
    assert refs == [] and rule == "none"  # no 0xC0/0xF5.. tokens, every token reachable
    r = ut.detect(vocab, emb)
    assert r.reference_rule.startswith("centroid") and len(r.references) == 49


def test_tbd_gpt2_auroc_against_never_seen_in_training(bench, tbd):
    counts = bench.training_counts(tbd, bench.tbd_training_texts())
    assert counts.sum() == 11_348_334  # donors_report.json train_tokens: the same text, the same tokenizer
    never = counts == 0
    r = ut.detect_model(tbd)
    assert r.indicator == "eout_cos" and r.reference_rule == "invalid-UTF-8 byte tokens"
    assert ut.auroc(r.scores, never) >= 0.9
    assert np.mean(never[r.candidates]) > 0.95  # the bottom 2% are tokens it never saw
    assert r.degenerate == {}


def test_degenerate_rule_reports_planted_zero_mean_and_copied_rows(smol_rows):
    vocab, emb = smol_rows
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.choice(np.arange(17, emb.shape[0]), 21, replace=False)]
    planted = emb.copy()
    planted[ids[:10]] = 0.0
    planted[ids[10:20]] = emb.mean(axis=0)
    planted[ids[20]] = emb[1000]
    r = ut.detect(vocab, planted)
    assert set(ids) <= set(r.candidates)
    assert all(r.degenerate[i] == "zero" for i in ids[:10])
    assert all(r.degenerate[i] == "mean" for i in ids[10:20])
    assert r.degenerate[ids[20]] == f"duplicate of {min(1000, ids[20])}" or r.degenerate[ids[20]].startswith("dupl")
    # by score alone the zero rows rank as well trained (cosine distance 1): the rule is what finds them
    assert all(r.scores[i] > r.threshold for i in ids[:10])
    summary = r.to_dict(top=5)
    assert summary["candidates"] == len(r.candidates) and len(summary["tokens"]) == 5
    json.dumps(summary)


def test_untied_model_uses_input_norm(tbd_rows):
    vocab, emb = tbd_rows
    head = emb.copy()
    emb2 = emb.copy()
    emb2[5000:5010] *= 1e-3  # rows that "never got a gradient"
    r = ut.detect(vocab, emb2, head, percentile=1.0)
    assert r.indicator == "ein_l2"
    assert set(range(5000, 5010)) <= set(r.candidates[:20])


def test_verify_labels_a_zero_row_verified_and_a_frequent_token_rejected(tbd):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # a loaded 2-core machine: OpenMP spin-waiting makes 2 threads slower
    lm = AutoModelForCausalLM.from_pretrained(tbd, dtype=torch.float32).eval()
    tk = Tokenizer.from_file(str(tbd / "tokenizer.json"))
    space, newline, glitch = tk.token_to_id("Ġ"), tk.token_to_id("Ċ"), 30000
    with torch.no_grad():
        lm.get_input_embeddings().weight[glitch] = 0.0
    v = ut.verify(lm, lambda s: tk.encode(s, add_special_tokens=False).ids, [glitch, space, newline],
                  max_candidates=3, progress=False)
    assert v[glitch]["label"] == "strong_verified" and v[glitch]["max_prob"] < 1e-3
    assert v[space]["label"] == "strong_rejected"
    assert set(v[space]["per_prompt"]) == {"repeat", "quote", "echo"}
    with pytest.raises(TokbenchError, match="max_candidates"):
        ut.verify(lm, lambda s: [], [1], max_candidates=0)
    with pytest.raises(TokbenchError, match="unknown verification prompt"):
        ut.verify(lm, lambda s: [], [1], prompts=("nope",))


def test_detect_refuses_bad_arguments(tbd_rows):
    vocab, emb = tbd_rows
    with pytest.raises(TokbenchError, match="percentile"):
        ut.detect(vocab, emb, percentile=0)
    with pytest.raises(TokbenchError, match="unknown indicator"):
        ut.detect(vocab, emb, indicator="magic")
    with pytest.raises(TokbenchError, match="needs reference tokens"):
        ut.detect(vocab, emb, indicator="eout_cos", references=[])
    with pytest.raises(TokbenchError, match="outside"):
        ut.detect(vocab, emb, references=[10**9])
    with pytest.raises(TokbenchError, match="head shape"):
        ut.detect(vocab, emb, emb[:10])


# --- reachability --------------------------------------------------------------------------------------
def _hf_roundtrip(tk, i: int) -> bool:
    return tk.encode(tk.decode([i], skip_special_tokens=False), add_special_tokens=False).ids == [i]


def test_reachability_agrees_with_tokenizers_roundtrip():
    from tokenizers import Tokenizer

    path = require_asset("smollm2", kind="tokenizer")
    tk = Tokenizer.from_file(str(path))
    tk.add_tokens(["Ġzzqxunion", "<tool_call>", "ation"])  # mergekit-style added tokens
    data = json.loads(tk.to_str())
    r = un.reachability(data)
    ids = {tk.token_to_id(t) for t in ("Ġzzqxunion", "<tool_call>", "ation")}
    assert tk.token_to_id("Ġzzqxunion") in r.added_unreachable
    assert tk.token_to_id("<tool_call>") in r.added
    assert tk.token_to_id("Ġzzqxunion") in r.added_only and tk.token_to_id("ation") not in r.added_only
    good = set(r.reachable) | set(r.added)
    bad = set(r.unreachable) | set(r.added_unreachable)
    # the added "ation" is matched inside other words: base tokens holding it become unreachable
    assert any("ation" in tk.id_to_token(i) for i in r.unreachable)
    rng = np.random.default_rng(0)
    sample = sorted(set(rng.choice(tk.get_vocab_size(), 3000, replace=False).tolist()) | ids | set(r.unreachable[:50]))
    for i in sample:
        if i in good:
            assert _hf_roundtrip(tk, i), tk.id_to_token(i)
        elif i in bad:
            assert not _hf_roundtrip(tk, i), tk.id_to_token(i)


def test_reachability_classes_on_gpt2():
    r = un.reachability(require_asset("gpt2", kind="tokenizer"))
    c = r.counts()
    assert c["invalid_bytes"] == 13 and c["unreachable"] == 0 and c["special"] == 1
    assert c["reachable"] + c["fragment"] + 13 + 1 == 50257


# --- union ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gsm_member(bench, smol):
    texts = bench.gsm8k_texts()[:1500]
    tok, parts = bench.continue_bpe(smol / "tokenizer.json", texts, 60)
    return tok, parts


def test_union_with_a_continued_member_is_the_member_and_reachable(gsm_member, smol):
    from tokenizers import Tokenizer

    tok, parts = gsm_member
    assert len(parts) == 60 and min(parts) == 49152
    u = un.build_union({"smollm2": smol, "gsm8k": tok}, "smollm2")
    assert len(u) == 49152 + 60 and u.bridges == [] and u.unreachable_new == []
    assert u.permutations["smollm2"][:49152] == list(range(49152)) and u.permutations["smollm2"][49152:] == [None] * 60
    assert u.permutations["gsm8k"] == list(range(49152 + 60))
    assert un.reachability(u.tokenizer).never_produced == []
    a = Tokenizer.from_str(json.dumps(u.tokenizer))
    b = Tokenizer.from_str(json.dumps(tok))
    lines = [t[:300] for t in _bench().gsm8k_texts("gsm8k-test")[:50]]
    assert [e.ids for e in a.encode_batch(lines)] == [e.ids for e in b.encode_batch(lines)]


def test_union_of_different_merge_orders_keeps_every_member_token(smol):
    from tokenizers import Tokenizer

    with pytest.raises(TokbenchError, match="splits text differently"):
        un.build_union({"smollm2": "smollm2", "gpt2": "gpt2"}, "smollm2")
    u = un.build_union({"smollm2": "smollm2", "gpt2": "gpt2"}, "smollm2", check_pretokenizer=False)
    assert u.unreachable_new == [] and len(u.bridges) > 0
    assert sum(x is not None for x in u.permutations["gpt2"]) == 50257
    assert u.permutations["smollm2"][:49152] == list(range(49152))
    r = un.reachability(u.tokenizer)
    from tokbench.bpe.encoding import bytelevel_bytes

    # what stays unreachable are GPT-2 number tokens: SmolLM2's pre-tokenizer splits every digit
    no_digit = [i for i in r.unreachable
                if not any(ch.isnumeric() for ch in bytelevel_bytes(u.tokens[i]).decode("utf-8", "replace"))]
    assert no_digit == [] and all(u.origin[i] != "smollm2" for i in r.unreachable)
    # the written tokenizer is one `tokenizers` loads, and tokbench encodes it identically
    from tokbench.bpe import BPE

    tk = Tokenizer.from_str(json.dumps(u.tokenizer))
    with un._with_file(un.read_bpe(u.tokenizer)) as p:
        ours = BPE.from_file(p)
    lines = open(require_asset("wikitext2-test"), encoding="utf-8").read().splitlines()[:300]
    assert [e.ids for e in tk.encode_batch(lines, add_special_tokens=False)] == ours.encode_batch(lines, allowed_special="all")


def test_reindexed_member_gives_the_same_logits(tbd):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from tokbench.vocab.model_io import open_model_folder

    torch.set_num_threads(1)  # a loaded 2-core machine: OpenMP spin-waiting makes 2 threads slower
    u = un.build_union({"smollm2": "smollm2", "tbd": tbd}, "smollm2", check_pretokenizer=False)
    perm = u.permutations["tbd"]
    plan = [un.RowSource("copy", (("tbd", i),)) if i is not None else un.RowSource("zero") for i in perm]
    rows = un.reindex_rows(plan, {"tbd": open_model_folder(tbd).read_embedding()})
    a = AutoModelForCausalLM.from_pretrained(tbd, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(tbd, dtype=torch.float32).eval()
    b.resize_token_embeddings(len(u), mean_resizing=False)
    with torch.no_grad():
        b.get_input_embeddings().weight.copy_(torch.from_numpy(rows))
    assert b.get_output_embeddings().weight.data_ptr() == b.get_input_embeddings().weight.data_ptr()
    inv = u.inverse("tbd")
    cols = torch.tensor([inv[j] for j in range(50257)])
    assert sorted(cols.tolist()) != list(range(50257))  # a real permutation, not the identity
    tk = Tokenizer.from_file(str(tbd / "tokenizer.json"))
    with torch.no_grad():
        for line in ["The capital of France is Paris, and 12 + 30 = 42.", "def f(x):\n    return x ** 2\n"]:
            ids = tk.encode(line).ids
            la = a(torch.tensor([ids])).logits[0]
            lb = b(torch.tensor([[inv[i] for i in ids]])).logits[0]
            assert float((la - lb[:, cols]).abs().max()) <= 1e-3


def test_mergekit_style_added_union_leaves_tokens_text_never_produces(gsm_member, smol):
    from tokenizers import Tokenizer

    tok, parts = gsm_member
    base = Tokenizer.from_file(str(smol / "tokenizer.json"))
    strings = {i: s for s, i in tok["model"]["vocab"].items()}
    base.add_tokens([strings[i] for i in sorted(parts)])  # what mergekit's union does with them
    r = un.reachability(json.loads(base.to_str()))
    assert len(r.added_only) == 60
    assert len(r.never_produced) > 0
    assert all(strings[i].startswith("Ġ") for i in r.added_unreachable if i in parts)


# --- tokens block, row plan, mergekit config -----------------------------------------------------------
def _toy_union():
    data_a = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3}, "merges": [["a", "b"]]},
              "added_tokens": [{"id": 4, "content": "<s>", "special": True}]}
    data_b = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "bc": 3}, "merges": [["b", "c"]]},
              "added_tokens": []}
    return {"A": data_a, "B": data_b}


def test_row_plan_follows_mergekit_defaults_and_the_tokens_block():
    members = _toy_union()
    u = un.build_union(members, "A", tokens={"bc": {"source": {"kind": "zero"}}})
    assert u.tokens == ["a", "b", "c", "ab", "<s>", "bc"]
    assert u.permutations == {"A": [0, 1, 2, 3, 4, None], "B": [0, 1, 2, None, None, 3]}
    rows = {"A": np.arange(10, dtype=np.float32).reshape(5, 2), "B": 100 + np.arange(8, dtype=np.float32).reshape(4, 2)}
    plain = un.row_plan(u, {})
    b = un.reindex_rows(plain["B"], rows)
    assert (b[0] == rows["B"][0]).all() and (b[3] == rows["A"][3]).all()  # own row; only in A
    assert (b[5] == rows["B"][3]).all()
    plan = un.row_plan(u)
    assert plan["A"][5].kind == "zero" and plan["B"][5].kind == "copy"  # zero only where B's own row is missing
    forced = un.row_plan(u, {"a": {"source": {"kind": "model_token", "model": "B", "token_id": 2}, "force": True},
                              "b": {"force": True}, "c": {"source": "B"}})
    assert forced["A"][0] == un.RowSource("copy", (("B", 2),), "tokens: B token 2")
    assert forced["A"][1].kind == "copy" and forced["A"][1].refs == (("A", 1),)  # force + default: the base row
    assert forced["A"][2].refs == (("A", 2),)  # not forced: A keeps its own row
    mean = un.row_plan(u, {"a": {"force": True}}, base="nobody")
    assert mean["A"][0] == mean["B"][0] == un.RowSource("mean", (("A", 0), ("B", 0)), "mean of the models that have it")
    assert (un.reindex_rows(mean["A"], rows)[0] == (rows["A"][0] + rows["B"][0]) / 2).all()
    assert mean["A"][3].kind == "copy" and mean["B"][1].refs == (("B", 1),)
    by_token = un.row_plan(u, {"c": {"source": {"kind": "model_token", "model": "A", "token": "<s>"}, "force": True}},
                           member_tokens=members)
    assert by_token["B"][2].refs == (("A", 4),)


@pytest.mark.parametrize("block,msg", [
    ({"x": {"source": {"kind": "model_token", "model": "A"}}}, "exactly one of token"),
    ({"x": {"source": {"kind": "weird"}}}, "kind 'weird'"),
    ({"x": {"sauce": "A"}}, "not a mergekit token field"),
    ({"x": {"force": "yes"}}, "force must be"),
    ({"x": {"source": {"kind": "model_token", "model": "A", "token_id": -1}}}, "non-negative"),
    ([1, 2], "must be a mapping"),
])
def test_tokens_block_errors_name_the_entry(block, msg):
    with pytest.raises(TokbenchError, match=msg):
        un.parse_tokens_block(block)


def test_union_vocab_base_or_a_member_reindexes_onto_that_vocabulary():
    members = _toy_union()
    only_a = un.build_union(members, "A", vocab="base")
    assert only_a.tokens == ["a", "b", "c", "ab", "<s>"] and only_a.permutations["B"] == [0, 1, 2, None, None]
    only_b = un.build_union(members, "A", vocab="B")
    assert only_b.base == "B" and only_b.tokens == ["a", "b", "c", "bc"]
    assert only_b.permutations == {"A": [0, 1, 2, None], "B": [0, 1, 2, 3]}
    assert un.row_plan(only_b, {}, base="A")["A"][3] == un.RowSource("copy", (("B", 3),), "only in B")


def test_row_plan_errors():
    u = un.build_union(_toy_union(), "A")
    with pytest.raises(TokbenchError, match="has no token"):
        un.row_plan(u, {"ab": {"source": "B", "force": True}})
    with pytest.raises(TokbenchError, match="not a member"):
        un.row_plan(u, {"ab": {"source": "C"}})
    with pytest.raises(TokbenchError, match="not in the union"):
        un.row_plan(u, {"zz": {}})
    with pytest.raises(TokbenchError, match="hidden sizes"):
        un.reindex_rows(un.row_plan(u)["A"], {"A": np.zeros((5, 2)), "B": np.zeros((4, 3))})


def test_union_refuses_non_bytelevel_members():
    with pytest.raises(TokbenchError, match="not a BPE tokenizer"):
        un.read_bpe(require_asset("xlm-r", kind="tokenizer"))
    with pytest.raises(TokbenchError, match="base 'x' is not one of the members"):
        un.build_union({"a": "gpt2"}, "x")
    with pytest.raises(TokbenchError, match="neither union, base nor a member"):
        un.build_union({"a": "gpt2"}, "a", vocab="other")


def test_union_adds_tokens_block_keys_as_real_merges(smol):
    u = un.build_union({"smollm2": smol}, "smollm2", tokens={"Ġzzqxunion": {}, "<tool_call>": {"source": {"kind": "zero"}}})
    assert u.tokens[-1] == "<tool_call>" and "Ġzzqxunion" in u.tokenizer["model"]["vocab"]
    r = un.reachability(u.tokenizer)
    assert u.tokens.index("Ġzzqxunion") in r.reachable and len(u) - 1 in r.added
    assert r.never_produced == []


def test_from_mergekit_converts_the_tokenizer_part(tmp_path):
    cfg = {"merge_method": "linear", "base_model": "org/base",
           "models": [{"model": "org/base"}, {"model": "org/chat", "parameters": {"weight": 0.5}}],
           "tokenizer": {"source": "union", "pad_to_multiple_of": 64,
                         "tokens": {"<|im_start|>": {"source": {"kind": "model_token", "model": "org/chat", "token": "<|im_start|>"}},
                                    "<|im_end|>": {"source": "org/base", "force": True}}},
           "chat_template": "chatml"}
    r = un.from_mergekit(cfg, files=tmp_path)
    assert r["version"] == 1 and r["base"] == "org/base" and r["models"] == {"chat": {"path": "org/chat"}}
    assert r["ops"][0] == {"op": "union", "with": ["chat"], "emit": "permuted", "tokens": {
        "<|im_start|>": {"source": {"kind": "model_token", "model": "chat", "token": "<|im_start|>"}},
        "<|im_end|>": {"source": "base", "force": True}}}
    assert r["ops"][1] == {"op": "chat_template", "source": "file", "path": "chat_template.jinja"}
    assert r["ops"][2] == {"op": "pad_vocab", "multiple_of": 64, "init": "mean"}
    # the ChatML template renders the format transformers' tokenizers expect
    import jinja2

    text = jinja2.Template((tmp_path / "chat_template.jinja").read_text()).render(
        messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    try:  # once the recipe schema of the surgery branch is present, the result must validate against it
        from tokbench.surgery.recipe import parse_recipe
    except ImportError:
        parse_recipe = None
    if parse_recipe is not None:
        parse_recipe(r, "converted", tmp_path)
    p = tmp_path / "m.yml"
    p.write_text("base_model: a\nslices:\n  - sources:\n      - model: a\n      - model: b\ntokenizer_source: b\n"
                 "chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}'\n")
    r2 = un.from_mergekit(p, files=tmp_path / "t")
    assert r2["ops"][0]["vocab"] == "b" and r2["ops"][1]["source"] == "file"
    assert (tmp_path / "t" / "chat_template.jinja").read_text().startswith("{% for m in messages %}")
    assert un.from_mergekit({"base_model": "a", "tokenizer_source": "base"})["ops"][0]["vocab"] == "base"
    assert un.from_mergekit({"base_model": "a", "chat_template": "auto"})["ops"] == [{"op": "chat_template", "source": "keep"}]
    assert un.from_mergekit({"models": [{"model": "a"}]})["ops"] == []
    with pytest.raises(TokbenchError, match="both set"):
        un.from_mergekit({"base_model": "a", "tokenizer": {}, "tokenizer_source": "union"})
    with pytest.raises(TokbenchError, match="not one of the merged models"):
        un.from_mergekit({"base_model": "a", "tokenizer_source": "zzz"})
    with pytest.raises(TokbenchError, match="pad_to_multiple_of"):
        un.from_mergekit({"base_model": "a", "tokenizer": {"pad_to_multiple_of": 0}})
    with pytest.raises(TokbenchError, match="bundled templates"):
        un.from_mergekit({"base_model": "a", "chat_template": "llama3"}, files=tmp_path)
    with pytest.raises(TokbenchError, match="pass files="):
        un.from_mergekit({"base_model": "a", "chat_template": "chatml"})
    bad = tmp_path / "bad.yml"
    bad.write_text("a: [1,\n")
    with pytest.raises(TokbenchError, match="cannot read the mergekit config"):
        un.from_mergekit(bad)
