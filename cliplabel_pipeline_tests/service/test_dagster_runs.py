"""With a Dagster instance configured, a job posted to the service runs there: partition, run, lineage."""

from __future__ import annotations

import os
import shutil

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.definitions import defs
from cliplabel_pipeline_tests.daemon import REPO, running_daemon
from cliplabel_pipeline_tests.service.conftest import RunningServer, service_settings, wait_done

def test_the_names_the_service_launches_by_are_those_of_the_definitions():
    job = defs.resolve_job_def(names.LABEL_JOBS_JOB)
    assert job.partitions_def.name == names.JOBS_PARTITIONS
    assert names.JOB_LABEL_ASSIGNMENTS in {n.name for n in job.graph.node_defs}


@pytest.mark.slow
def test_a_job_posted_to_the_service_is_labelled_by_a_run_on_the_instance(tmp_path, monkeypatch, toy_model,
                                                                          text_cache):
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    home, root, db = tmp_path / "dagster_home", tmp_path / "results", tmp_path / "lineage.duckdb"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")  # a run queue, served by the daemon
    write_toy_job(root, "via-dagster", seed=4)
    env = {"DAGSTER_HOME": str(home), "CLIPLABEL_RESULTS_ROOT": str(root), "CLIPLABEL_MODEL": toy_model,
           "CLIPLABEL_DB": str(db), "CLIPLABEL_CACHE": str(text_cache), "CLIPLABEL_PRECISION": "fp32",
           "CLIPLABEL_SETTLE_S": "3600"}  # the sensor leaves the job alone: the service asks for it
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.get() as instance:  # the instance's storage made once, before three processes open it
        instance.get_runs(limit=1)
    with running_daemon(dict(os.environ)):
        settings = service_settings(root, toy_model, text_cache, service_runs="auto", db=db)
        with RunningServer(settings) as server, server.client() as client:
            accepted = client.post("/classify/job/via-dagster?top_k=2")
            assert accepted.status_code == 202, accepted.text
            again = client.post("/classify/job/via-dagster")
            assert again.status_code == 409  # queued on the instance: not launched twice
            done = wait_done(client, "via-dagster", timeout=300)
    assert done["state"] == "done", done
    assert done["counts"]["labelled"] == 9 and "labels.jsonl" in {f["path"] for f in done["files"]}
    with DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(names.JOBS_PARTITIONS) == ["via-dagster"]
        run = instance.get_run_by_id(done["run_id"])
        assert run.status == DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == "via-dagster"
    assert query(db, "SELECT count(*) FROM labels WHERE job_id = 'via-dagster'") == [(9,)]
