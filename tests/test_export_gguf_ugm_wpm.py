"""GGUF export of Unigram (XLM-R; a bare Unigram tokenizer.model) and WordPiece (BERT) tokenizers: every token, score
and type read back with gguf's GGUFReader equals the tokenizer file's, the special ids and add-special flags follow
the post-processor, tensors are unchanged; WordPiece's '##' convention converted to llama.cpp's phantom-space spelling
(checked by looking BERT's own words up in the GGUF vocabulary the way llama.cpp's WPM tokenizer does); normalisers and
pre-tokenizers GGUF cannot say are refused in one line and leave nothing behind."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokbench.errors import TokbenchError
from tokbench.export import export_gguf
from tokbench.vocab.model_io import open_model_folder

from test_export_gguf import _asset_dir, _fields, _tiny_on

SPACE = "\u2581"


def _raw_embedding(folder: Path) -> np.ndarray:
    m = open_model_folder(folder)
    header, base = m.headers[m.files[m.embed_name]]
    info = header[m.embed_name]
    s, e = info["data_offsets"]
    return np.fromfile(m.files[m.embed_name], dtype=np.uint16, count=(e - s) // 2, offset=base + s)


def _same_tensors(folder: Path, tensors: dict) -> None:
    m = open_model_folder(folder)
    assert len(tensors) == len(m.files)  # tied: the head is token_embd
    assert np.asarray(tensors["token_embd.weight"].data).tobytes() == _raw_embedding(folder).tobytes()


@pytest.fixture(scope="module")
def xlmr_gguf(tmp_path_factory, require_asset):
    """A 1-layer llama on the real XLM-R tokenizer (250,002 ids), exported once and read back once (the reader takes
    most of the time: it maps 750k array elements)."""
    src = _asset_dir(require_asset("xlm-r"))
    root = tmp_path_factory.mktemp("xlmr")
    folder = _tiny_on(src, root / "m")
    out = root / "g" / "xlmr.gguf"
    out.parent.mkdir()
    summary = export_gguf(folder, out, progress=False)
    kv, tensors = _fields(out)
    return src, folder, out, summary, kv, tensors


def test_unigram_xlmr_round_trip(xlmr_gguf):
    src, folder, out, r, kv, tensors = xlmr_gguf
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    pieces = tj["model"]["vocab"]
    assert kv["tokenizer.ggml.model"] == "t5" == r["tokenizer_model"] and kv["tokenizer.ggml.pre"] == "default"
    assert kv["tokenizer.ggml.tokens"] == [p[0] for p in pieces] and len(pieces) == 250_002
    # the Unigram log-probabilities, every id (GGUF stores float32)
    assert np.array_equal(np.asarray(kv["tokenizer.ggml.scores"], dtype=np.float32),
                          np.asarray([p[1] for p in pieces], dtype=np.float32))
    types = kv["tokenizer.ggml.token_type"]
    added = {a["id"]: a for a in tj["added_tokens"]}
    assert types[3] == 2 and tj["model"]["unk_id"] == 3  # <unk>: UNKNOWN
    assert [i for i, t in enumerate(types) if t == 3] == [0, 1, 2, 250001]  # <s> <pad> </s> <mask>: CONTROL
    assert sorted(added) == [0, 1, 2, 3, 250001] and types.count(1) == 250_002 - 5
    charsmap = base64.b64decode(tj["normalizer"]["normalizers"][0]["precompiled_charsmap"])
    assert bytes(kv["tokenizer.ggml.precompiled_charsmap"]) == charsmap and len(charsmap) > 200_000
    assert kv["tokenizer.ggml.add_space_prefix"] is True  # Metaspace add_prefix_space
    assert kv["tokenizer.ggml.remove_extra_whitespaces"] is True  # Replace(" {2,}", " ")
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"], kv["tokenizer.ggml.padding_token_id"],
            kv["tokenizer.ggml.unknown_token_id"], kv["tokenizer.ggml.seperator_token_id"],
            kv["tokenizer.ggml.mask_token_id"]) == (0, 2, 1, 3, 2, 250001)
    # <s> A </s>, pair <s> A </s></s> B </s>: bos, eos, and a separator beyond the eos
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is True
    assert kv["tokenizer.ggml.add_sep_token"] is True
    assert "tokenizer.ggml.merges" not in kv
    assert r["warnings"] == []
    _same_tensors(folder, tensors)


def test_unigram_model_file(tmp_path, require_asset):
    # a bare Unigram SentencePiece tokenizer.model (trained here on real text, with byte fallback): pieces, scores,
    # types, charsmap and whitespace flags exactly as the protobuf holds them
    import sentencepiece as spm

    from tokbench.vocab.sentencepiece_model import parse_model_proto

    corpus = require_asset("tinyshakespeare")
    src = tmp_path / "spm"
    src.mkdir()
    lines = corpus.read_text(encoding="utf-8").splitlines()[:4000]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(src / "tokenizer"),
                                   model_type="unigram", vocab_size=600, byte_fallback=True, num_threads=1,
                                   minloglevel=2)
    folder = _tiny_on(src, tmp_path / "m")
    assert not (folder / "tokenizer.json").exists()
    out = tmp_path / "u.gguf"
    r = export_gguf(folder, out, progress=False)
    kv, tensors = _fields(out)
    proto = parse_model_proto(folder / "tokenizer.model")
    assert r["tokenizer_model"] == "t5" and proto.trainer_spec.model_type == 1
    assert len(r["warnings"]) == 1 and "no byte fallback" in r["warnings"][0]  # llama.cpp's UGM: unk instead
    assert kv["tokenizer.ggml.tokens"] == [p.piece for p in proto.pieces]
    assert kv["tokenizer.ggml.token_type"] == [int(p.type) for p in proto.pieces]
    assert kv["tokenizer.ggml.token_type"].count(6) == 256  # <0xXX>: BYTE
    assert np.array_equal(np.float32(kv["tokenizer.ggml.scores"]), np.float32([p.score for p in proto.pieces]))
    assert bytes(kv["tokenizer.ggml.precompiled_charsmap"]) == proto.normalizer_spec.precompiled_charsmap
    assert kv["tokenizer.ggml.add_space_prefix"] is True and kv["tokenizer.ggml.remove_extra_whitespaces"] is True
    # SentencePiece itself adds no bos / eos (llama.cpp's t5 default would add eos: the flags are written)
    assert kv["tokenizer.ggml.add_bos_token"] is False and kv["tokenizer.ggml.add_eos_token"] is False
    assert kv["tokenizer.ggml.unknown_token_id"] == 0 and kv["tokenizer.ggml.eos_token_id"] == 2
    _same_tensors(folder, tensors)


def _phantom_expected(tj: dict) -> tuple[list[str], list[int]]:
    vocab = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(len(vocab)):
        t = vocab[i]
        if i in added:
            tokens.append(t)
            types.append(2 if t == tj["model"]["unk_token"] else 3)
        elif t.startswith("[unused"):
            tokens.append(t)
            types.append(5)
        else:
            tokens.append(t[2:] if t.startswith("##") else SPACE + t)
            types.append(1)
    return tokens, types


def _wpm_lookup(word: str, index: dict[str, int], longest: int, unk: int) -> list[int]:
    """Greedy longest match over '\u2581' + word, whole word to unk when a position matches nothing (the lookup
    llama.cpp's WPM tokenizer documents; here only to check that the file's spellings support it)."""
    w = SPACE + word
    out, i = [], 0
    while i < len(w):
        for j in range(min(len(w), i + longest), i, -1):
            if w[i:j] in index:
                out.append(index[w[i:j]])
                i = j
                break
        else:
            return [unk]
    return out


def test_wordpiece_bert_round_trip(tmp_path, require_asset):
    from tokenizers import Tokenizer

    from tokbench.eval import load_eval_text

    src = _asset_dir(require_asset("bert"))
    folder = _tiny_on(src, tmp_path / "m")
    out = tmp_path / "b.gguf"
    r = export_gguf(folder, out, progress=False)
    kv, tensors = _fields(out)
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tokens, types = _phantom_expected(tj)
    assert kv["tokenizer.ggml.model"] == "bert" == r["tokenizer_model"]
    assert kv["tokenizer.ggml.tokens"] == tokens and kv["tokenizer.ggml.token_type"] == types
    assert tokens[1996] == SPACE + "the" and tokens[2075] == "ing" and tokens[101] == "[CLS]"  # the, ##ing, [CLS]
    assert "tokenizer.ggml.scores" not in kv and "tokenizer.ggml.merges" not in kv
    # bos = [CLS], eos = sep = [SEP]
    roles = ("bos_token_id", "eos_token_id", "seperator_token_id", "unknown_token_id", "padding_token_id",
             "mask_token_id")
    assert tuple(kv[f"tokenizer.ggml.{r}"] for r in roles) == (101, 102, 102, 100, 0, 103)
    # [CLS] A [SEP], pair [CLS] A [SEP] B [SEP]: bos and eos, no separator beyond the eos
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is True
    assert kv["tokenizer.ggml.add_sep_token"] is False
    assert kv["tokenizer.ggml.normalizer.lowercase"] is True  # uncased; strip_accents null follows lowercase
    assert kv["tokenizer.ggml.normalizer.strip_accents"] is True
    _same_tensors(folder, tensors)
    # the phantom spelling gives BERT's own ids: the words of real lines (BERT's normaliser and pre-tokenizer),
    # looked up in the file's vocabulary as llama.cpp's WPM tokenizer does
    hf = Tokenizer.from_file(str(src / "tokenizer.json"))
    hf.no_padding()
    hf.no_truncation()
    index = {t: i for i, (t, ty) in enumerate(zip(kv["tokenizer.ggml.tokens"], types)) if ty == 1}
    longest = max(len(t) for t in index)
    text, _ = load_eval_text("wikitext2-test", 160_000)
    lines = [ln for ln in text.splitlines() if ln.strip()][:300]
    assert len(lines) == 300
    words = 0
    for line in lines:
        want = hf.encode(line, add_special_tokens=False).ids
        got = []
        for word, _ in hf.pre_tokenizer.pre_tokenize_str(hf.normalizer.normalize_str(line)):
            got += _wpm_lookup(word, index, longest, 100)
            words += 1
        assert got == want, line[:60]
    assert words > 10_000


def _with_tokenizer(folder: Path, tj: dict, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    (dest / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    return dest


def test_refusals_and_nothing_written(tmp_path, require_asset):
    src = _asset_dir(require_asset("bert"))
    folder = _tiny_on(src, tmp_path / "m")
    bert = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    xlmr = json.loads((_asset_dir(require_asset("xlm-r")) / "tokenizer.json").read_text(encoding="utf-8"))
    cases = [
        (xlmr | {"normalizer": {"type": "Sequence", "normalizers": [xlmr["normalizer"]["normalizers"][0],
                                                                   {"type": "Lowercase"}]}},
         r"t5 tokenizer has no equivalent of the tokenizer.json normalizer \{\"type\": \"Lowercase\"\}"),
        (xlmr | {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, xlmr["pre_tokenizer"]]}}, "pre-tokenizer .*Digits"),
        (bert | {"model": bert["model"] | {"continuing_subword_prefix": "@@"}}, "continuing_subword_prefix"),
        (bert | {"normalizer": bert["normalizer"] | {"clean_text": False}}, "bert tokenizer .*BertNormalizer"),
        (bert | {"pre_tokenizer": {"type": "Whitespace"}}, "pre-tokenizer .*Whitespace"),
        # a user-defined added token "ing" beside the continuation "##ing": both "ing" in llama.cpp's spelling
        (bert | {"model": bert["model"] | {"vocab": {("ing" if t == "[unused0]" else t): i
                                                     for t, i in bert["model"]["vocab"].items()}},
                 "added_tokens": bert["added_tokens"] + [{"id": 1, "content": "ing", "single_word": False,
                                                          "lstrip": False, "rstrip": False, "normalized": True,
                                                          "special": False}]}, "spelled alike"),
    ]
    for n, (tj, match) in enumerate(cases):
        bad = _with_tokenizer(folder, tj, tmp_path / f"bad{n}")
        out = tmp_path / "o" / f"{n}.gguf"
        out.parent.mkdir(exist_ok=True)
        with pytest.raises(TokbenchError, match=match) as e:
            export_gguf(bad, out, progress=False)
        assert "\n" not in str(e.value) and "tokenizer.json" in str(e.value)
        assert list(out.parent.iterdir()) == []
