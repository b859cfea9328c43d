"""tokbench.bpe.train: exports load in tokenizers/transformers with identical ids, merges equal a
pure-Python reference trainer, map+reduce counting, counts files, options and errors."""
from __future__ import annotations

import importlib
import json
import random
import warnings

import pytest

from tokbench import _core
from tokbench.assets import iter_documents
from tokbench.bpe import BPE
from tokbench.errors import TokbenchError

tb = importlib.import_module("tokbench.bpe.train")  # the module; tokbench.bpe.train is the function
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["the", "cat", "sat", "on", "mat", "hello", "world", "héllo", "naïve", "日本語", "код", "42", "1999",
         "don't", "it's", "(x)", "->", "::", "  ", "\n", "\t", "🙂", "foo_bar", "x=1;"]


def synthetic(n_docs=300, seed=0) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n_docs):
        k = rnd.randint(3, 40)
        out.append(" ".join(rnd.choice(WORDS) for _ in range(k)) + rnd.choice(["\n", "\n\n", " ", ""]))
    return out


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("".join(synthetic()), encoding="utf-8")
    return p


def _items(counter) -> list[tuple[bytes, int]]:
    return list(counter.items())


# ---- a pure-Python reference trainer (same rules as the Rust one) ---------------------------
def reference_train(counts: dict[bytes, int], target: int, min_frequency: int, max_len: int | None):
    vocab = [bytes([b]) for b in range(256)]
    index = {t: i for i, t in enumerate(vocab)}
    words = [[list(w), c] for w, c in sorted(counts.items()) if len(w) > 1]
    merges = []
    while len(vocab) < target:
        pairs: dict[tuple[int, int], int] = {}
        for w, c in words:
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + c
        cands = [(p, c) for p, c in pairs.items()
                 if max_len is None or len(vocab[p[0]]) + len(vocab[p[1]]) <= max_len]
        if not cands:
            break
        # highest count, then smallest (left bytes, right bytes)
        (a, b), c = min(cands, key=lambda pc: (-pc[1], vocab[pc[0][0]], vocab[pc[0][1]]))
        if c < min_frequency:
            break
        new = vocab[a] + vocab[b]
        if new not in index:
            index[new] = len(vocab)
            vocab.append(new)
        nid = index[new]
        merges.append((vocab[a], vocab[b]))
        for wc in words:
            w, out, i = wc[0], [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(nid)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            wc[0] = out
    return vocab, merges


def _merge_bytes(trained):
    return [(trained.tokens[a], trained.tokens[b]) for a, b in trained.merges]


@pytest.mark.parametrize("min_frequency,max_len", [(2, None), (1, None), (3, 4)])
def test_merges_equal_reference(corpus_file, min_frequency, max_len):
    trained = tb.train([corpus_file], 256 + 250, min_frequency=min_frequency, max_token_length=max_len,
                       progress=False)
    counter = tb.new_counter("gpt2")
    tb.count_texts([corpus_file.read_text(encoding="utf-8")], counter)
    vocab, merges = reference_train(dict(counter.items()), 256 + 250, min_frequency, max_len)
    assert _merge_bytes(trained) == merges
    assert trained.tokens == vocab
    assert all(c >= min_frequency for c in trained.merge_counts)
    assert trained.merge_counts == sorted(trained.merge_counts, reverse=True)
    if max_len:
        assert max(len(t) for t in trained.tokens) <= max_len


def test_min_frequency_stops_early(corpus_file):
    trained = tb.train([corpus_file], 5000, min_frequency=50, progress=False)
    assert len(trained.tokens) < 5000 and min(trained.merge_counts) >= 50


def _check_exports(trained, tmp_path, texts):
    path = trained.save(tmp_path)
    assert path.name == "tokenizer.json" and not list(tmp_path.glob(".*.tmp"))
    hf = tokenizers.Tokenizer.from_file(str(path))
    ours = BPE.from_file(path)
    direct = trained.encoder()
    for t in texts:
        ids = hf.encode(t, add_special_tokens=False).ids
        assert ours.encode_ordinary(t) == ids
        assert direct.encode_ordinary(t) == ids
        assert hf.decode(ids) == t
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for t in texts[:20]:
        assert fast(t, add_special_tokens=False)["input_ids"] == hf.encode(t).ids
    return hf


def test_exports_synthetic(corpus_file, tmp_path):
    trained = tb.train([corpus_file], 340, special_tokens=["<|endoftext|>", "<pad>"], progress=False)
    held = synthetic(60, seed=1) + ["", " ", "  x  ", "\n\n\n", "🙂🙂 日本語!!", "a" * 300]
    out = tmp_path / "out"
    out.mkdir()
    hf = _check_exports(trained, out, held)
    n = len(trained.tokens)
    assert trained.special_tokens == {"<|endoftext|>": n, "<pad>": n + 1}
    assert hf.get_vocab_size() == trained.vocab_size == 340
    assert hf.encode("the cat<|endoftext|>sat").ids.count(n) == 1
    assert BPE.from_file(out / "tokenizer.json").encode("a<pad>", allowed_special="all")[-1] == n + 1


def test_exports_real_slice(require_asset, tmp_path):
    wt = require_asset("wikitext2-test")
    code = require_asset("code-python")
    train_text = next(iter(iter_documents(wt, limit_bytes=300_000)))
    sample = tmp_path / "sample.txt"
    sample.write_text(train_text, encoding="utf-8")
    trained = tb.train([sample, code], 2000, special_tokens=["<|endoftext|>"], num_threads=2, progress=False)
    held = next(iter(iter_documents(require_asset("wikitext2-valid"), limit_bytes=100_000))).splitlines(True)
    held += list(iter_documents(code, limit_bytes=50_000))
    out = tmp_path / "out"
    out.mkdir()
    _check_exports(trained, out, held[:400])


PAR_MIN_WORDS = 4096  # rust_ext/src/bpe/train.rs: a merge step over at least this many words a thread runs in parallel


def test_merges_equal_at_1_and_2_threads(require_asset):
    """The parallel merge step (words cut into runs, outputs added in word order) gives the one-thread
    merges on real text, and the test text is large enough that the early steps do run in parallel."""
    names = ["tatoeba", "udhr"]  # 8.4 MB in 100+ languages: 369K distinct pre-tokens
    counter = tb.new_counter("gpt2", ["<|endoftext|>"])
    tb.count_inputs([require_asset(n) for n in names], counter, num_threads=2, progress=False)
    runs = [tb.train_counts(counter, 1000, pattern="gpt2", special_tokens=["<|endoftext|>"], progress=False,
                            num_threads=t) for t in (1, 2)]
    assert len(runs[0].merges) == 1000 - 257
    assert _merge_bytes(runs[1]) == _merge_bytes(runs[0])
    assert runs[1].merge_counts == runs[0].merge_counts and runs[1].tokens == runs[0].tokens
    # words holding the bytes of one of the first merges (an upper bound of the words that step visits
    # only for longer tokens; the first merges are of two bytes, exact): one step at least ran on 2 threads
    words = [w for w, _ in counter.items()]
    firsts = [runs[0].tokens[a] + runs[0].tokens[b] for a, b in runs[0].merges[:8]]
    assert max(sum(f in w for w in words) for f in firsts) >= 2 * PAR_MIN_WORDS


def _reference_blocks(path, block_bytes):
    """The text-file blocks by the rule, one line at a time (bad lines skipped, not counted)."""
    block, size, bad = [], 0, 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
                continue
            if size >= block_bytes and line[:1] and not line[:1].isspace():
                yield "".join(block)
                block, size = [], 0
            block.append(line)
            size += len(raw)
    if block:
        yield "".join(block)


def test_text_blocks_equal_the_line_rule(require_asset, tmp_path, monkeypatch):
    """The chunked block reader cuts where the line-by-line rule does, at any block and read size: CRLF
    books, 100+ languages, lines that are not UTF-8 next to cuts, Unicode spaces at line starts, lines
    longer than a block, no final line end."""
    rnd = random.Random(5)
    lines = [b"plain line\n", b"  indented\n", b"\n", b"\r\n", b"\xe3\x80\x80ideographic space\n",
             b"\xc2\xa0nbsp\n", b"\x1cfile separator\n", b"\xff\xfe not utf-8\n", b"\xc3 cut\n",
             "日本語の行\n".encode(), b"x" * 300 + b"\n", b"\tTab\n", b"\xe2\x80\x83em space\n"]
    synth = tmp_path / "synthetic.txt"
    synth.write_bytes(b"".join(rnd.choice(lines) for _ in range(3000)) + b"no final newline")
    files = [synth, *sorted(require_asset("gutenberg").glob("*.txt"))[:2],
             *sorted(require_asset("tatoeba").iterdir())[:3]]
    for block, read in [(1 << 20, 4 << 20), (64, 100), (1000, 333), (5000, 1 << 16)]:
        monkeypatch.setattr(tb, "_BLOCK_BYTES", block)
        monkeypatch.setattr(tb, "_READ_BYTES", read)
        for f in files:
            stats = tb.CountStats()
            assert list(tb._iter_txt(f, stats)) == list(_reference_blocks(f, block)), (f, block, read)
            if f == synth:
                assert stats.non_utf8_lines > 0


def test_counts_do_not_depend_on_batching(require_asset, monkeypatch):
    """Files are read in fixed blocks; how many blocks a batch holds (the shard size, the thread count) does
    not change a count (Gutenberg has CRLF line ends and runs of blank lines, where block cuts would show)."""
    inputs = [require_asset("gutenberg"), require_asset("code-rust")]
    base = tb.new_counter("gpt2")
    tb.count_inputs(inputs, base, num_threads=2, progress=False)
    monkeypatch.setattr(tb, "_SHARD_BYTES", 1 << 14)
    for threads in (1, 3):
        other = tb.new_counter("gpt2")
        tb.count_inputs(inputs, other, num_threads=threads, progress=False)
        assert _items(other) == _items(base)


def test_map_reduce_equals_single_pass():
    texts = synthetic(400, seed=3)
    one = tb.new_counter("gpt2", ["<s>"])
    one.count(texts, 1, 1 << 30)
    left, right = tb.new_counter("gpt2", ["<s>"]), tb.new_counter("gpt2", ["<s>"])
    left.count(texts[:150], 2, 500)
    right.count(texts[150:], 2, 700)
    left.merge(right)
    assert _items(left) == _items(one)
    streamed = tb.count_texts(iter(texts), tb.new_counter("gpt2", ["<s>"]), num_threads=2)
    assert _items(streamed) == _items(one)
    assert one.total() == sum(c for _, c in one.items())


def test_specials_are_not_counted():
    c = tb.new_counter("gpt2", ["<|endoftext|>"])
    c.count(["a<|endoftext|>b <|endoftext|>"])
    assert dict(c.items()) == {b"a": 1, b"b": 1, b" ": 1}


def test_counts_round_trip(corpus_file, tmp_path):
    c = tb.new_counter("gpt2")
    tb.count_texts([corpus_file.read_text(encoding="utf-8")], c)
    path = tmp_path / "counts.txt"
    tb.save_counts(c, path, "gpt2")
    back = tb.load_counts(path, tb.new_counter("gpt2"))
    assert _items(back) == _items(c)
    a = tb.train_counts(back, 600, pattern=None, progress=False)
    b = tb.train([corpus_file], 600, progress=False)
    assert a.merges == b.merges
    tb.load_counts(path, back)  # loading twice sums (reduce)
    assert dict(back.items()) == {k: 2 * v for k, v in c.items()}


def test_non_utf8_reported(tmp_path):
    p = tmp_path / "mixed.txt"
    p.write_bytes(b"hello world\nbad \xff\xfe line\nhello there\n")
    j = tmp_path / "mixed.jsonl"
    j.write_bytes(b'{"text": "hello json"}\n{"text": "\xff"}\n')
    with pytest.warns(tb.NonUtf8Warning, match="2 non-UTF-8 lines"):
        trained = tb.train([p, j], 300, min_frequency=1, progress=False)
    assert trained.stats.non_utf8_lines == 2 and trained.stats.non_utf8_files == {str(p): 1, str(j): 1}


def test_non_utf8_in_a_tatoeba_folder_is_a_warning(tmp_path):
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    (folder / "tatoeba.abc-eng.abc").write_bytes(b"good line one\nbad \xc3\x28 line\ngood line two\n")
    (folder / "tatoeba.abc-eng.eng").write_bytes(b"english one\nenglish two\nenglish three\n")
    (folder / "tatoeba.xyz-eng.xyz").write_bytes(b"\xff\xfe\n")
    (folder / "tatoeba.xyz-eng.eng").write_bytes(b"english\n")
    with pytest.warns(tb.NonUtf8Warning, match=r"2 non-UTF-8 lines \(15 bytes\).*tatoeba\.abc-eng\.abc \(1\)"):
        trained = tb.train([folder], 300, min_frequency=1, progress=False)
    assert trained.stats.non_utf8_files == {str(folder / "tatoeba.abc-eng.abc"): 1,
                                            str(folder / "tatoeba.xyz-eng.xyz"): 1}
    c = tb.count_texts(tb.iter_texts([folder]), tb.new_counter("gpt2"))
    assert dict(c.items())[b" line"] == 2 and b"english" not in dict(c.items())  # the other side only


def test_cli_non_utf8_warning_names_the_file(tmp_path):
    from click.testing import CliRunner

    from tokbench.cli import main as cli

    p = tmp_path / "mixed.txt"
    p.write_bytes(b"hello world\nbad \xff line\n" + b"hello there\n" * 20)
    r = CliRunner().invoke(cli, ["train", str(p), "--vocab-size", "300", "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    assert f"warning: 1 non-UTF-8 lines (11 bytes) not counted, in {p}" in r.output


def test_load_counts_checks_the_pattern(corpus_file, tmp_path):
    c = tb.new_counter("gpt2")
    tb.count_texts([corpus_file.read_text(encoding="utf-8")], c)
    path = tmp_path / "counts.txt"
    tb.save_counts(c, path, "gpt2")
    assert path.read_text(encoding="utf-8").splitlines()[0] == \
        f"# tokbench-bpe-counts v1 pattern={json.dumps(c.pattern)}"
    assert len(tb.load_counts(path, tb.new_counter("gpt2"))) == len(c)
    with pytest.raises(TokbenchError, match="made with split pattern gpt2, not the requested llama3.*--pattern gpt2") as e:
        tb.load_counts(path, tb.new_counter("llama3"))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TokbenchError, match="pattern gpt2, not the requested none.*--pattern gpt2"):
        tb.load_counts(path, tb.new_counter("none"))
    # older files recorded the pattern's name: it is resolved before the comparison
    old = tmp_path / "old.txt"
    old.write_text(path.read_text(encoding="utf-8").replace(json.dumps(c.pattern), '"gpt2"', 1), encoding="utf-8")
    assert len(tb.load_counts(old, tb.new_counter("gpt2"))) == len(c)
    headless = tmp_path / "headless.txt"
    headless.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[1:]), encoding="utf-8")
    with pytest.raises(TokbenchError, match="no counts header"):
        tb.load_counts(headless, tb.new_counter("gpt2"))
    with pytest.raises(TokbenchError, match="not the one these counts were made with"):
        tb.save_counts(c, tmp_path / "x.txt", "llama3")


def test_cli_load_counts_with_another_pattern(corpus_file, tmp_path):
    from click.testing import CliRunner

    from tokbench.cli import main as cli

    counts = tmp_path / "c.txt"
    r = CliRunner().invoke(cli, ["train", str(corpus_file), "--vocab-size", "300", "--pattern", "llama3",
                                 "--save-counts", str(counts), "-o", str(tmp_path / "o1"), "-q"])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(cli, ["train", "--load-counts", str(counts), "--vocab-size", "300",
                                  "-o", str(tmp_path / "o2"), "-q"])
    assert r2.exit_code == 2 and not (tmp_path / "o2").exists()
    msg = r2.output.strip()
    assert "\n" not in msg and "Traceback" not in msg and str(counts) in msg
    assert "split pattern llama3, not the requested gpt2" in msg and "--pattern llama3" in msg


def test_empty_corpus_error(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("")
    with pytest.raises(TokbenchError, match="empty") as e:
        tb.train([p], 300, progress=False)
    assert "\n" not in str(e.value)


def test_bad_vocab_size(corpus_file):
    with pytest.raises(TokbenchError, match="vocab size"):
        tb.train([corpus_file], 256, special_tokens=["<s>"], progress=False)


def test_jsonl_text_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"q": t, "other": "zzzz zzzz"}) for t in synthetic(50)), encoding="utf-8")
    trained = tb.train([p], 400, text_field="q", progress=False)
    assert not any(b"zz" in t for t in trained.tokens)


def test_cancel_leaves_no_result(corpus_file):
    c = tb.new_counter("gpt2")
    tb.count_texts([corpus_file.read_text(encoding="utf-8")], c)
    prog = _core.TrainProgress()
    prog.cancel()
    with pytest.raises(ValueError, match="interrupted"):
        _core.bpe_train(c, 600, 2, None, prog)


def test_tiktoken_export(corpus_file, tmp_path):
    trained = tb.train([corpus_file], 600, progress=False)
    path = trained.save_tiktoken(tmp_path / "t.tiktoken")
    enc = BPE.from_file(path, pattern="gpt2", special_tokens={})
    assert enc.n_vocab == len(trained.tokens)
    for t in synthetic(30, seed=5):
        assert enc.decode(enc.encode_ordinary(t)) == t


def test_cli(corpus_file, tmp_path):
    from click.testing import CliRunner

    from tokbench.cli import main as cli

    out = tmp_path / "out"
    counts = tmp_path / "c.txt"
    r = CliRunner().invoke(cli, ["train", str(corpus_file), "--vocab-size", "500", "--special", "<s>",
                                 "--tiktoken", "--save-counts", str(counts), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer.tiktoken").is_file()
    r2 = CliRunner().invoke(cli, ["train", "--load-counts", str(counts), "--vocab-size", "500", "--special",
                                  "<s>", "-o", str(tmp_path / "out2"), "-q"])
    assert r2.exit_code == 0, r2.output
    assert (tmp_path / "out2" / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    empty = tmp_path / "e.txt"
    empty.write_text("")
    r3 = CliRunner().invoke(cli, ["train", str(empty), "--vocab-size", "500", "-o", str(tmp_path / "o3"), "-q"])
    assert r3.exit_code == 2 and "empty" in r3.output and not (tmp_path / "o3").exists()
