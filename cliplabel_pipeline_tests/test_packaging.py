"""What ships: a wheel built from the repository carries the concept bank and the toy model, and runs the demo
from outside the checkout; the layering contracts hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_layering_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed (it is in the [dev] extra)"
    done = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_code_passes_ruff():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is not installed (it is in the [dev] extra)"
    done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_environment_outside_the_checkout_runs_the_demo(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True)
    [wheel] = wheels.glob("cliplabel_pipeline-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, cliplabel = venv / "bin" / "python", venv / "bin" / "cliplabel"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies come from this environment (nothing to download); cliplabel itself only from the wheel
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CLIPLABEL_CACHE"] = str(tmp_path / "cache")
    where = subprocess.run([python, "-c", "import cliplabel_pipeline; print(cliplabel_pipeline.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(site), where  # the installed copy, not the checkout
    done = subprocess.run([cliplabel, "demo", "--results-root", str(tmp_path / "results"), "--jobs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "labelled" in done.stdout
    assert (tmp_path / "results" / "demo-000" / "labels.jsonl").stat().st_size > 0
    bank = subprocess.run([python, "-c", "from cliplabel_pipeline.core.labelling.concepts import load_bank; "
                           "print(len(load_bank().names))"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=True).stdout
    assert int(bank) > 2000
