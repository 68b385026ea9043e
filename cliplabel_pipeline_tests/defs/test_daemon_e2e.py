"""End to end: the real Dagster daemon, a toy job dropped into the results root, labelled by the sensor's run."""

from __future__ import annotations

import pytest

import os
import shutil
import time
from pathlib import Path

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.daemon import running_daemon

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_daemon_labels_a_new_job_without_anyone_asking(tmp_path, toy_model, text_cache):
    home, root = tmp_path / "dagster_home", tmp_path / "results"
    home.mkdir()
    root.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "CLIPLABEL_RESULTS_ROOT": str(root),
           "CLIPLABEL_MODEL": toy_model, "CLIPLABEL_DB": str(tmp_path / "lineage.duckdb"),
           "CLIPLABEL_CACHE": str(text_cache), "CLIPLABEL_SETTLE_S": "1", "CLIPLABEL_SENSOR_INTERVAL_S": "2",
           "CLIPLABEL_HEARTBEAT_S": "5"}
    with running_daemon(env) as daemon:
        write_toy_job(root, "dropped-in", seed=77, labels=["purple circle", "yellow star"])
        job = root / "dropped-in"
        deadline = time.time() + 240
        while time.time() < deadline and not (job / "metrics.json").exists():
            assert daemon.poll() is None, "the daemon died"
            time.sleep(1)
        assert (job / "metrics.json").exists(), "the sensor's run did not label the job in time"
        labels = {r["path"]: r["top1"] for r in read_jsonl(job / "labels.jsonl")}
        assert labels["objects/obj_00.png"] == "purple circle" and labels["masks/obj_01.png"] == "yellow star"
        assert query(tmp_path / "lineage.duckdb", "SELECT count(*) FROM labels WHERE job_id = 'dropped-in'") == [(5,)]
