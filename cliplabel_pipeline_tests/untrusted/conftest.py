"""Hostile job folders, built by each test: links planted where cliplabel writes or reads, forged records,
odd files. Every test runs as whoever runs the suite (root in CI containers), which is the point: root
would write anywhere a link led."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.toyworld.jobs import write_toy_job


# The searching tests (Hypothesis) run a small budget by default, within the quick loop; HYPOTHESIS_PROFILE=slow
# searches longer. Failing examples are kept outside the repository, so a rerun replays them first.
_SEARCH = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               database=DirectoryBasedExampleDatabase(os.path.join(tempfile.gettempdir(), "cliplabel-hypothesis")))
settings.register_profile("quick", max_examples=10, stateful_step_count=8, **_SEARCH)
settings.register_profile("slow", max_examples=150, stateful_step_count=30, **_SEARCH)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


def snapshot(folder: Path) -> dict[str, str]:
    """{path: sha256, or the link's target} for everything under ``folder``, never following links."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the results root holding a file that must never change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("must stay byte-identical\n")
    return folder


@pytest.fixture
def job(results_root) -> Path:
    return write_toy_job(results_root, "job", seed=5, n_objects=4)


@pytest.fixture(params=["absolute", *(pytest.param(f, marks=pytest.mark.slow) for f in ("relative", "dotdot", "link"))])
def root_form(request) -> str:
    """How ``run`` spells the results root: absolute in the quick loop; relative, through ``..`` and through a
    link too with the slow tests (each form is a run of the whole test)."""
    return request.param


@pytest.fixture
def run(results_root, toy_model, tmp_path, root_form, monkeypatch):
    """``run("job", "job")`` or ``run("cleanup", "job", "--apply")``: the CLI in-process, the results root given
    in ``root_form`` (the working folder set to match); returns its exit code."""
    from cliplabel_pipeline_tests.untrusted.promises import results_root_arg

    db = tmp_path / "lineage.duckdb"
    cwd, root = results_root_arg(results_root.parent, root_form)
    monkeypatch.chdir(cwd)

    def _run(command: str, job_id: str, *extra: str) -> int:
        args = [command, job_id, "--results-root", root, *extra]
        if command == "job":
            args += ["--model", toy_model, "--precision", "fp32"]
        if command != "export":
            args += ["--db", str(db)]
        return main(args)

    _run.db = db
    return _run
