"""Shared fixtures: the committed toy CLIP, toy jobs, and a per-test results root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from cliplabel_pipeline.toyworld.demo import TOY_MODEL_DIR  # noqa: E402
from cliplabel_pipeline.toyworld.jobs import write_toy_job  # noqa: E402


@pytest.fixture(scope="session")
def toy_model() -> str:
    return str(TOY_MODEL_DIR)


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="session")
def labeller(toy_model, text_cache):
    """The toy model in fp32 with its own concept bank; loaded once for the whole session (the fp32
    reference every other precision is compared with)."""
    from cliplabel_pipeline.core.labeller import Labeller
    from cliplabel_pipeline.core.settings import Settings

    return Labeller.load(Settings(model=toy_model, device="cpu", precision="fp32", cache_dir=text_cache))


@pytest.fixture(autouse=True)
def _as_at_run_time():
    """pytest resets warning filters around collection and each test; what the package sets once at import (Pillow's
    damaged-file warnings) is set again, so tests see what a user sees."""
    from cliplabel_pipeline.core.reading.picture import quiet_pillow

    quiet_pillow()


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, text_cache):
    monkeypatch.setenv("CLIPLABEL_CACHE", str(text_cache))
    monkeypatch.setenv("CLIPLABEL_DB_WAIT_S", "2")  # a held database fails fast in tests
    monkeypatch.setenv("CLIPLABEL_JOB_WAIT_S", "60")  # a job held by another process: waited for, not forever


@pytest.fixture
def results_root(tmp_path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    return root


@pytest.fixture
def toy_job(results_root) -> tuple[Path, str]:
    """One toy job with four known objects."""
    labels = ["red star", "blue circle", "green square", "yellow triangle"]
    write_toy_job(results_root, "job-1", seed=101, labels=labels)
    return results_root, "job-1"


@pytest.fixture(scope="session")
def fp32_reference(labeller, tmp_path_factory):
    """Ten toy jobs and the fp32 top-1 of each mask and cut-out: ``(results_root, job_ids, {job: {path: top1}})``,
    labelled once for every test that compares another precision with fp32. Sources are left out: a picture
    of four objects matches no single concept, and its top-1 is a near-tie (margins of 1e-5) any rounding flips."""
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.pipeline import label_job
    from cliplabel_pipeline.toyworld.jobs import write_toy_jobs

    root = tmp_path_factory.mktemp("agreement")
    ids = write_toy_jobs(root, 10, seed=31337, prefix="agree")
    tops = {j: {r.path: r.top1 for r in label_job(labeller, JobFolder.open(root, j)).records if r.kind != "source"}
            for j in ids}
    return root, ids, tops


def pytest_addoption(parser):
    parser.addoption("--windows-like", action="store_true",
                     help="run every test with the POSIX-only calls hidden as on Windows (windows_like.py)")


@pytest.fixture
def windows_like(monkeypatch):
    """This test sees what Windows' CPython offers (``windows_like.hide``), and cliplabel decides again by
    capability: guarded access by path (``guard_portable``), ``msvcrt`` locks, no glibc heap policy. Undone after."""
    from cliplabel_pipeline.core.encoding import heap
    from cliplabel_pipeline.core.storage import guarded
    from cliplabel_pipeline_tests.windows_like import hide

    import filelock

    from cliplabel_pipeline.core.storage import database

    # Signals stay: the tests' own helpers kill processes with them (the subprocess tests hide them too).
    hide(monkeypatch.setattr, monkeypatch.delattr, monkeypatch.setitem, signals=False)
    # filelock chose flock when it was imported; without fcntl it picks SoftFileLock (on Windows, msvcrt's)
    monkeypatch.setattr(database, "FileLock", filelock.SoftFileLock)
    backend, locks = guarded.choose_backend()
    monkeypatch.setattr(guarded, "_backend", backend)
    monkeypatch.setattr(guarded, "_locks", locks)
    heap._libc.cache_clear()
    yield
    heap._libc.cache_clear()


@pytest.fixture(autouse=True)
def _windows_like_everywhere(request):
    """``pytest --windows-like``: the whole suite in the simulated Windows mode."""
    if request.config.getoption("--windows-like"):
        request.getfixturevalue("windows_like")
