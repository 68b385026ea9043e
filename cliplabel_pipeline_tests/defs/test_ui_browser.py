"""The report as a person sees it in the Dagster UI: the asset page rendered by headless Chromium.

Needs Chromium (Debian's `chromium` package; `.ci/run` installs it) and Playwright (the `dev` extra), which
drives that Chromium: nothing is downloaded. Set UI_SCREENSHOT=FILE to keep the screenshot (not
CLIPLABEL_-prefixed: cliplabel warns about CLIPLABEL_ variables it does not know, and other tests check that
it says nothing).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from cliplabel_pipeline.toyworld.draw import LABELS
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.daemon import REPO
from cliplabel_pipeline_tests.defs.test_assets import materialize_job

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# what a closed network needs: no background calls home, no sandbox as root, no GPU on a server
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the Dagster webserver exited early"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds:.0f}s")


def test_every_report_picture_shows_on_the_assets_page(tmp_path, results_root, resources, db_path, toy_model,
                                                       text_cache, monkeypatch):
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").sync_playwright
    write_toy_job(results_root, "many", seed=4, labels=LABELS[:14], size=(640, 480))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert materialize_job("many", resources, instance).success
    report = (results_root / "many" / "report" / "report.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert len(pictures) > 8

    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CLIPLABEL_RESULTS_ROOT": str(results_root),
           "CLIPLABEL_MODEL": toy_model, "CLIPLABEL_DB": str(db_path), "CLIPLABEL_CACHE": str(text_cache)}
    web = subprocess.Popen([Path(sys.executable).parent / "dagster-webserver", "-w", str(REPO / "workspace.yaml"),
                            "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/server_info", web)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/assets/job_metrics_report?partition=many", wait_until="networkidle")
            # Dagster's first-visit newsletter prompt may cover the page at any moment: dismissed whenever it does
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
            page.get_by_text("[Show Markdown]").first.click()
            dialog = page.get_by_role("dialog").first
            dialog.wait_for()
            page.wait_for_function("() => Array.from(document.querySelectorAll('[role=dialog] img'))"
                                   ".every(i => i.complete)", timeout=30_000)
            shown = page.evaluate("() => Array.from(document.querySelectorAll('[role=dialog] img'))"
                                  ".map(i => [i.naturalWidth, i.getBoundingClientRect().width])")
            page.screenshot(path=str(tmp_path / "report-preview.png"))
            if os.environ.get("UI_SCREENSHOT"):
                shutil.copy(tmp_path / "report-preview.png", os.environ["UI_SCREENSHOT"])
            browser.close()
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
    assert len(shown) == len(pictures), shown  # every picture of the report, none left out
    assert all(natural > 0 and drawn > 0 for natural, drawn in shown), shown  # decoded and drawn: none broken
