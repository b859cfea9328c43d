"""tokbench.bpe.lz (LZ-aware BPE, `--mode lz`): candidates=1 is classic BPE, the exact mode's merges equal a
from-scratch brute force (re-encode the sample with every candidate merge, compress, take the smallest), the
proxy is deterministic, the written tokenizer.json gives `tokenizers` the ids tokbench.bpe gives on held-out
text, and bad settings give one line (exit 2 through the CLI)."""
from __future__ import annotations

import importlib
import json
import zlib

import numpy as np
import pytest

from tokbench.assets import iter_documents
from tokbench.bpe import BPE, lz
from tokbench.errors import TokbenchError

tb = importlib.import_module("tokbench.bpe.train")
tokenizers = pytest.importorskip("tokenizers")


def _shakespeare(require_asset, n: int) -> str:
    return lz.take_sample(iter_documents(require_asset("tinyshakespeare")), n)


def _counter(text: str, specials=()):
    c = tb.new_counter("gpt2", specials)
    tb.count_texts([text], c, num_threads=1)
    return c


def test_candidates_1_is_classic(require_asset):
    text = _shakespeare(require_asset, 300_000)
    c = _counter(text)
    ref = tb.train_counts(c, 1500, pattern=tb.resolve_pattern("gpt2"), progress=False)
    one = lz.train_lz_counts(c, text[:50_000], 1500, candidates=1, progress=False)
    assert one.merges == ref.merges and one.tokens == ref.tokens and one.merge_counts == ref.merge_counts


def _encoder(tokens: list[bytes], merges, pattern):
    t = tb.Trained(tokens=tokens, merges=merges, merge_counts=[0] * len(merges), special_tokens={},
                   pattern=pattern, stats=tb.CountStats())
    return t.encoder()


def _with(tokens: list[bytes], pair) -> list[bytes]:
    b = tokens[pair[0]] + tokens[pair[1]]
    return tokens if b in tokens else tokens + [b]


def _brute_force_next(items, sample: str, tokens, merges, candidates: int, width: int, level: int):
    """From scratch: segment every counted word with the merges so far, count the pairs (overlapping, times the
    word counts), shortlist the `candidates` most frequent (count, then smallest bytes), re-encode the sample
    with each candidate added, serialise, compress; the smallest wins (ties: the more frequent)."""
    whole = _encoder(tokens, merges, None)
    pairs: dict = {}
    for b, c in items:
        ids = whole.encode_ordinary(b.decode("utf-8"))
        for p in zip(ids, ids[1:]):
            pairs[p] = pairs.get(p, 0) + c
    order = sorted(pairs, key=lambda p: (-pairs[p], tokens[p[0]], tokens[p[1]]))
    short = [p for p in order if pairs[p] >= 2][:candidates]
    sizes = []
    for p in short:
        t2 = _with(tokens, p)
        enc = _encoder(t2, merges + [p], tb.resolve_pattern("gpt2"))
        ids = np.array(enc.encode_ordinary(sample), dtype="<u4")
        data = ids.view(np.uint8).reshape(-1, 4)[:, :width].tobytes()
        sizes.append(len(zlib.compress(data, level)))
    best = min(range(len(short)), key=lambda i: (sizes[i], i))
    return short[best], short, sizes


def test_exact_mode_equals_brute_force(require_asset):
    text = _shakespeare(require_asset, 40_000)
    sample = text[:6000]
    counter = _counter(text)
    n_merges = 30
    trained = lz.train_lz_counts(counter, sample, 256 + n_merges, candidates=6, every=1, progress=False)
    assert len(trained.merges) == n_merges
    items = [(b, c) for b, c in counter.items()]
    tokens = [bytes([i]) for i in range(256)]
    differs = 0
    for i in range(n_merges):
        pick, short, sizes = _brute_force_next(items, sample, tokens, trained.merges[:i], 6, 2, 6)
        assert trained.merges[i] == pick, (i, short, sizes)
        differs += pick != short[0]
        tokens = _with(tokens, pick)
    assert tokens == trained.tokens
    assert differs >= 3  # the compressed size overrules the frequency order, so this is not classic BPE


def test_proxy_round_merges_the_best_scored(require_asset):
    """every=3: the first round's three merges are the brute force's three smallest sizes, in that order."""
    text = _shakespeare(require_asset, 40_000)
    sample = text[:6000]
    counter = _counter(text)
    trained = lz.train_lz_counts(counter, sample, 256 + 3, candidates=6, every=3, progress=False)
    tokens = [bytes([i]) for i in range(256)]
    _pick, short, sizes = _brute_force_next(list(counter.items()), sample, tokens, [], 6, 2, 6)
    best3 = [short[i] for i in sorted(range(len(short)), key=lambda i: (sizes[i], i))[:3]]
    assert trained.merges == best3 and trained.meta["rounds"] == 1


def test_proxy_deterministic_and_exports(require_asset, tmp_path):
    text = _shakespeare(require_asset, 200_000)
    counter = _counter(text, ["<|endoftext|>"])
    kw = dict(candidates=8, every=4, lz_level=1, special_tokens=["<|endoftext|>"], progress=False)
    a = lz.train_lz_counts(counter, text[:30_000], 900, **kw)
    b = lz.train_lz_counts(counter, text[:30_000], 900, **kw)
    assert a.merges == b.merges and a.vocab_size == 900
    assert a.meta["rounds"] < len(a.merges) and a.meta["sample_compressed_end"] < a.meta["sample_compressed_start"]
    path = a.save(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(path))
    ours = BPE.from_file(path)
    held = list(iter_documents(require_asset("wikitext2-test"), limit_bytes=60_000)) + ["x<|endoftext|>y  \n\n naïve 日本語 \t"]
    for doc in held:
        ids = hf.encode(doc, add_special_tokens=False).ids
        assert ours.encode(doc, allowed_special="all") == ids
        assert hf.decode(ids, skip_special_tokens=False) == doc
    plain = held[0]
    assert a.encoder().encode_ordinary(plain) == hf.encode(plain, add_special_tokens=False).ids


@pytest.mark.parametrize("kw,msg", [
    (dict(candidates=0), "--candidates must be in 1..1024"),
    (dict(candidates=4, every=5), "--every 5 is above --candidates 4"),
    (dict(every=0), "--every must be in 1..1024"),
    (dict(sample_bytes=10), "--sample-bytes must be in 1024.."),
    (dict(sample_bytes=1 << 30), "--sample-bytes must be in 1024.."),
    (dict(lz_compressor="bz2"), "unknown --lz-compressor 'bz2'"),
    (dict(lz_level=0), "--lz-level must be in 1..9 (gzip)"),
])
def test_bad_settings_api(tmp_path, kw, msg):
    f = tmp_path / "c.txt"
    f.write_text("hello world\n" * 50)
    with pytest.raises(TokbenchError) as e:
        lz.train_lz(f, 300, progress=False, **kw)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_cli(tmp_path):
    from click.testing import CliRunner

    from tokbench.cli import main as cli

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"the cat {i % 7} sat on the mat, said the cat.\n" for i in range(400)))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["train", str(corpus), "--mode", "lz", "--vocab-size", "270", "--candidates", "4",
                                 "--every", "2", "--sample-bytes", "4096", "--lz-level", "1", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["mode"] == "lz" and info["every"] == 2 and info["lz_level"] == 1 and info["vocab_size"] == 270
    tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    bad = tmp_path / "bad"
    for args, msg in [(["--mode", "lz", "--every", "0"], "--every must be in 1..1024"),
                      (["--mode", "lz", "--sample-bytes", "12"], "--sample-bytes must be in 1024.."),
                      (["--mode", "lz", "--lz-compressor", "bz2"], "unknown --lz-compressor 'bz2'"),
                      (["--mode", "lz", "--lz-compressor", "lzma", "--lz-level", "10"], "--lz-level must be in 0..9"),
                      (["--every", "2"], "--every applies to --mode lz only"),
                      (["--mode", "super", "--transition", "280", "--candidates", "3"],
                       "--candidates applies to --mode compress and --mode lz only")]:
        r = CliRunner().invoke(cli, ["train", str(corpus), "--vocab-size", "300", "-o", str(bad), "-q", *args])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1 and not bad.exists()
