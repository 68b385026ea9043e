"""What ships: a wheel built from the repository carries the concept bank and the toy model, and runs the demo
from outside the checkout; the layering contracts hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_layering_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed (it is in the [dev] extra)"
    done = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_runs_the_demo(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True)
    [wheel] = wheels.glob("cliplabel_pipeline-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    env = {**os.environ, "PYTHONPATH": str(site), "CLIPLABEL_CACHE": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "import cliplabel_pipeline; print(cliplabel_pipeline.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    done = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "demo", "--results-root",
                           str(tmp_path / "results"), "--jobs", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "demo-000: 9 labelled" in done.stdout or "labelled" in done.stdout
    assert (tmp_path / "results" / "demo-000" / "labels.jsonl").stat().st_size > 0
    bank = subprocess.run([sys.executable, "-c", "from cliplabel_pipeline.core.labelling.concepts import load_bank; "
                           "print(len(load_bank().names))"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=True).stdout
    assert int(bank) > 2000
