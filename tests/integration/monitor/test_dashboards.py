"""The dashboards' SQL runs on a seeded store, and `driftloop report` renders every panel
in a real browser (headless Chromium, the Debian package scripts/bootstrap.sh installs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.monitor.panels import DASHBOARDS
from tests.conftest import REPO_ROOT, run_cli

PANELS = [f"{d.uid}/{p.title}" for d in DASHBOARDS for p in d.panels]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    dsn = f"chdb://{tmp_path_factory.mktemp('dash') / 'store'}"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.monitor.seed_dashboards", dsn],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dsn, json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_panel_sql_runs_and_returns_rows(seeded: tuple[str, dict[str, object]]) -> None:
    _, results = seeded
    assert set(results) == set(PANELS)
    failed = {k: v for k, v in results.items() if not isinstance(v, int) or v < 1}
    assert not failed, failed


def test_report_renders_every_panel_in_headless_chromium(
    seeded: tuple[str, dict[str, object]], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: scripts/bootstrap.sh installs the Debian package"
    dsn, _ = seeded
    page = tmp_path / "report.html"
    run_cli("report", "--model", "credit-default", "--dsn", dsn, "--html", str(page), home=tmp_path)
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'class="panel-error"' not in dom
    panels = dom.split('<div class="panel"')[1:]
    assert len(panels) == len(PANELS)
    # plotly draws each chart as <svg class="main-svg"> only when its JavaScript ran.
    assert all('class="main-svg"' in p for p in panels)
    kinds = [p.kind for d in DASHBOARDS for p in d.panels]
    drawn = [len(re.findall(r'class="trace scatter', p)) for p in panels]
    assert all(n >= 1 for n, kind in zip(drawn, kinds, strict=True) if kind == "timeseries")
