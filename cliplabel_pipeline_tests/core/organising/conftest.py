"""A labelled toy job with masks, cut-outs and a skipped item, for the exports opened in their real clients."""

from __future__ import annotations

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.toyworld.jobs import write_toy_job

LABELS = ["red star", "blue circle", "green square", "yellow triangle"]


def label_toy_job(root, db, toy_model, job_id="job-1", seed=101):
    job = write_toy_job(root, job_id, seed=seed, labels=LABELS)
    (job / "objects" / "broken.png").write_bytes(b"not an image at all")  # a skipped item
    assert main(["job", job_id, "--results-root", str(root), "--model", toy_model, "--precision", "fp32",
                 "--db", str(db)]) == 0
    return job


@pytest.fixture(scope="module")
def shared_job(tmp_path_factory, toy_model, text_cache):
    """One labelled job for tests that only read it: ``(results_root, job_id, db)``."""
    import os

    os.environ["CLIPLABEL_CACHE"] = str(text_cache)
    root = tmp_path_factory.mktemp("interop") / "results"
    root.mkdir()
    db = root.parent / "lineage.duckdb"
    label_toy_job(root, db, toy_model)
    return root, "job-1", db


@pytest.fixture
def own_job(results_root, toy_model, tmp_path):
    """A labelled job of this test's own, to change: ``(results_root, job_id, db)``."""
    db = tmp_path / "lineage.duckdb"
    label_toy_job(results_root, db, toy_model)
    return results_root, "job-1", db


def export(job, fmt, out, *extra):
    root, job_id, _ = job
    assert main(["export", job_id, "--results-root", str(root), "--format", fmt, "-o", str(out), *extra]) == 0
    return out
