"""What every fault test of the local cluster shares: start it, drop toy jobs, wait for every job's runs to end,
and check that every job was labelled exactly once (files and DuckDB rows agree, one run's rows per job)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.toyworld.jobs import write_toy_job

REPO = Path(__file__).resolve().parents[2]
FAST = {"CLIPLABEL_SETTLE_S": "1", "CLIPLABEL_SENSOR_INTERVAL_S": "2", "CLIPLABEL_HEARTBEAT_S": "1",
        "CLIPLABEL_BATCH_SIZE": "2"}


def cluster_module():
    spec = importlib.util.spec_from_file_location("cliplabel_local_cluster", REPO / "deploy" / "local" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def local_cluster(tmp_path: Path, toy_model: str, results: Path | None = None, **kw):
    """A ``LocalCluster`` (not started) for a test; skips the test where Redis or PostgreSQL is missing."""
    local = cluster_module()
    try:
        local.find_servers()
    except local.ClusterUnavailable as exc:
        pytest.skip(f"no local cluster here: {exc}")
    return local.LocalCluster(tmp_path / "cluster", results or tmp_path / "results", toy_model, webserver=False,
                              extra_env=FAST, **kw)


def drop_jobs(root: Path, n: int, seed: int = 900, prefix: str = "job") -> list[str]:
    ids = [f"{prefix}-{i:02d}" for i in range(n)]
    for i, job_id in enumerate(ids):
        write_toy_job(root, job_id, seed=seed + i, n_objects=8, size=(384, 288))
    return ids


def runs_by_job(instance) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in instance.get_runs():
        out.setdefault(run.tags.get("dagster/partition"), []).append(run)
    return out


def wait_until_labelled(instance, ids: list[str], timeout: float) -> float:
    """Seconds until every job has a successful run and no run is queued or in progress; fails the test with
    the runs' states after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + timeout:
        runs = instance.get_runs()
        done = {r.tags.get("dagster/partition") for r in runs if r.status.value == "SUCCESS"}
        if set(ids) <= done and all(r.is_finished for r in runs):
            return time.monotonic() - t0
        time.sleep(2)
    states = {job: sorted(r.status.value for r in rs) for job, rs in runs_by_job(instance).items()}
    pytest.fail(f"not every job labelled within {timeout:g}s: {states}")


def wait_for_runs(instance, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(instance.get_runs()):
            return
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout:g}s: {sorted(r.status.value for r in instance.get_runs())}")


def assert_labelled_once(results: Path, db: Path, ids: list[str]) -> None:
    """Each job's ``labels.jsonl`` lists every item once, DuckDB has the same items once, and all of a job's
    rows come from one run, the one its ``runs`` row names."""
    for job_id in ids:
        job = results / job_id
        truth = (job / "ground_truth.csv").read_text().splitlines()[1:]
        items = {"source.png", *(line.split(",")[0] for line in truth)}
        assert sorted(r["path"] for r in read_jsonl(job / "labels.jsonl")) == sorted(items), job_id
        n = len(items)
        assert query(db, "SELECT count(*), count(DISTINCT path) FROM labels WHERE job_id = ?", [job_id]) == [(n, n)]
        assert query(db, "SELECT count(*), count(DISTINCT path) FROM assets WHERE job_id = ?", [job_id]) == [(n, n)]
        runs = query(db, "SELECT run_id FROM runs WHERE job_id = ?", [job_id])
        rows = query(db, "SELECT DISTINCT run_id FROM labels WHERE job_id = ? UNION "
                         "SELECT DISTINCT run_id FROM assets WHERE job_id = ?", [job_id, job_id])
        assert len(runs) == 1 and rows == runs, f"{job_id}: runs {runs}, rows of {rows}"
