"""tokbench.bpe.modes: supertoken BPE (stage 2 equals a pure-Python reference, exports load in
tokenizers/transformers with identical ids, round trip, linear-time encoding of whole-line
pre-tokens) and compression-aware BPE (equals a reference that recomputes the objective from
scratch, differs from classic BPE where the objective says so), options and errors."""
from __future__ import annotations

import importlib
import math
import random
import time

import pytest

from tokbench import _core
from tokbench.bpe import BPE
from tokbench.bpe import modes
from tokbench.errors import TokbenchError

tb = importlib.import_module("tokbench.bpe.train")
tokenizers = pytest.importorskip("tokenizers")

PHRASES = ["of the", "in the", "to be or not to be", "the cat sat on the mat", "don't stop", "x = 3.14;",
           "hello, world!", "it's a", "for i in range(10):", "naïve café", "日本語 の 本", "(a, b)",
           "  indented  line", "the end."]


def synthetic(n_docs=250, seed=0) -> list[str]:
    rnd = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        lines = []
        for _ in range(rnd.randint(1, 4)):
            lines.append(" ".join(rnd.choice(PHRASES) for _ in range(rnd.randint(1, 6))))
        docs.append("\n".join(lines) + rnd.choice(["\n", "\n\n", ""]))
    return docs


# ---- pure-Python references ----------------------------------------------------------------
def n_words(b: bytes) -> int:
    """Maximal runs of non-whitespace bytes (ASCII whitespace)."""
    return len(b.split())


def ref_encode(piece: bytes, ranks: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Priority BPE: merge the adjacent pair of lowest merge index, leftmost first."""
    ids = list(piece)
    while len(ids) > 1:
        best = None
        for i in range(len(ids) - 1):
            r = ranks.get((ids[i], ids[i + 1]))
            if r is not None and (best is None or r[0] < best[0]):
                best = (r[0], i, r[1])
        if best is None:
            break
        _, i, new = best
        ids[i:i + 2] = [new]
    return ids


def merge_ranks(vocab: list[bytes], merges: list[tuple[int, int]]) -> dict:
    index = {}
    for i, t in enumerate(vocab):
        index.setdefault(t, i)
    return {(a, b): (k, index[vocab[a] + vocab[b]]) for k, (a, b) in enumerate(merges)}


def code_length(words) -> float:
    """N log2 N - sum n_x log2 n_x over the token stream of words [(ids, count)]."""
    uni: dict[int, int] = {}
    for w, c in words:
        for x in w:
            uni[x] = uni.get(x, 0) + c
    n = sum(uni.values())
    return n * math.log2(n) - sum(v * math.log2(v) for v in uni.values() if v)


def apply_merge(words, a, b, new):
    out = []
    for w, c in words:
        r, i = [], 0
        while i < len(w):
            if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                r.append(new)
                i += 2
            else:
                r.append(w[i])
                i += 1
        out.append((r, c))
    return out


def ref_loop(vocab: list[bytes], words, target: int, min_frequency: int, *, max_words=None, candidates=1):
    """The merge loop from any start: most frequent pair (ties: smallest bytes), or with
    candidates > 1 the shortlisted pair whose merge gives the smallest code length, recomputed
    from scratch by applying each candidate."""
    vocab = list(vocab)
    index = {}
    for i, t in enumerate(vocab):
        index.setdefault(t, i)
    words = [(list(w), c) for w, c in words]
    merges = []
    while len(vocab) < target:
        pairs: dict[tuple[int, int], int] = {}
        for w, c in words:
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + c
        cands = [(p, c) for p, c in pairs.items() if c >= min_frequency
                 and (max_words is None or n_words(vocab[p[0]] + vocab[p[1]]) <= max_words)]
        if not cands:
            break
        cands.sort(key=lambda pc: (-pc[1], vocab[pc[0][0]], vocab[pc[0][1]]))
        short = cands[:candidates]
        pick = short[0]
        if len(short) > 1:
            best = None
            for p, c in short:
                new = index.get(vocab[p[0]] + vocab[p[1]], len(vocab))
                size = code_length(apply_merge(words, p[0], p[1], new))
                if best is None or size < best - 1e-6:
                    best, pick = size, (p, c)
        (a, b), _ = pick
        nb = vocab[a] + vocab[b]
        if nb not in index:
            index[nb] = len(vocab)
            vocab.append(nb)
        merges.append((a, b))
        words = apply_merge(words, a, b, index[nb])
    return vocab, merges, words


def ref_super(word_counts: dict[bytes, int], run_counts: dict[bytes, int], transition: int, target: int,
              min_frequency: int, max_words: int):
    base = [bytes([b]) for b in range(256)]
    v1, m1, _ = ref_loop(base, [(list(w), c) for w, c in sorted(word_counts.items())], transition, min_frequency)
    ranks = merge_ranks(v1, m1)
    runs = [(ref_encode(r, ranks), c) for r, c in sorted(run_counts.items())]
    v2, m2, words = ref_loop(v1, runs, target, min_frequency, max_words=max_words)
    return v2, m1 + m2, len(m1), words


def _counters(texts, run_pattern="super-punct"):
    words, runs = tb.new_counter("gpt2"), modes.new_run_counter(run_pattern)
    tb.count_texts(texts, words, also=[runs])
    return words, runs


# ---- supertoken BPE ------------------------------------------------------------------------
@pytest.mark.parametrize("run_pattern,max_words,min_frequency", [("super-punct", 4, 2), ("super-lines", 2, 1),
                                                                 ("super-punct", 1, 3)])
def test_super_equals_reference(run_pattern, max_words, min_frequency):
    texts = synthetic()
    words, runs = _counters(texts, run_pattern)
    trained = modes.train_super_counts(words, runs, 640, 320, run_pattern=run_pattern, max_words=max_words,
                                       min_frequency=min_frequency, progress=False)
    vocab, merges, n1, final_words = ref_super(dict(words.items()), dict(runs.items()), 320, 640,
                                               min_frequency, max_words)
    assert trained.meta["stage1_merges"] == n1 == 320 - 256
    assert trained.tokens == vocab
    assert trained.merges == merges
    assert all(n_words(t) <= max_words for t in trained.tokens)
    multi = [t for t in trained.tokens[320:] if n_words(t) >= 2]
    assert bool(multi) == (max_words >= 2)
    assert all(b"\n" not in t or not t.strip() for t in trained.tokens[256:])  # newlines only in whitespace
    # the encoder segments every training run as the trainer left it
    enc = trained.encoder()
    for (run, _), (w, _) in zip(sorted(runs.items()), final_words):
        assert enc.encode_ordinary(run.decode("utf-8")) == w


def test_super_punct_bounds():
    trained = modes.train_super(_write(synthetic()), 700, 350, max_words=4, progress=False)
    assert trained.pattern == modes.RUN_PATTERNS["super-punct"]
    for t in trained.tokens[350:]:
        s = t.decode("utf-8", errors="replace")
        # punctuation only as a single character between letters/digits, or a run of its own
        assert not any(p in s for p in (", ", "! ", "; ", "!\n")) or n_words(t) <= 1
    assert b" the cat sat" in trained.tokens or b" cat sat on" in trained.tokens


def _write(texts, tmp=None):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="tb-super-"))
    p = d / "corpus.txt"
    p.write_text("".join(texts), encoding="utf-8")
    return p


def _check_same_ids(trained, tmp_path, texts):
    path = trained.save(tmp_path)
    import json

    pre = json.loads(path.read_text(encoding="utf-8"))["pre_tokenizer"]["pretokenizers"]
    assert [p["type"] for p in pre] == ["Split", "ByteLevel"] and pre[1]["use_regex"] is False
    assert pre[0]["pattern"]["Regex"] == trained.pattern
    hf = tokenizers.Tokenizer.from_file(str(path))
    ours = BPE.from_file(path)
    direct = trained.encoder()
    ranks = merge_ranks(trained.tokens, trained.merges)
    for i, t in enumerate(texts):
        ids = hf.encode(t, add_special_tokens=False).ids
        assert ours.encode(t, allowed_special="all") == ids
        assert direct.encode(t, allowed_special="all") == ids
        assert ours.decode(ids) == t and hf.decode(ids, skip_special_tokens=False) == t
        if i < 40 and not trained.special_tokens:  # the pure-Python priority encoder over our pre-tokens
            ref = [x for piece in ours.pre_tokenize(t) for x in ref_encode(piece.encode("utf-8"), ranks)]
            assert ref == ids
    return path


def test_super_exports_synthetic(tmp_path):
    trained = modes.train_super(_write(synthetic()), 700, 400, special_tokens=["<|endoftext|>"], progress=False)
    held = synthetic(60, seed=7) + ["", " ", "\n\n", "the cat sat on the mat " * 50, "a<|endoftext|>b"]
    path = _check_same_ids(trained, tmp_path, held)
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == trained.vocab_size <= 700 and trained.meta["stage2_merges"] > 0
    assert hf.encode("x<|endoftext|>y").ids.count(trained.special_tokens["<|endoftext|>"]) == 1
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for t in held[:20]:
        assert fast(t, add_special_tokens=False)["input_ids"] == hf.encode(t).ids


def test_super_exports_real_slice(require_asset, tmp_path):
    from tokbench.assets import iter_documents

    train_text = next(iter(iter_documents(require_asset("wikitext2-valid"), limit_bytes=300_000)))
    code = list(iter_documents(require_asset("code-python"), limit_bytes=300_000))
    trained = modes.train_super(_write([train_text] + code), 3000, 1500, num_threads=2, progress=False)
    assert any(n_words(t) >= 3 for t in trained.tokens[1500:])
    held = next(iter(iter_documents(require_asset("wikitext2-test"), limit_bytes=80_000))).splitlines(True)
    held += list(iter_documents(require_asset("code-rust"), limit_bytes=40_000))
    held += list(iter_documents(require_asset("gsm8k-test"), limit_bytes=20_000))
    _check_same_ids(trained, tmp_path, held[:300])


def test_super_long_line_is_linear():
    trained = modes.train_super(_write(synthetic()), 700, 400, progress=False)
    enc = trained.encoder()
    rnd = random.Random(3)
    vocab = ["the", "cat", "sat", "on", "mat", "of", "in", "to", "be", "or", "not", "hello", "world", "naïve"]
    line = " ".join(rnd.choice(vocab) for _ in range(200_000))
    small, big = line[:100_000], line[:1_000_000]
    assert len(enc.pre_tokenize(big)) == 1  # one whole-line pre-token
    times = {}
    for name, s in (("small", small), ("big", big)):
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            ids = enc.encode_ordinary(s)
            best = min(best, time.perf_counter() - t0)
        assert enc.decode(ids) == s
        times[name] = best
    assert times["big"] < 3.0, times
    assert times["big"] / times["small"] < 30, times  # quadratic would be 100


def test_super_round_trip_unicode():
    trained = modes.train_super(_write(synthetic()), 600, 380, run_pattern="super-lines", progress=False)
    enc = trained.encoder()
    for s in ["", "naïve café, 日本語 の 本!!", "\t tabs\tand  spaces \r\n", "🙂🙂 x", "a" * 5000, "don't stop."]:
        assert enc.decode(enc.encode_ordinary(s)) == s


def splitmix64(state: int) -> tuple[int, int]:
    m = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & m
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return state, z ^ (z >> 31)


def fnv1a(b: bytes) -> int:
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & ((1 << 64) - 1)
    return h


def ref_chunks(run_counts: dict[bytes, int], split, max_words: int, seed: int) -> dict[bytes, int]:
    """Every run cut into chunks of 1..max_words pre-tokens, min(c, 8) samplings sharing count c."""
    out: dict[bytes, int] = {}
    for run, c in run_counts.items():
        pieces = [p.encode("utf-8") for p in split(run.decode("utf-8"))]
        r = min(c, 8)
        state = fnv1a(run) ^ seed
        for i in range(r):
            w = c // r + (1 if i < c % r else 0)
            at = 0
            while at < len(pieces):
                state, z = splitmix64(state)
                k = 1 + z % max_words
                chunk = b"".join(pieces[at:at + k])
                out[chunk] = out.get(chunk, 0) + w
                at += k
    return out


def test_chunks_equal_reference(tmp_path):
    texts = synthetic(150, seed=11)
    words, runs = _counters(texts)
    chunks = _core.bpe_chunk_runs(runs, tb.resolve_pattern("gpt2"), 3, 5)
    split = tb.train_counts(words, 300, pattern=tb.resolve_pattern("gpt2"), progress=False).encoder().pre_tokenize
    assert dict(chunks.items()) == ref_chunks(dict(runs.items()), split, 3, 5)
    trained = modes.train_super_counts(words, runs, 600, None, strategy="chunks", max_words=3, seed=5,
                                       progress=False)
    base = [bytes([b]) for b in range(256)]
    vocab, merges, _ = ref_loop(base, [(list(w), c) for w, c in sorted(chunks.items())], 600, 2)
    assert trained.tokens == vocab and trained.merges == merges
    assert trained.meta["strategy"] == "chunks" and trained.pattern == modes.RUN_PATTERNS["super-punct"]
    assert any(n_words(t) == 3 for t in trained.tokens) and all(n_words(t) <= 3 for t in trained.tokens)
    _check_same_ids(trained, tmp_path, synthetic(40, seed=12))


# ---- compression-aware BPE -----------------------------------------------------------------
def test_compress_equals_reference_and_objective():
    texts = synthetic(120, seed=4)
    counter = tb.new_counter("gpt2")
    tb.count_texts(texts, counter)
    trained = modes.train_compress_counts(counter, 256 + 60, candidates=8, min_frequency=2, progress=False)
    base = [bytes([b]) for b in range(256)]
    words = [(list(w), c) for w, c in sorted(counter.items())]
    vocab, merges, _ = ref_loop(base, words, 256 + 60, 2, candidates=8)
    assert trained.tokens == vocab and trained.merges == merges
    classic = tb.train_counts(counter, 256 + 60, pattern=None, progress=False)
    cvocab, cmerges, _ = ref_loop(base, words, 256 + 60, 2)
    assert classic.merges == cmerges
    # candidates=1 is classic BPE
    one = modes.train_compress_counts(counter, 256 + 60, candidates=1, progress=False)
    assert one.merges == classic.merges
    # the first divergence: the compress choice has a strictly smaller code length than classic's
    k = next(i for i, (a, b) in enumerate(zip(trained.merges, classic.merges)) if a != b)
    state = words
    for a, b in trained.merges[:k]:
        state = apply_merge(state, a, b, vocab.index(vocab[a] + vocab[b]))
    n = len(vocab)

    def after(pair, vocab_):
        nb = vocab_[pair[0]] + vocab_[pair[1]]
        new = vocab_.index(nb) if nb in vocab_ else n
        return code_length(apply_merge(state, pair[0], pair[1], new))

    assert after(trained.merges[k], vocab) < after(classic.merges[k], vocab) - 1e-6
    # and over the whole run it ends with a smaller training code length
    final_c = code_length(ref_loop(base, words, 256 + 60, 2, candidates=8)[2])
    final_f = code_length(ref_loop(base, words, 256 + 60, 2)[2])
    assert final_c < final_f


def test_compress_self_overlapping_pairs():
    counter = tb.new_counter(None)
    counter.add_items([(b"aaaaa", 9), (b"aab", 4), (b"ab", 20), (b"ba", 7), (b"aaa", 5)])
    trained = modes.train_compress_counts(counter, 256 + 5, candidates=4, min_frequency=1, progress=False)
    base = [bytes([b]) for b in range(256)]
    vocab, merges, _ = ref_loop(base, [(list(w), c) for w, c in sorted(counter.items())], 256 + 5, 1, candidates=4)
    assert trained.merges == merges and trained.tokens == vocab


def test_compress_exports(tmp_path):
    trained = modes.train_compress(_write(synthetic()), 600, candidates=16, progress=False)
    assert trained.meta["mode"] == "compress"
    path = trained.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    ours = BPE.from_file(path)
    for t in synthetic(30, seed=9):
        assert ours.encode_ordinary(t) == hf.encode(t).ids
        assert ours.decode(ours.encode_ordinary(t)) == t


# ---- errors and CLI ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [({"transition": 700}, "--transition 700 is not below --vocab-size 700"),
                                          ({"transition": 900}, "--transition 900 is not below"),
                                          ({"transition": 400, "max_words": 0}, "--max-words 0 must be at least 1"),
                                          ({"transition": 256}, "--transition 256 leaves no stage-1 merges"),
                                          ({"transition": 400, "run_pattern": "nosuch"}, "--run-pattern")])
def test_super_bad_inputs(kwargs, match):
    with pytest.raises(TokbenchError, match=match) as e:
        modes.train_super(_write(synthetic(5)), 700, progress=False, **kwargs)
    assert "\n" not in str(e.value) and "; " in str(e.value)


def test_compress_bad_candidates():
    with pytest.raises(TokbenchError, match="--candidates 0 must be at least 1"):
        modes.train_compress(_write(synthetic(5)), 700, candidates=0, progress=False)


def test_cli_modes(tmp_path):
    import json

    from click.testing import CliRunner

    from tokbench.cli import main as cli

    corpus = _write(synthetic())
    out = tmp_path / "super"
    r = CliRunner().invoke(cli, ["train", str(corpus), "--mode", "super", "--vocab-size", "650", "--transition",
                                 "400", "--max-words", "3", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["mode"] == "super" and info["stage2_merges"] > 0 and info["vocab_size"] <= 650
    ids = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json")).encode("the cat sat on the mat").ids
    assert len(ids) < 6
    r2 = CliRunner().invoke(cli, ["train", str(corpus), "--mode", "compress", "--vocab-size", "500",
                                  "--candidates", "8", "-o", str(tmp_path / "c"), "-q"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout)["mode"] == "compress"
    r4 = CliRunner().invoke(cli, ["train", str(corpus), "--mode", "super", "--strategy", "chunks", "--vocab-size",
                                  "500", "--max-words", "2", "-o", str(tmp_path / "ch"), "-q"])
    assert r4.exit_code == 0, r4.output
    assert json.loads(r4.stdout)["strategy"] == "chunks"
    for args, msg in [(["--mode", "super", "--transition", "700"], "--transition 700 is not below"),
                      (["--mode", "super", "--transition", "400", "--max-words", "0"], "--max-words 0"),
                      (["--mode", "super"], "needs --transition"),
                      (["--transition", "400"], "--transition applies to --mode super"),
                      (["--mode", "compress", "--candidates", "0"], "--candidates 0"),
                      (["--mode", "super", "--strategy", "chunks", "--transition", "400"],
                       "--transition applies to --strategy curriculum only"),
                      (["--strategy", "chunks"], "--strategy applies to --mode super")]:
        bad = tmp_path / "bad"
        r3 = CliRunner().invoke(cli, ["train", str(corpus), "--vocab-size", "700", "-o", str(bad), "-q", *args])
        assert r3.exit_code == 2 and msg in r3.output, (args, r3.output)
        assert not bad.exists()


def test_cancel_leaves_no_result():
    words, runs = _counters(synthetic(50))
    stage1 = tb.train_counts(words, 300, pattern=None, progress=False)
    for call in (lambda p: _core.bpe_train_super(runs, stage1.tokens, stage1.merges, 600, 4, 2, None, p),
                 lambda p: _core.bpe_train(words, 600, 2, None, p, candidates=8)):
        prog = _core.TrainProgress()
        prog.cancel()
        with pytest.raises(ValueError, match="interrupted"):
            call(prog)
