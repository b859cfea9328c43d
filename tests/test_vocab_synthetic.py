"""Vocabulary and align() on tokenizers trained inside the test: exactness against the library,
decompositions, specials by role, and one-line errors for bad inputs."""
from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer, decoders

from synthetic_tokenizers import TRAINERS, generated_text
from tokbench.cli import main
from tokbench.errors import TokbenchError
from tokbench.vocab import Kind, align, align_report, inspect_report, load_vocabulary


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tok")
    return {name: train(root / name) for name, train in TRAINERS.items()}


@pytest.mark.parametrize("style", sorted(TRAINERS))
def test_bytes_reproduce_library_decode(trained, style):
    path = trained[style]
    vocab = load_vocabulary(path)
    assert vocab.style.value == ("metaspace" if style == "unigram" else style)
    tok = Tokenizer.from_file(str(path))
    if style == "wordpiece":
        tok.decoder = decoders.WordPiece(cleanup=False)
    texts = generated_text(seed=42, words=3000) + ["tab\there", "new\nline", "  two  spaces", "ü日"]
    for text, enc in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        assert vocab.decode(enc.ids) == tok.decode(enc.ids, skip_special_tokens=True), text


@pytest.mark.parametrize("old_style", sorted(TRAINERS))
@pytest.mark.parametrize("new_style", sorted(TRAINERS))
def test_align_every_pair(trained, old_style, new_style):
    old, new = load_vocabulary(trained[old_style]), load_vocabulary(trained[new_style])
    a = align(old, new)
    n_text = sum(1 for k in new.kinds if k in (Kind.NORMAL, Kind.BYTE))
    assert len(a.shared) + len(a.new_only) == n_text
    for i, j in a.shared.items():
        assert new.key(i) == old.key(j)
    for i in a.new_only:
        pieces = a.decompositions[i]
        assert pieces, new.tokens[i]
        if a.decomposition_has_unk(i):
            continue
        data, _ws = old.surface(new.key(i))
        rebuilt = b"".join(old.token_bytes[j] for j in pieces)
        if old.style.value == "wordpiece":
            assert rebuilt == data and old.word_start[pieces[0]] == new.key(i)[1]
        else:
            assert rebuilt == data
    if old_style == new_style:
        assert not a.new_only and not a.old_only
        assert all(j is not None for _, j in a.roles.values())
    report = align_report(a)
    json.dumps(report)  # JSON-serialisable
    assert report["counts"]["shared"] == len(a.shared)


def test_roles_and_specials(trained):
    bpe = load_vocabulary(trained["bytelevel"])
    assert bpe.tokens[bpe.specials["eos"]] == "<|endoftext|>"
    assert bpe.tokens[bpe.specials["pad"]] == "<pad>"
    wp = load_vocabulary(trained["wordpiece"])
    assert {r: wp.tokens[i] for r, i in wp.specials.items()} == {
        "bos": "[CLS]", "eos": "[SEP]", "pad": "[PAD]", "unk": "[UNK]"}
    a = align(wp, load_vocabulary(trained["unigram"]))
    assert {r: (a.new.tokens[i], a.old.tokens[j]) for r, (i, j) in a.roles.items()} == {
        "bos": ("<s>", "[CLS]"), "eos": ("</s>", "[SEP]"), "pad": ("<pad>", "[PAD]"),
        "unk": ("<unk>", "[UNK]")}


def test_byte_fallback_kinds(trained):
    v = load_vocabulary(trained["metaspace"])
    assert v.byte_fallback is not None and v.kind_counts["byte"] == 256
    assert [v.token_bytes[i] for i in v.byte_fallback] == [bytes([b]) for b in range(256)]
    r = inspect_report(v)
    assert r["bytes"]["covers_all_bytes"] and r["bytes"]["byte_fallback"]


def test_number_policy_single_digits(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    rng = random.Random(0)
    lines = [" ".join(str(rng.randint(0, 99999)) for _ in range(20)) for _ in range(500)]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    assert inspect_report(load_vocabulary(tmp_path / "tokenizer.json"))["numbers"]["policy"] == "single"


# --- bad inputs ----------------------------------------------------------------------------------

def _cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("tokbench: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_missing_file_is_one_line(tmp_path):
    line = _cli_error(["vocab", "inspect", str(tmp_path / "nope" / "tokenizer.json")])
    assert "tokbench assets import" in line


def test_corrupt_json_is_one_line(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": {"a": 0}', encoding="utf-8")
    line = _cli_error(["vocab", "inspect", str(bad)])
    assert str(bad) in line and "corrupt JSON" in line


def test_not_a_tokenizer_json(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 8}', encoding="utf-8")
    assert "not a tokenizers tokenizer.json" in _cli_error(["vocab", "inspect", str(bad)])


def test_unknown_format_and_bad_rank_file(tmp_path):
    junk = tmp_path / "weird.bin"
    junk.write_bytes(b"\x00\x01garbage")
    assert "unknown tokenizer format" in _cli_error(["vocab", "inspect", str(junk)])
    ranks = tmp_path / "bad.tiktoken"
    ranks.write_text("IQ== 0\nnot-base64!! 1\n", encoding="utf-8")
    assert "not a tiktoken rank file" in _cli_error(["vocab", "inspect", str(ranks)])
    sp = tmp_path / "tokenizer.model"
    sp.write_bytes(b"\n\x05trash-not-protobuf")
    assert "SentencePiece" in _cli_error(["vocab", "inspect", str(sp)])


def test_merge_with_unknown_token(tmp_path, trained):
    j = json.loads(trained["bytelevel"].read_text(encoding="utf-8"))
    j["model"]["merges"].append("zzzq qqqz")
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(j), encoding="utf-8")
    with pytest.raises(TokbenchError, match="missing from the vocabulary"):
        load_vocabulary(bad)


def test_empty_folder(tmp_path):
    assert "no tokenizer file" in _cli_error(["vocab", "inspect", str(tmp_path)])


def test_cli_inspect_and_align_json(trained):
    r = CliRunner().invoke(main, ["vocab", "align", str(trained["wordpiece"]),
                                  str(trained["bytelevel"]), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert set(report) >= {"old", "new", "counts", "roles", "special_tokens", "numbers",
                           "decomposition", "examples", "seconds"}
    r = CliRunner().invoke(main, ["vocab", "inspect", str(trained["unigram"]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["family"] == "unigram"
