"""Shared fixtures: the committed toy CLIP, toy jobs, and a per-test results root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from cliplabel_pipeline.demo import TOY_MODEL_DIR  # noqa: E402
from cliplabel_pipeline.toyworld.jobs import write_toy_job  # noqa: E402


@pytest.fixture(scope="session")
def toy_model() -> str:
    return str(TOY_MODEL_DIR)


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="session")
def labeller(toy_model, text_cache):
    """The toy model in fp32 with its own concept bank; loaded once for the whole session."""
    from cliplabel_pipeline.core.labeller import Labeller

    return Labeller.create(toy_model, device="cpu", precision="fp32", cache_dir=text_cache)


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, text_cache):
    monkeypatch.setenv("CLIPLABEL_CACHE", str(text_cache))


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
