"""tokbench report: folder contents, offline HTML, --from-json, headless Chromium render."""
from __future__ import annotations

import csv
import json
import os
import re

import pytest
from click.testing import CliRunner

from tokbench.cli import main
from tokbench.errors import TokbenchError
from tokbench.metrics import run_metrics
from tokbench.report import write_report
from tokbench.report.screenshot import find_browser, screenshot

from synthetic_tokenizers import generated_text, train_bytelevel_bpe, train_wordpiece


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    toks = [str(train_bytelevel_bpe(root / "bl")), str(train_wordpiece(root / "wp"))]
    (root / "english.txt").write_text("\n".join(generated_text(1, 2000)), encoding="utf-8")
    (root / "code-x.txt").write_text("\n".join(generated_text(2, 1000)), encoding="utf-8")
    recs = [{"code": "eng", "sections": {"1": ["ka to ri"], "2": ["mu sen"]}},
            {"code": "aaa", "sections": {"1": ["ka to ri ka"], "2": ["mu sen lo var"]}},
            {"code": "bbb", "sections": {"1": ["日本"], "2": ["δα ще"]}}]
    (root / "udhr.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    corpora = [str(root / "english.txt"), str(root / "code-x.txt"), str(root / "udhr.jsonl")]
    return run_metrics(toks, corpora, progress=False), root


def test_report_folder(data, tmp_path):
    d, _ = data
    out = write_report(d, tmp_path / "rep", "tokbench report ...")
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "metrics.json", "metrics.csv", "ngrams.csv", "parity.csv", "compression.png",
            "compression.svg", "hk_curves.png", "hk_curves.svg", "parity_udhr.png", "parity_udhr.svg"} <= names
    html = (out / "index.html").read_text(encoding="utf-8")
    for section in ("Summary", "Compression per domain", "Conditional entropy", "Cross-language parity",
                    "How it was made"):
        assert section in html
    # offline: nothing is loaded from the network
    assert not re.search(r"(src|href)=['\"]https?:", html)
    rows = list(csv.DictReader(open(out / "parity.csv", encoding="utf-8")))
    assert {r["language"] for r in rows} == {"aaa", "bbb"}
    assert json.loads((out / "metrics.json").read_text())["results"]
    # no temporary folders left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_report_replaces_atomically(data, tmp_path):
    d, _ = data
    write_report(d, tmp_path / "rep")
    before = (tmp_path / "rep" / "metrics.json").stat().st_ino
    write_report(d, tmp_path / "rep", overwrite=True)  # a report tokbench wrote: replaced
    assert (tmp_path / "rep" / "metrics.json").stat().st_ino != before
    (tmp_path / "rep" / "stale.txt").write_text("x")  # a file tokbench did not write: never deleted
    with pytest.raises(TokbenchError, match="did not write"):
        write_report(d, tmp_path / "rep", overwrite=True)
    assert (tmp_path / "rep" / "stale.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_report_cli_from_json(data, tmp_path):
    d, root = data
    j = tmp_path / "m.json"
    j.write_text(json.dumps(d), encoding="utf-8")
    tok = d["tokenizers"][0]["name"]
    r = CliRunner().invoke(main, ["report", "-t", tok, "--from-json", str(j), "-o", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [t["name"] for t in got["tokenizers"]] == [tok]
    r = CliRunner().invoke(main, ["report", "-t", "nope", "--from-json", str(j), "-o", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "none of the --tokenizer" in r.output


def test_report_renders_in_chromium(data, tmp_path):
    if find_browser() is None:
        # .ci/run installs Chromium; under CI its absence is a failure, never a skip
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    d, _ = data
    out = write_report(d, tmp_path / "rep")
    png = screenshot(out, tmp_path / "shot.png", 1200, 2500)
    assert png.stat().st_size > 20_000
