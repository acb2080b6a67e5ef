"""Render the report in headless Chromium, offline, and check a person would see something.

Skipped when no Chromium is installed (`apt-get install -y chromium fonts-dejavu-core` on Debian).
The screenshot is left in the test's tmp folder; set ARZAN_REPORT_SHOT=path.png to keep a copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib import image

from arzan.report import build_report
from tests.test_report import runs  # noqa: F401  (fixture)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def screenshot(html: Path, png: Path, profile: Path, width: int = 1280, height: int = 2400) -> None:
    exe = browser()
    if exe is None:
        pytest.skip("no chromium on PATH: `apt-get install -y chromium` (Debian) to run the rendering test")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
           f"--window-size={width},{height}", html.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"


def test_report_renders_in_chromium(runs, tmp_path):  # noqa: F811
    html = build_report(runs, tmp_path / "report.html")
    png = tmp_path / "report.png"
    screenshot(html, png, tmp_path / "profile")
    pixels = image.imread(png)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    assert float(pixels.std()) > 0.05, "the screenshot is (nearly) blank"
    rows_with_ink = (pixels.min(axis=(1, 2)) < 0.5).mean()
    assert rows_with_ink > 0.3, f"only {rows_with_ink:.0%} of the page rows carry any dark pixel"
    if os.environ.get("ARZAN_REPORT_SHOT"):
        shutil.copy(png, os.environ["ARZAN_REPORT_SHOT"])
