"""The HTML report in a real browser: Debian's headless Chromium renders it from a file, offline.

Checks what a person would: the page rendered (the script ran to its end), plots are present, the
table has one row per compared tensor, no JavaScript error was raised or logged, and a screenshot
was taken (into the test's temporary folder; its path is printed). Skips, saying why, only when no ``chromium`` is installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from onnxq.debug import compare_layers, write_html
from tests.debug._models import float_model, quantized, samples, with_scale_times

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")

_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
]  # fmt: skip


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_the_page_renders_in_chromium(tmp_path: Path) -> None:
    bad = with_scale_times(quantized("cnn"), "stage1/block2/conv1/W1_scale", 50.0)
    report = compare_layers(float_model("cnn"), bad, samples("cnn"))
    page = write_html(tmp_path / "report.html", report, top=4)
    url = page.resolve().as_uri()

    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-rendered="1"' in html, "the page's script did not run to its end"
    assert 'data-js-errors="' not in html, re.search(r'data-js-errors="[^"]*"', html)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    table = re.search(r'<table class="sortable" id="tensors">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert table is not None and table.group(1).count("<tr") == len(report.tensors) == 20
    plots = html.count('<svg class="plot"') + html.count('<img class="plot"')
    assert plots == 1 + 4 + 4  # SQNR along the graph, 4 histograms, 4 error maps

    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
