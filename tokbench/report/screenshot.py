"""Render a report folder in headless Chromium and save a full-page screenshot (a person's check).

    python -m tokbench.report.screenshot reports/metrics-example [-o shot.png] [--width 1400] [--height 9000]

Needs a `chromium` (Debian: `apt-get install -y chromium`) or `chromium-browser` / `google-chrome` on
PATH. The page is loaded from file:// with networking off, so the report must be self-contained.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tokbench.errors import TokbenchError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    for b in BROWSERS:
        path = shutil.which(b)
        if path:
            return path
    return None


def screenshot(report_dir: str | Path, out: str | Path, width: int = 1400, height: int = 9000,
               timeout: float = 120) -> Path:
    index = Path(report_dir).resolve() / "index.html"
    if not index.exists():
        raise TokbenchError("no index.html here", path=report_dir, fix="pass a folder written by `tokbench report`")
    browser = find_browser()
    if browser is None:
        raise TokbenchError("no Chromium found", fix="apt-get install -y chromium")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # offline: nothing may be fetched
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
               index.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0 or not out.exists():
        raise TokbenchError(f"chromium failed ({res.returncode}): {res.stderr.strip()[-300:]}", path=index)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir")
    ap.add_argument("-o", "--output", default=None, help="PNG path (default: REPORT_DIR/../NAME-screenshot.png)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=9000)
    a = ap.parse_args(argv)
    out = a.output or str(Path(a.report_dir).resolve().parent / f"{Path(a.report_dir).name}-screenshot.png")
    try:
        print(screenshot(a.report_dir, out, a.width, a.height))
    except TokbenchError as exc:
        print(f"tokbench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
