"""The Rust core (tokbench._core) against the reference libraries, on synthetic data only.

Every vocabulary here is trained (or generated) inside the test from generated text, then
`Segmenter` must give the same ids as the reference model on single pre-tokens.
"""
from __future__ import annotations

import io
import json
import random
import threading
import time

import pytest
import sentencepiece as spm
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tokbench import _core

# ---------------------------------------------------------------------------------------------
# synthetic text

SYLLABLES = ["ka", "to", "ri", "mo", "na", "se", "lu", "pe", "qu", "st", "ing", "er", "th",
             "é", "ß", "ñ", "ö", "дa", "ни", "日", "本", "語", "ا", "ل", "7", "42", "-", "'"]
RARE = ["ž", "ŋ", "Ω", "中", "文", "😀", "🎉", "ḁ", "ɐ", "\u0301"]


def make_word(rng: random.Random, rare: float = 0.0) -> str:
    parts = [rng.choice(SYLLABLES[: rng.randint(4, len(SYLLABLES))])
             for _ in range(rng.choices([1, 2, 3, 4, 6], [3, 5, 4, 2, 1])[0])]
    if rng.random() < rare:
        parts.insert(rng.randrange(len(parts) + 1), "".join(rng.choices(RARE, k=rng.randint(1, 3))))
    return "".join(parts)


def make_lines(seed: int, n: int = 3000) -> list[str]:
    rng = random.Random(seed)
    lexicon = [make_word(rng) for _ in range(800)]
    weights = [1.0 / (i + 1) for i in range(len(lexicon))]  # Zipf-like
    return [" ".join(rng.choices(lexicon, weights, k=rng.randint(3, 15))) for _ in range(n)]


def sample_words(seed: int, n: int = 1500, rare: float = 0.2) -> list[str]:
    """New words (mostly unseen combinations), some with characters never trained on."""
    rng = random.Random(seed)
    words = {make_word(rng, rare) for _ in range(n)}
    return sorted(words)


def hf_model_json(tok: Tokenizer) -> dict:
    return json.loads(tok.to_str())["model"]


def hf_merges(model: dict) -> list[tuple[int, int]]:
    vocab = model["vocab"]
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
    return [(vocab[a], vocab[b]) for a, b in pairs]


def hf_ids(model, pretoken: str) -> list[int]:
    return [t.id for t in model.tokenize(pretoken)]


def assert_all_equal(pairs, what: str):
    bad = [(x, want, got) for x, want, got in pairs if want != got]
    assert not bad, f"{what}: {len(bad)} of {len(pairs)} differ, e.g. {bad[:3]}"


# ---------------------------------------------------------------------------------------------
# token_bytes


def gpt2_bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def test_token_bytes_bytelevel_every_byte():
    table = gpt2_bytes_to_unicode()
    assert _core.token_bytes([table[b] for b in range(256)], "bytelevel") == \
        [bytes([b]) for b in range(256)]
    rng = random.Random(1)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 12))) for _ in range(500)]
    names = ["".join(table[b] for b in blob) for blob in blobs]
    assert _core.token_bytes(names, "bytelevel") == blobs
    # the HF ByteLevel decoder agrees on valid UTF-8
    dec = decoders.ByteLevel()
    for blob, name in zip(blobs, names):
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert dec.decode([name]) == text
    assert _core.token_bytes(["Ġhello", "a b", "日", ""], "bytelevel") == [b" hello", None, None, b""]


def test_token_bytes_other_styles():
    assert _core.token_bytes(["▁the", "<0x0A>", "<0xff>", "x<0x0A>", "▁▁"], "metaspace") == \
        [b" the", b"\n", b"\xff", b"x<0x0A>", b"  "]
    assert _core.token_bytes(["##ing", "un", "##", "a##"], "wordpiece") == [b"ing", b"un", b"", b"a##"]
    assert _core.token_bytes(["##é", "▁"], "utf8") == ["##é".encode(), "▁".encode()]
    assert _core.token_bytes([], "utf8") == []


def test_token_bytes_is_fast():
    table = gpt2_bytes_to_unicode()
    rng = random.Random(2)
    names = ["".join(table[rng.randrange(256)] for _ in range(rng.randint(1, 10)))
             for _ in range(250_000)]
    start = time.perf_counter()
    out = _core.token_bytes(names, "bytelevel")
    assert len(out) == len(names)
    assert time.perf_counter() - start < 2.0


def test_token_bytes_bad_input():
    with pytest.raises(ValueError, match="style"):
        _core.token_bytes(["a"], "latin1")
    with pytest.raises(TypeError):
        _core.token_bytes([b"a"], "utf8")
    with pytest.raises(TypeError):
        _core.token_bytes("abc", "utf8")


# ---------------------------------------------------------------------------------------------
# BPE by merges (HF tokenizers)


@pytest.fixture(scope="module")
def hf_bytelevel_bpe():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_lines(10), trainer)
    model = hf_model_json(tok)
    size = len(model["vocab"])
    names = [None] * size
    for t, i in model["vocab"].items():
        names[i] = t
    pieces = _core.token_bytes(names, "bytelevel")
    return tok, model, pieces


def bytelevel_pretokens(tok: Tokenizer, words: list[str]) -> list[str]:
    text = " ".join(words) + " a  b\n\n c"
    return sorted({p for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)})


@pytest.mark.parametrize("ignore_merges", [False, True])
def test_bpe_merges_bytes_matches_hf(hf_bytelevel_bpe, ignore_merges):
    tok, model, pieces = hf_bytelevel_bpe
    merges = hf_merges(model)
    ref = models.BPE(model["vocab"], [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1))
                                      for m in model["merges"]], ignore_merges=ignore_merges)
    seg = _core.Segmenter.bpe_merges(pieces, merges, "bytes", ignore_merges=ignore_merges)
    pts = bytelevel_pretokens(tok, sample_words(11))
    data = _core.token_bytes(pts, "bytelevel")
    got = seg.segment_batch(data)
    assert_all_equal([(p, hf_ids(ref, p), g) for p, g in zip(pts, got)], "bpe_merges bytes")
    assert got == [seg.segment(d) for d in data]
    assert len(pts) > 1000


def train_char_bpe():
    specials = ["<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(make_lines(20), trainer)
    model = hf_model_json(tok)
    vocab = model["vocab"]
    names = [None] * len(vocab)
    for t, i in vocab.items():
        names[i] = t
    pieces = _core.token_bytes(names, "metaspace")  # "<0xNN>" -> the byte; others UTF-8
    unk = vocab["<unk>"]
    pieces[unk] = None
    bf = [vocab[f"<0x{b:02X}>"] for b in range(256)]
    return tok, model, pieces, unk, bf


@pytest.mark.parametrize("byte_fallback,fuse_unk", [(True, False), (False, False), (False, True)])
def test_bpe_merges_chars_matches_hf(byte_fallback, fuse_unk):
    tok, model, pieces, unk, bf = train_char_bpe()
    if not byte_fallback:  # "<0xNN>" are then plain (unmatchable) names, not bytes
        for i in bf:
            pieces[i] = None
    pairs = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in model["merges"]]
    ref = models.BPE(model["vocab"], pairs, unk_token="<unk>", byte_fallback=byte_fallback,
                     fuse_unk=fuse_unk)
    seg = _core.Segmenter.bpe_merges(pieces, hf_merges(model), "chars",
                                     bf if byte_fallback else None, unk, fuse_unk=fuse_unk)
    words = sorted({p for w in sample_words(21, rare=0.4) for p, _ in
                    tok.pre_tokenizer.pre_tokenize_str(w)})
    got = seg.segment_batch([w.encode() for w in words])
    assert_all_equal([(w, hf_ids(ref, w), g) for w, g in zip(words, got)], "bpe_merges chars")
    assert any(unk in g or any(i in bf for i in g) for g in got)  # fallback was exercised


# ---------------------------------------------------------------------------------------------
# BPE by ranks (tiktoken, sentencepiece BPE)


def generated_ranks(seed: int, extra: int = 600) -> dict[bytes, int]:
    """A tiktoken-style rank table: the 256 bytes, then random joins of two earlier tokens
    over a small alphabet (so some tokens are not reached by their own merges)."""
    rng = random.Random(seed)
    alphabet = [b"a", b"b", b"c", b"d", b" ", "é".encode()]
    tokens = [bytes([b]) for b in range(256)] + ["é".encode()]
    pool = list(alphabet)
    seen = set(tokens)
    while len(tokens) < 256 + extra:
        t = rng.choice(pool[-60:] if rng.random() < 0.7 else pool) + rng.choice(pool)
        if t not in seen and len(t) <= 10:
            seen.add(t)
            tokens.append(t)
            pool.append(t)
    return {t: i for i, t in enumerate(tokens)}


def naive_rank_bpe(ranks: dict[bytes, int], data: bytes) -> list[int]:
    parts = [data[i:i + 1] for i in range(len(data))]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return [ranks[p] for p in parts]
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


@pytest.mark.parametrize("seed", [0, 1])
def test_bpe_ranks_matches_tiktoken(seed):
    ranks = generated_ranks(seed)
    enc = tiktoken.Encoding(f"synthetic{seed}", pat_str=r"[\s\S]+", mergeable_ranks=ranks,
                            special_tokens={})
    pieces = [None] * len(ranks)
    for t, r in ranks.items():
        pieces[r] = t
    rng = random.Random(100 + seed)
    texts = sorted({"".join(rng.choices("abcd é", k=rng.randint(1, 30))) for _ in range(3000)})
    texts += [t.decode() for t in ranks if len(t) > 1]  # whole tokens
    data = [t.encode() for t in texts]
    tik = _core.Segmenter.bpe_ranks(pieces, list(range(len(pieces))), "bytes", ignore_merges=True)
    got = tik.segment_batch(data, num_threads=2)
    assert_all_equal([(t, enc.encode_ordinary(t), g) for t, g in zip(texts, got)], "tiktoken")
    plain = _core.Segmenter.bpe_ranks(pieces, list(range(len(pieces))), "bytes")
    got = plain.segment_batch(data)
    assert_all_equal([(d, naive_rank_bpe(ranks, d), g) for d, g in zip(data, got)], "naive")
    assert got != tik.segment_batch(data)  # the generated table has unreachable tokens


def spm_train(lines: list[str], model_type: str, byte_fallback: bool, vocab_size: int):
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=f, vocab_size=vocab_size,
        model_type=model_type, character_coverage=0.995, byte_fallback=byte_fallback,
        normalization_rule_name="identity", hard_vocab_limit=False, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=f.getvalue())


def spm_vocab(sp):
    """pieces, scores, byte_fallback, unk of a sentencepiece model."""
    n = sp.get_piece_size()
    pieces: list[bytes | None] = [None] * n
    bf: list[int | None] = [None] * 256
    for i in range(n):
        name = sp.id_to_piece(i)
        if sp.is_byte(i):
            b = int(name[3:5], 16)
            bf[b] = i
            pieces[i] = bytes([b])
        elif not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)):
            pieces[i] = name.replace("▁", " ").encode()
    scores = [sp.get_score(i) for i in range(n)]
    return pieces, scores, (bf if all(b is not None for b in bf) else None), sp.unk_id()


@pytest.mark.parametrize("byte_fallback", [True, False])
def test_bpe_ranks_matches_sentencepiece_bpe(byte_fallback):
    sp = spm_train(make_lines(30), "bpe", byte_fallback, 900)
    pieces, scores, bf, unk = spm_vocab(sp)
    assert (bf is not None) == byte_fallback
    order = sorted(range(len(pieces)), key=lambda i: (-scores[i], i))
    ranks = [0] * len(pieces)
    for r, i in enumerate(order):
        ranks[i] = r
    seg = _core.Segmenter.bpe_ranks(pieces, ranks, "chars", bf, unk, fuse_unk=True)
    words = sample_words(31, rare=0.4)
    got = seg.segment_batch([(" " + w).encode() for w in words])
    assert_all_equal([(w, sp.encode(w), g) for w, g in zip(words, got)], "spm bpe")


# ---------------------------------------------------------------------------------------------
# Unigram


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_unigram_matches_hf(byte_fallback):
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.UnigramTrainer(vocab_size=800, unk_token="<unk>", special_tokens=["<unk>"],
                                      show_progress=False)
    tok.train_from_iterator(make_lines(40), trainer)
    model = hf_model_json(tok)
    vocab = [tuple(v) for v in model["vocab"]]
    unk = model["unk_id"]
    if byte_fallback:
        vocab += [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    ref = models.Unigram(vocab, unk, byte_fallback=byte_fallback)
    pieces = _core.token_bytes([t for t, _ in vocab], "metaspace")
    pieces[unk] = None
    bf = list(range(len(vocab) - 256, len(vocab))) if byte_fallback else None
    seg = _core.Segmenter.unigram(pieces, [s for _, s in vocab], bf, unk)
    words = sorted({p for w in sample_words(41, rare=0.4) for p, _ in
                    tok.pre_tokenizer.pre_tokenize_str(w)})
    got = seg.segment_batch([w.encode() for w in words])
    assert_all_equal([(w, hf_ids(ref, w), g) for w, g in zip(words, got)], "unigram")


@pytest.mark.parametrize("byte_fallback", [True, False])
def test_unigram_matches_sentencepiece(byte_fallback):
    sp = spm_train(make_lines(50), "unigram", byte_fallback, 900)
    pieces, scores, bf, unk = spm_vocab(sp)
    seg = _core.Segmenter.unigram(pieces, scores, bf, unk)
    words = sample_words(51, rare=0.4)
    got = seg.segment_batch([(" " + w).encode() for w in words])
    assert_all_equal([(w, sp.encode(w), g) for w, g in zip(words, got)], "spm unigram")


# ---------------------------------------------------------------------------------------------
# WordPiece


def test_wordpiece_matches_hf():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=12))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=700, special_tokens=["[UNK]"],
                                        show_progress=False)
    tok.train_from_iterator(make_lines(60), trainer)
    model = hf_model_json(tok)
    vocab = model["vocab"]
    names = [None] * len(vocab)
    for t, i in vocab.items():
        names[i] = t
    pieces = _core.token_bytes(names, "wordpiece")
    unk = vocab["[UNK]"]
    pieces[unk] = None
    word_start = [not t.startswith("##") for t in names]
    ref = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=12)
    seg = _core.Segmenter.wordpiece(pieces, word_start, unk, 12)
    words = sorted({p for w in sample_words(61, rare=0.3) for p, _ in
                    tok.pre_tokenizer.pre_tokenize_str(w)})
    got = seg.segment_batch([w.encode() for w in words])
    assert_all_equal([(w, hf_ids(ref, w), g) for w, g in zip(words, got)], "wordpiece")
    assert any(len(w) > 12 for w in words) and [unk] in got
    # word_start=False: the first piece is a continuation too
    cont = {t[2:]: i for i, t in enumerate(names) if t.startswith("##")}
    some = next(t for t in cont if len(t) > 1)
    assert seg.segment(some.encode(), False) == [cont[some]]
    assert seg.segment_batch([some.encode()] * 2, [False, True], num_threads=1)[0] == [cont[some]]


# ---------------------------------------------------------------------------------------------
# long inputs, threads


def test_long_inputs_are_not_quadratic():
    ranks = generated_ranks(3)
    pieces = [None] * len(ranks)
    for t, r in ranks.items():
        pieces[r] = t
    seg = _core.Segmenter.bpe_ranks(pieces, list(range(len(pieces))), "bytes")
    merges_seg = _core.Segmenter.bpe_merges([bytes([b]) for b in range(256)] + [b"aa", b"aaaa"],
                                            [(97, 97), (256, 256)], "bytes")
    rng = random.Random(4)
    big = "".join(rng.choices("abcd é", k=120_000)).encode()
    start = time.perf_counter()
    out = seg.segment(big)
    assert b"".join(pieces[i] for i in out) == big
    assert merges_seg.segment(b"a" * 100_001) == [257] * 25_000 + [97]
    assert time.perf_counter() - start < 5.0


def test_segment_batch_from_python_threads():
    seg = _core.Segmenter.bpe_merges([b"a", b"b", b"ab"], [(0, 1)], "bytes")
    data = [b"ab" * (i % 50) + b"a" for i in range(20_000)]
    want = [[2] * (i % 50) + [0] for i in range(20_000)]
    results = [None] * 4

    def work(k):
        results[k] = seg.segment_batch(data, num_threads=k % 3)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == want for r in results)


# ---------------------------------------------------------------------------------------------
# bad input: ValueError (or TypeError for wrong types), never a crash

BYTES = [bytes([b]) for b in range(256)]


@pytest.mark.parametrize("make", [
    lambda: _core.Segmenter.bpe_merges(BYTES, [(0, 256)], "bytes"),
    lambda: _core.Segmenter.bpe_merges(BYTES, [(-1, 0)], "bytes"),
    lambda: _core.Segmenter.bpe_merges(BYTES, [(97, 98)], "bytes"),  # b"ab" is no piece
    lambda: _core.Segmenter.bpe_merges(BYTES, [(1, 2, 3)], "bytes"),
    lambda: _core.Segmenter.bpe_merges(BYTES, [], "words"),
    lambda: _core.Segmenter.bpe_merges(BYTES, [], "bytes", byte_fallback=list(range(255))),
    lambda: _core.Segmenter.bpe_merges(BYTES, [], "bytes", byte_fallback=[0] * 255 + [256]),
    lambda: _core.Segmenter.bpe_merges(BYTES, [], "bytes", unk_id=256),
    lambda: _core.Segmenter.bpe_ranks(BYTES, [0] * 255, "bytes"),
    lambda: _core.Segmenter.bpe_ranks(BYTES, [0] * 256, "chars", unk_id=-3),
    lambda: _core.Segmenter.unigram(BYTES, [0.0] * 10),
    lambda: _core.Segmenter.unigram(BYTES, [0.0] * 256, byte_fallback=[1, 2]),
    lambda: _core.Segmenter.wordpiece(BYTES, [True] * 255, 0),
    lambda: _core.Segmenter.wordpiece(BYTES, [True] * 256, 300),
    lambda: _core.Segmenter.wordpiece(BYTES, [True] * 256, 0, -1),
])
def test_bad_constructor_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_bad_call_arguments():
    no_unk = _core.Segmenter.unigram([b"a", b"b"], [-1.0, -1.0])
    assert no_unk.segment(b"abba") == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="not covered"):
        no_unk.segment(b"abc")
    with pytest.raises(ValueError, match="input 1"):
        no_unk.segment_batch([b"a", b"xa"])
    with pytest.raises(ValueError):
        no_unk.segment_batch([b"a"], [True, False])
    with pytest.raises(ValueError):
        no_unk.segment_batch([b"a"], num_threads=-1)
    for seg in (_core.Segmenter.bpe_merges([b"a"], [], "chars"),
                _core.Segmenter.bpe_ranks([b"a"], [0], "bytes")):
        with pytest.raises(ValueError):
            seg.segment(b"ab")
    with pytest.raises(TypeError):
        no_unk.segment("ab")
    with pytest.raises(TypeError):
        _core.Segmenter.bpe_ranks(["a"], [0], "bytes")
    assert no_unk.segment(b"") == [] and no_unk.segment_batch([]) == []


# ---------------------------------------------------------------------------------------------
# properties: the ids always spell the input when no unk is produced

SMALL = st.binary(min_size=2, max_size=4)
ALPHA = st.sampled_from([b"a", b"b", b"c", "é".encode(), "日".encode(), b"\xff", b" "])


@st.composite
def vocab_and_inputs(draw):
    extra = draw(st.lists(st.lists(ALPHA, min_size=2, max_size=4).map(b"".join), max_size=40))
    extra += draw(st.lists(SMALL, max_size=5))
    inputs = draw(st.lists(st.lists(ALPHA, max_size=30).map(b"".join), min_size=1, max_size=8))
    scores = draw(st.lists(st.floats(-20, -0.1), min_size=len(extra), max_size=len(extra)))
    return extra, inputs, scores


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab_and_inputs())
def test_ids_spell_the_input(case):
    extra, inputs, scores = case
    unk = 0
    # id 0 unk, ids 1..256 byte fallback, then the generated pieces (duplicates allowed)
    pieces = [None] + BYTES + extra
    bf = list(range(1, 257))
    n = len(pieces)
    chars = [b"a", b"b", b"c", "é".encode(), "日".encode(), b" "]  # "\xff" only via fallback
    char_pieces = [None] + BYTES + chars + extra
    merge_pieces = BYTES + extra
    known = {p: i for i, p in reversed(list(enumerate(merge_pieces)))}
    merges = []
    for p in extra:  # a merge list that builds each extra piece from a split that exists
        for k in range(1, len(p)):
            if p[:k] in known and p[k:] in known:
                merges.append((known[p[:k]], known[p[k:]]))
                break
    cases = [  # (segmenter, its pieces, its unk id or None)
        (_core.Segmenter.bpe_ranks(pieces, list(range(n)), "bytes", ignore_merges=True),
         pieces, None),
        (_core.Segmenter.bpe_ranks(char_pieces, list(range(len(char_pieces))), "chars", bf, unk),
         char_pieces, None),
        (_core.Segmenter.bpe_ranks(char_pieces, list(range(len(char_pieces))), "chars", None,
                                   unk, fuse_unk=True), char_pieces, unk),
        (_core.Segmenter.bpe_merges(merge_pieces, merges, "bytes"), merge_pieces, None),
        (_core.Segmenter.bpe_merges(merge_pieces + [None], merges, "chars", None,
                                    len(merge_pieces)), merge_pieces, len(merge_pieces)),
        (_core.Segmenter.unigram(pieces, [0.0] * 257 + scores, bf, unk), pieces, None),
        (_core.Segmenter.unigram(pieces, [0.0] * 257 + scores, None, unk), pieces, unk),
        (_core.Segmenter.wordpiece(char_pieces, [True] * len(char_pieces), unk), char_pieces, unk),
    ]
    for seg, names, unk_id in cases:
        outs = seg.segment_batch(inputs, num_threads=1)
        assert outs == [seg.segment(d) for d in inputs]
        for d, out in zip(inputs, outs):
            if unk_id is not None and unk_id in out:
                continue
            assert b"".join(names[i] for i in out) == d, (seg, d, out)
