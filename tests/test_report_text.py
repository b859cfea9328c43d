"""What the metrics and the report show: the progress bar reaches 100 % on a finished run, the HTML
escapes its headers and lets wide tables scroll, text tables keep columns apart and print no -0.00."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

import tokbench.metrics as metrics_mod
from tokbench.cli import main
from tokbench.commands.metrics import _fmt, text_table
from tokbench.report import render_html

from synthetic_tokenizers import generated_text, train_bytelevel_bpe


class _Bar:
    """tqdm stand-in that records the total and what was reported."""

    bars: list = []

    def __init__(self, total=None, **kw):
        self.total, self.n = total, 0
        _Bar.bars.append(self)

    def update(self, n):
        self.n += n

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    tok = str(train_bytelevel_bpe(root / "bl"))
    (root / "english.txt").write_text("\n".join(generated_text(1, 500)), encoding="utf-8")
    # English sides repeat across languages (as in Tatoeba / UDHR): parity encodes each text once
    recs = [{"code": "eng", "sections": {"1": ["ka to ri"], "2": ["mu sen"]}},
            {"code": "aaa", "sections": {"1": ["ka to ri ka"], "2": ["mu sen lo var"]}},
            {"code": "bbb", "sections": {"1": ["ka to ri"], "2": ["δα ще"]}}]
    (root / "udhr.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    return tok, [str(root / "english.txt"), str(root / "udhr.jsonl")]


def test_progress_reaches_its_total(inputs, monkeypatch):
    tok, corpora = inputs
    _Bar.bars.clear()
    monkeypatch.setattr(metrics_mod, "tqdm", _Bar)
    metrics_mod.run_metrics([tok], corpora, progress=True, workers=1)
    (bar,) = _Bar.bars
    assert bar.total > 0 and bar.n == bar.total


def test_html_escapes_headers_and_scrolls_wide_tables(inputs):
    tok, corpora = inputs
    data = metrics_mod.run_metrics([tok], corpora, progress=False, workers=1)
    page = render_html(data, {}, "tokbench report")
    assert "X_<k" not in page and "H(X<sub>k</sub>|X<sub>&lt;k</sub>) plug-in" in page
    assert page.count('<div class="wide"><table') == page.count("<table")
    assert ".wide{max-width:100%;overflow-x:auto}" in page


def test_text_tables_keep_columns_apart():
    assert _fmt(-0.0001, 2) == "0.00" and _fmt(-0.004, 2) == "0.00" and _fmt(-0.5, 2) == "-0.50"
    assert _fmt(1250000) == "1,250,000" and _fmt(None) == "—"
    lines = text_table(["tokenizer", "corpus", "B/tok", "N"], [["a-long-name", "c", "4.00", "1,250,000.00"]])
    assert lines[1].split() == ["a-long-name", "c", "4.00", "1,250,000.00"]
    assert len({len(x) for x in lines}) == 1  # right-aligned to the same width


def test_metrics_cli_rows_split_into_their_columns(inputs):
    tok, corpora = inputs
    r = CliRunner().invoke(main, ["metrics", "-q", "-t", tok, "-c", corpora[0], "--no-parity"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    head, row = (re.split(r"\s{2,}", x.strip()) for x in lines[:2])  # columns: two spaces or more apart
    assert head[:3] == ["tokenizer", "corpus", "tokens"] and len(head) == 13
    assert len(row) == len(head), row
    assert "-0.00" not in r.stdout
