"""--engine ray on a real local Ray cluster (2 CPUs, no dashboard, 200 MB object store), started once
for the module: identical tokenizer.json with 1 and 2 workers, a SIGKILLed worker retried, errors.
Ray is in the `test` extra, so CI runs these (no skip)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tokbench import exec as ex
from tokbench.cli import main as cli
from tokbench.errors import TokbenchError

tb = importlib.import_module("tokbench.bpe.train")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 << 20, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _train(args, out):
    r = CliRunner().invoke(cli, ["train", *args, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    return (out / "tokenizer.json").read_bytes(), json.loads((out / "train_report.json").read_text())


def test_ray_trains_the_same_tokenizer(ray_cluster, require_asset, tmp_path):
    ts, gsm = require_asset("tinyshakespeare"), require_asset("gsm8k-test")
    base = [str(ts), str(gsm), "--vocab-size", "900", "--shard-size", "300000"]
    inline, _ = _train(base + ["--engine", "inline"], tmp_path / "inline")
    for w in (1, 2):
        got, report = _train(base + ["--engine", "ray", "--workers", str(w)], tmp_path / f"ray{w}")
        assert got == inline
        eng = report["engine"]
        assert eng["engine"] == "ray" and eng["workers"] == w and eng["shards"] == 7
        assert eng["cluster_cpus"] == 2.0
        assert [s["url"] for s in report["shards_counted"]].count(str(ts)) == 4


def test_ray_worker_killed_is_retried(ray_cluster, require_asset, tmp_path):
    wt = require_asset("wikitext2-test")
    want = tb.new_counter("gpt2")
    tb.count_inputs([wt], want, progress=False)
    marker = tmp_path / "killed"
    got = tb.new_counter("gpt2")
    tb.count_engine([wt], got, engine="ray", workers=2, shard_bytes=300_000, progress=False,
                    _kill_once=str(marker))
    assert marker.exists()  # one Ray worker process did SIGKILL itself mid-run
    assert got.items() == want.items()


def test_ray_unreadable_shard_is_one_line(ray_cluster, require_asset, tmp_path):
    p = tmp_path / "gone.txt"
    p.write_bytes(require_asset("tinyshakespeare").read_bytes())
    shards = ex.plan_shards([p], 400_000)
    p.unlink()
    task = ex.CountTask((ex.TableSpec(tb.new_counter("gpt2").pattern),), 4)
    with ex.make_executor("ray", 2) as e, pytest.raises(TokbenchError) as info:
        ex.run_count(task, shards, e, [tb.new_counter("gpt2")], progress=False)
    assert "gone.txt" in str(info.value) and "cannot read" in str(info.value)
    assert ray_cluster.is_initialized()  # the module's cluster is not the executor's to shut down


def test_unreachable_ray_address(tmp_path, require_asset):
    """A fresh process (no cluster): one line on stderr, exit 2, no output folder, within seconds."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "tokbench.cli", "train", str(require_asset("tinyshakespeare")),
                        "--vocab-size", "300", "--engine", "ray", "--ray-address", "127.0.0.1:9", "-o", str(out),
                        "-q"], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH":
                        os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)})
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in lines[0], r.stderr
    assert not out.exists()


def test_ray_metrics_counts_identical(ray_cluster, require_asset):
    from tokbench.metrics.counting import count_metrics

    gsm = str(require_asset("gsm8k-test"))
    rows = [count_metrics("gpt2", gsm, engine=e, workers=w, shard_bytes=200_000, progress=False)
            for e, w in (("inline", 1), ("ray", 1), ("ray", 2))]
    assert [r["engine"]["engine"] for r in rows] == ["inline", "ray", "ray"]
    strip = [{k: v for k, v in r.items() if k != "engine"} for r in rows]
    assert strip[0] == strip[1] == strip[2]
