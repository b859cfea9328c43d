"""Keep policies (tokbench.dynamic.keep): extra cuts that leave the last occurrence of every word, or the last N
tokens, of each sequence in their original tokens; the % budgets stay against the mode's own word level."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import require_asset
from tokbench.cli import main
from tokbench.dynamic import DynamicTokenizer, boundary_mask, merge_batch
from tokbench.dynamic.keep import KeepPolicy, apply_keep, parse_keep
from tokbench.errors import TokbenchError

TEXTS = [
    "Valkyria Chronicles III is a game. The Valkyria team made Valkyria Chronicles III in 2011 @-@ 2012.",
    "The Valkyria Chronicles III soundtrack @-@ by Sakimoto @-@ came out; Sakimoto wrote the Valkyria theme.",
    "Sakimoto and the Valkyria Chronicles staff @-@ again @-@ worked on Valkyria Chronicles III.",
]


@pytest.fixture(scope="module")
def smollm2():
    require_asset("smollm2")
    return DynamicTokenizer.load("smollm2")


def _segments(ids, cut):
    """(start, end) of every segment between the mode's cuts."""
    starts = [i for i, c in enumerate(cut) if c or i == 0]
    return list(zip(starts, starts[1:] + [len(ids)]))


def _spans(mb, s):
    """(start, end) in base positions of every token of merged sequence s, and whether it is a dynamic token."""
    out, pos = [], 0
    for t in mb.merged[s]:
        n = len(mb.constituents(t))
        out.append((pos, pos + n, t >= mb.n_base))
        pos += n
    return out


@pytest.mark.parametrize("mode", ["pretokens", "pretokens-unicode"])
def test_last_occurrence_keeps_the_last_copy_of_every_word_spelled_out(smollm2, mode):
    plain = merge_batch(smollm2, TEXTS, mode=mode)
    mb = merge_batch(smollm2, TEXTS, mode=mode, keep="last-occurrence")
    cut = boundary_mask(smollm2, mb.ids, mode)
    merged_earlier = 0
    for s, ids in enumerate(mb.ids):
        spans = _spans(mb, s)
        dynamic = {(a, b) for a, b, d in spans if d}
        base_pos = {a for a, b, d in spans if not d}
        segs = _segments(ids, cut[s])
        last = {}
        for a, b in segs:
            last[tuple(ids[a:b])] = (a, b)
        for a, b in segs:
            word = tuple(ids[a:b])
            if last[word] == (a, b):  # the last occurrence: every one of its tokens a base token
                assert all(i in base_pos for i in range(a, b)), (s, smollm2.stream_text(word))
            elif (a, b) in dynamic:
                merged_earlier += 1
        assert mb.expand(mb.merged[s]) == ids
        assert mb.decode_bytes(s) == TEXTS[s].encode()
    # earlier occurrences do merge (" Valkyria", " Sakimoto", " @-@" repeat within a sequence) ...
    assert merged_earlier >= 6
    texts = {b for b in mb.token_bytes}
    assert b" Valkyria" in texts and b" Sakimoto" in texts
    # ... and without the policy the last occurrences merge too, so the policy is what keeps them
    assert plain.tokens_after < mb.tokens_after
    assert any(d for a, b, d in _spans(plain, 2)[-6:])
    # the word level (the % denominator) is the mode's own; the policy's exhaustion point lies above it
    assert mb.word_level == plain.word_level == sum(map(sum, cut))
    assert mb.tokens_after == mb.keep_level > mb.word_level
    assert 0 < mb.keep_pct_of_word_level == mb.pct_of_word_level < 100


def test_last_word_keeps_words_with_a_letter_and_lets_punctuation_runs_merge(smollm2):
    mb = merge_batch(smollm2, TEXTS, mode="pretokens", keep="last-word")
    last = merge_batch(smollm2, TEXTS, mode="pretokens", keep="last-occurrence")
    hyphen = tuple(smollm2.bpe.encode_ordinary(" @-@"))
    assert len(hyphen) > 1
    cut = boundary_mask(smollm2, mb.ids, "pretokens")
    for s, ids in enumerate(mb.ids):
        spans = _spans(mb, s)
        base_pos = {a for a, b, d in spans if not d}
        segs = _segments(ids, cut[s])
        final = {tuple(ids[a:b]): (a, b) for a, b in segs}
        for word, (a, b) in final.items():
            if word == hyphen:  # no letter: merged even where it occurs last
                assert (a, b, True) in spans
            elif any(ch.isalpha() for ch in smollm2.stream_text(word)):
                assert all(i in base_pos for i in range(a, b)), smollm2.stream_text(word)
        assert mb.expand(mb.merged[s]) == ids
    assert mb.word_level == last.word_level and mb.keep_level < last.keep_level


def test_last_punct_keeps_punctuation_runs_and_lets_words_merge(smollm2):
    mb = merge_batch(smollm2, TEXTS, mode="pretokens", keep="last-punct")
    hyphen = tuple(smollm2.bpe.encode_ordinary(" @-@"))
    valk = tuple(smollm2.bpe.encode_ordinary(" Valkyria"))
    cut = boundary_mask(smollm2, mb.ids, "pretokens")
    for s, ids in enumerate(mb.ids):
        spans = _spans(mb, s)
        base_pos = {a for a, b, d in spans if not d}
        final = {tuple(ids[a:b]): (a, b) for a, b in _segments(ids, cut[s])}
        a, b = final[hyphen]  # its last occurrence spelled out, its earlier ones merged
        assert all(i in base_pos for i in range(a, b))
        assert sum(x == hyphen for x in (tuple(ids[p:q]) for p, q, d in spans if d)) == (s > 0)
        a, b = final[valk]  # a word: merged even where it occurs last
        assert (a, b, True) in spans
        assert mb.expand(mb.merged[s]) == ids
    assert parse_keep("last-punct").keeps(" @-@") and not parse_keep("last-punct").keeps(" 2011")


def test_recent_tail_is_never_merged_and_policies_combine(smollm2):
    plain = merge_batch(smollm2, TEXTS, mode="pretokens")
    for n in (5, 12):
        mb = merge_batch(smollm2, TEXTS, mode="pretokens", keep=f"recent:{n}")
        for s, ids in enumerate(mb.ids):
            assert mb.merged[s][-n:] == ids[-n:]
            assert mb.expand(mb.merged[s]) == ids
        # unmerged under the policy, merged without it
        assert any(t >= plain.n_base for s in range(3) for t in plain.merged[s][-(n - 1):])
    both = merge_batch(smollm2, TEXTS, mode="pretokens", keep="last-occurrence+recent:12")
    last = merge_batch(smollm2, TEXTS, mode="pretokens", keep="last-occurrence")
    assert both.keep == "last-occurrence+recent:12"
    assert both.keep_level >= last.keep_level and all(m[-12:] == i[-12:] for m, i in zip(both.merged, both.ids))
    cut = boundary_mask(smollm2, both.ids, "pretokens")
    assert apply_keep(both.ids, cut, "none") == cut
    assert sum(map(sum, apply_keep(both.ids, cut, "recent:100000"))) == sum(map(len, both.ids))


def test_a_pct_budget_under_a_policy_stays_against_the_modes_word_level(smollm2):
    require_asset("wikitext2-test")
    from tokbench.dynamic.stats import corpus_lines

    batch = corpus_lines("wikitext2-test", limit_lines=32)
    full = merge_batch(smollm2, batch, mode="pretokens", keep="last-occurrence")
    top = full.keep_pct_of_word_level
    assert 5 < top < 90
    mb = merge_batch(smollm2, batch, mode="pretokens", keep="last-occurrence", pct_of_word_level=top / 2)
    assert mb.word_level == full.word_level and top / 2 <= mb.pct_of_word_level < top
    with pytest.raises(TokbenchError, match=rf"cannot be met under keep policy last-occurrence: it reaches at most "
                                            rf"{top:.1f}% of the word level"):
        merge_batch(smollm2, batch, mode="pretokens", keep="last-occurrence", pct_of_word_level=top + 1)
    with pytest.raises(TokbenchError, match="cannot be met under keep policy recent:100000"):
        merge_batch(smollm2, batch, mode="pretokens", keep="recent:100000", shorter_pct=1)


def test_bad_policy_strings(smollm2):
    assert parse_keep("none") == parse_keep(None) == KeepPolicy()
    assert parse_keep(" recent:8 + last-occurrence") == KeepPolicy("occurrence", 8)
    assert parse_keep("last-punct") == KeepPolicy("punct")
    assert str(parse_keep("recent:8+last-word")) == "last-word+recent:8"
    for bad in ("last", "last-word+last-occurrence", "last-punct+last-word", "last-", "last-all", "recent:", "recent:0", "recent:-3", "recent:x", "recent:1e3", "recent:٣",
                "last-occurrence+last-occurrence", "none+recent:3", ""):
        with pytest.raises(TokbenchError, match="unknown keep policy"):
            parse_keep(bad)
    with pytest.raises(TokbenchError, match="unknown keep policy"):
        merge_batch(smollm2, ["a b"], keep="latest")


def _run(*args):
    return CliRunner().invoke(main, ["dynamic", *args])


def test_cli_keep_policy_output_and_one_line_errors(smollm2, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("\n".join(TEXTS) + "\n")
    r = _run("merge", "-t", "smollm2", "-i", str(batch), "--mode", "pretokens", "--keep", "last-occurrence")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    ref = merge_batch(smollm2, TEXTS, mode="pretokens", keep="last-occurrence")
    assert d["merged"] == ref.merged and d["keep"] == "last-occurrence"
    assert d["keep_pct_of_word_level"] == pytest.approx(ref.keep_pct_of_word_level)
    r = _run("merge", "-t", "smollm2", "-i", str(batch), "--mode", "pretokens", "--keep", "last-occurrence",
             "--summary")
    assert r.exit_code == 0 and f"keep last-occurrence reaches at most {ref.keep_pct_of_word_level:.1f}%" in r.output
    for args, msg in [(["merge", "-t", "smollm2", "-i", str(batch), "--keep", "recent:0"], "--keep: unknown keep policy"),
                      (["curve", "-t", "smollm2", "-c", "wikitext2-test", "--keep", "oldest"], "--keep: unknown keep policy"),
                      (["fidelity", "--keep", "last+recent:4"], "--keep: unknown keep policy"),
                      (["merge", "-t", "smollm2", "-i", str(batch), "--mode", "pretokens", "--keep", "last-occurrence",
                        "--pct-of-word-level", "99"], "cannot be met under keep policy last-occurrence")]:
        r = _run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.output, r.stderr


def test_fidelity_refuses_an_unreachable_budget_before_loading_the_model(tmp_path, monkeypatch):
    model = require_asset("tbd-gpt2-d128")
    require_asset("gpt2")
    import transformers

    def boom(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    r = _run("fidelity", "-m", str(model), "-t", "gpt2", "--windows", "4", "--prefix", "64", "--continuation", "8",
             "--budgets", "95%", "--methods", "mean", "--mode", "pretokens", "--keep", "last-occurrence", "-q")
    assert r.exit_code == 2 and "95% of the word level cannot be met under keep policy last-occurrence" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output
