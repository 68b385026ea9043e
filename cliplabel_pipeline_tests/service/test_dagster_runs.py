"""With a Dagster instance configured, a job posted to the service runs there: partition, run, lineage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from cliplabel_pipeline.definitions import defs
from cliplabel_pipeline.service import dagster_runs
from cliplabel_pipeline_tests.service.conftest import RunningServer, service_settings, wait_done

REPO = Path(__file__).resolve().parents[2]


def test_the_names_the_service_launches_by_are_those_of_the_definitions():
    job = defs.resolve_job_def(dagster_runs.LABEL_JOB)
    assert job.partitions_def.name == dagster_runs.PARTITIONS
    assert dagster_runs.LABEL_STEP in {n.name for n in job.graph.node_defs}


@pytest.mark.slow
def test_a_job_posted_to_the_service_is_labelled_by_a_run_on_the_instance(tmp_path, monkeypatch, toy_model,
                                                                          text_cache):
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    root = tmp_path / "results"
    write_toy_job(root, "via-dagster", seed=4)
    for name, value in {"DAGSTER_HOME": str(home), "CLIPLABEL_MODEL": toy_model, "CLIPLABEL_PRECISION": "fp32",
                        "CLIPLABEL_DEVICE": "cpu"}.items():
        monkeypatch.setenv(name, value)
    settings = service_settings(root, toy_model, text_cache, service_runs="auto")
    with RunningServer(settings) as server, server.client() as client:
        accepted = client.post("/classify/job/via-dagster?top_k=2")
        assert accepted.status_code == 202, accepted.text
        done = wait_done(client, "via-dagster", timeout=300)
    assert done["state"] == "done", done
    assert done["counts"]["labelled"] == 9 and "labels.jsonl" in {f["path"] for f in done["files"]}
    with DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(dagster_runs.PARTITIONS) == ["via-dagster"]
        run = instance.get_run_by_id(done["run_id"])
        assert run.status == DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == "via-dagster"
