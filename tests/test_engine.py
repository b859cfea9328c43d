"""tokbench.exec: shards, count tables, the inline and process executors, faults and errors (no Ray here;
tests/test_engine_ray.py runs the same on a local Ray cluster)."""
from __future__ import annotations

import importlib
import json

import pytest
from click.testing import CliRunner

from tokbench import _core
from tokbench import exec as ex
from tokbench.cli import main as cli
from tokbench.errors import TokbenchError

tb = importlib.import_module("tokbench.bpe.train")


def _reference(inputs, pattern="gpt2", specials=(), text_field=None):
    """Counts by the single-process path of tokbench.bpe.train (count_inputs)."""
    c = tb.new_counter(pattern, specials)
    tb.count_inputs(inputs, c, text_field=text_field, progress=False)
    return c.items()


def _engine_items(inputs, engine="inline", workers=1, shard_bytes=None, partitions=None, pattern="gpt2",
                  text_field=None, **kw):
    c = tb.new_counter(pattern)
    _, rec = tb.count_engine(inputs, c, engine=engine, workers=workers, shard_bytes=shard_bytes,
                             partitions=partitions, text_field=text_field, progress=False, **kw)
    return c.items(), rec


def test_tables_round_trip_and_bad_blobs():
    c = tb.new_counter("gpt2")
    c.count(["the cat sat on the mat\n", "a dog, the cat\n"], 1)
    blobs = c.to_tables(4)
    assert len(blobs) == 4 and all(isinstance(b, bytes) for b in blobs)
    info = [_core.table_info(b) for b in blobs]
    assert [i["partition"] for i in info] == [0, 1, 2, 3]
    assert sum(i["keys"] for i in info) == len(c) and sum(i["total"] for i in info) == c.total()
    back = tb.new_counter("gpt2")
    for b in blobs:
        back.add_table(_core.table_merge([b]))
    assert back.items() == c.items()
    two = tb.new_counter("gpt2")
    for b in blobs:
        two.add_table(_core.table_merge([b, b]))
    assert two.items() == [(k, 2 * n) for k, n in c.items()]
    bad = bytearray(blobs[0])
    bad[-9] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        _core.table_merge([bytes(bad)])
    with pytest.raises(ValueError, match="different partitions"):
        _core.table_merge([blobs[0], blobs[1]])
    with pytest.raises(ValueError, match="not a tokbench count table"):
        back.add_table(b"{'the': 1}")


@pytest.mark.parametrize("shard_bytes", [4096, 50_000, None])
def test_shards_count_every_document_once(require_asset, shard_bytes):
    """Tiny shards cut a text file in ~300 places: the counts still equal the whole-file counts."""
    wt = require_asset("wikitext2-test")
    want = _reference([wt])
    got, rec = _engine_items([wt], shard_bytes=shard_bytes, partitions=7)
    assert got == want
    assert rec["bytes"] == wt.stat().st_size and rec["non_utf8_lines"] == 0
    spans = [(s["start"], s["end"]) for s in rec["shards"]]
    assert spans[0][0] == 0 and spans[-1][1] == wt.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_shards_jsonl_fields_and_folders(require_asset):
    gsm = require_asset("gsm8k-test")
    assert _engine_items([gsm], shard_bytes=20_000, text_field="question,answer")[0] == \
        _reference([gsm], text_field="question,answer")
    tat = require_asset("tatoeba")  # a folder of sentence files
    assert _engine_items([tat], shard_bytes=300_000)[0] == _reference([tat])


def test_cutting_mid_document_would_change_the_counts(require_asset):
    """The boundary rule matters: byte ranges read as they are (no skip to a document start) count
    other pre-tokens, so the equality above can fail."""
    wt = require_asset("wikitext2-test")
    data = wt.read_bytes()
    naive = tb.new_counter("gpt2")
    step = 1024
    naive.count([data[i:i + step].decode("utf-8", "ignore") for i in range(0, len(data), step)], 1)
    assert naive.items() != _reference([wt])


def test_globs_and_memory_urls(require_asset, tmp_path):
    import fsspec  # in the test extra
    wt, ts = require_asset("wikitext2-test"), require_asset("tinyshakespeare")
    for p in (wt, ts):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    want = _reference([wt, ts])
    assert _engine_items([str(tmp_path / "*.txt")], shard_bytes=200_000)[0] == want
    fs = fsspec.filesystem("memory")
    for p in (wt, ts):
        with fs.open(f"/engine-test/{p.name}", "wb") as f:
            f.write(p.read_bytes())
    try:
        assert _engine_items(["memory://engine-test"], shard_bytes=200_000)[0] == want
        assert _engine_items(["memory://engine-test/*.txt"], shard_bytes=10**7)[0] == want
    finally:
        fs.rm("/engine-test", recursive=True)


def _train_cli(args, out):
    r = CliRunner().invoke(cli, ["train", *args, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    return (out / "tokenizer.json").read_bytes(), json.loads((out / "train_report.json").read_text())


@pytest.mark.parametrize("mode", [["--mode", "classic"], ["--mode", "super", "--transition", "700"]])
def test_train_identical_across_engines(require_asset, tmp_path, mode):
    ts, gsm = require_asset("tinyshakespeare"), require_asset("gsm8k-test")
    base = [str(ts), str(gsm), "--vocab-size", "900", *mode, "--shard-size", "300000"]
    ref = tb.train([ts, gsm], 900, progress=False) if mode[1] == "classic" else None
    outs = {}
    for name, extra in {"inline": ["--engine", "inline"], "process1": ["--engine", "process", "--workers", "1"],
                        "process2": ["--engine", "process", "--workers", "2", "--partitions", "5"]}.items():
        outs[name], report = _train_cli(base + extra, tmp_path / name)
        assert report["engine"]["shards"] == len(report["shards_counted"]) == 7
        assert report["engine"]["map_shipped_bytes"] > 0
    assert outs["inline"] == outs["process1"] == outs["process2"]
    if ref is not None:  # and the same as the single-process trainer
        ref.save(tmp_path / "ref.json")
        assert (tmp_path / "ref.json").read_bytes() == outs["inline"]


def test_process_worker_killed_is_retried(require_asset, tmp_path):
    """SIGKILL of a pool worker mid-run: the pool is rebuilt, unfinished shards run again, the counts
    are exactly the counts (nothing lost, nothing counted twice)."""
    wt = require_asset("wikitext2-test")
    want = _reference([wt])
    marker = tmp_path / "killed"
    got, rec = _engine_items([wt], engine="process", workers=2, shard_bytes=200_000, _kill_once=str(marker))
    assert marker.exists()  # a worker did die
    assert rec["retried_tasks"] >= 1
    assert got == want


def test_unreadable_shard_is_one_line(require_asset, tmp_path):
    p = tmp_path / "gone.txt"
    p.write_bytes(require_asset("tinyshakespeare").read_bytes())
    shards = ex.plan_shards([p], 100_000)
    p.unlink()  # listed, then gone before the workers read it
    task = ex.CountTask((ex.TableSpec(tb.new_counter("gpt2").pattern),), 4)
    for engine, workers in (("inline", 1), ("process", 2)):
        with ex.make_executor(engine, workers) as e, pytest.raises(TokbenchError) as info:
            ex.run_count(task, shards, e, [tb.new_counter("gpt2")], progress=False)
        msg = str(info.value)
        assert "gone.txt" in msg and "cannot read" in msg and "\n" not in msg


def test_cli_errors_exit_2_and_write_nothing(tmp_path, require_asset):
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["train", str(tmp_path / "no-such-*.txt"), "--vocab-size", "300", "-o", str(out)])
    assert r.exit_code == 2 and "matches no file" in r.output and not out.exists()
    r = CliRunner().invoke(cli, ["train", "memory://nothing-here.txt", "--vocab-size", "300", "-o", str(out)])
    assert r.exit_code == 2 and "nothing-here" in r.output and not out.exists()
    r = CliRunner().invoke(cli, ["train", str(require_asset("tinyshakespeare")), "--vocab-size", "300",
                                 "--workers", "0", "-o", str(out)])
    assert r.exit_code == 2 and not out.exists()


def test_non_utf8_lines_skipped_and_named(tmp_path):
    good = "First line of text\nSecond line, more text\n" * 200
    p = tmp_path / "mixed.txt"
    p.write_bytes(good.encode() + b"caf\xe9 latin-1 here\n" + good.encode())
    clean = tmp_path / "clean.txt"
    clean.write_text(good + good, encoding="utf-8")
    r = CliRunner().invoke(cli, ["train", str(p), "--vocab-size", "300", "--shard-size", "4096",
                                 "--engine", "process", "--workers", "2", "-o", str(tmp_path / "a"), "-q"])
    assert r.exit_code == 0, r.output
    assert "warning: 1 non-UTF-8 lines (18 bytes) not counted, in" in r.output and "mixed.txt" in r.output
    r2 = CliRunner().invoke(cli, ["train", str(clean), "--vocab-size", "300", "-o", str(tmp_path / "b"), "-q"])
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert r2.exit_code == 0


def test_interrupted_count_leaves_no_output(require_asset, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "run_count", boom)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["train", str(require_asset("tinyshakespeare")), "--vocab-size", "300",
                                 "-o", str(out), "-q"])
    assert r.exit_code != 0 and not out.exists()
    assert not list(tmp_path.iterdir())


def _strip_engine(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "engine"}


def test_metrics_counts_identical_across_engines(require_asset, tmp_path):
    """tokbench metrics --engine: the same values on inline / process (1 and 2 workers, other shards and
    partitions); unigram values bit-identical to the in-memory metrics, n-gram counts equal, entropies
    equal to rounding (their sums run in another order)."""
    from tokbench.metrics import run_metrics
    from tokbench.metrics.counting import count_metrics

    gsm, ts = str(require_asset("gsm8k-test")), str(require_asset("tinystories"))
    for corpus, runs in ((gsm, (("inline", 1, None, None), ("inline", 1, 150_000, 3), ("process", 2, 60_000, 8))),
                         (ts, (("inline", 1, None, None),))):
        rows = [count_metrics("gpt2", corpus, engine=e, workers=w, shard_bytes=b, partitions=p, progress=False)
                for e, w, b, p in runs]
        assert all(_strip_engine(r) == _strip_engine(rows[0]) for r in rows)
        ref = run_metrics(["gpt2"], [corpus], parity=[], compressors=(), workers=1, progress=False)["results"][0]
        got = rows[-1]
        for k in ("tokens", "bytes", "chars", "documents", "types", "utilisation", "shannon_entropy",
                  "renyi_entropy", "renyi_efficiency", "unigram_bits_per_byte", "bytes_per_token"):
            assert got[k] == ref[k], k
        for g, r in zip(got["ngrams"], ref["ngrams"]):
            for k in ("n", "distinct", "contexts", "singleton_fraction", "singleton_context_fraction"):
                assert g[k] == r[k], (g["order"], k)
            for k in ("block_entropy", "block_entropy_mm", "conditional_entropy", "conditional_entropy_mm"):
                assert g[k] == pytest.approx(r[k], rel=1e-11, abs=1e-11), (g["order"], k)
    assert len(rows[-1]["engine"]["shards"]) == 1  # a text file is one document: one shard


def test_metrics_cli_engine_and_errors(require_asset, tmp_path):
    """The CLI gives count_metrics' values (the map + retry path itself is the one the train tests kill)."""
    gsm = str(require_asset("gsm8k-test"))
    r = CliRunner().invoke(cli, ["metrics", "-t", "gpt2", "-c", gsm, "--engine", "inline", "--shard-size", "100000",
                                 "--json", "-q"])
    assert r.exit_code == 0, r.output
    cli_row = json.loads(r.output)["results"][0]
    from tokbench.metrics.counting import count_metrics

    row = count_metrics("gpt2", gsm, engine="inline", shard_bytes=300_000, partitions=3, progress=False)
    for k in ("tokens", "shannon_entropy", "renyi_entropy", "ngrams"):
        assert row[k] == cli_row[k]
    assert "heldout_cross_entropy" in cli_row["missing"] and cli_row["fertility"] is None
    r = CliRunner().invoke(cli, ["metrics", "-t", "gpt2", "-c", gsm, "--workers", "2", "-q"])
    assert r.exit_code == 2 and "--engine" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    r = CliRunner().invoke(cli, ["metrics", "-t", "gpt2", "-c", str(bad), "--engine", "inline", "-q"])
    assert r.exit_code == 2 and "bad.jsonl" in r.output and "not UTF-8" in r.output
    assert len(r.output.strip().splitlines()) == 1
