"""The executor chosen by configuration: in process by default; on Celery, CLIP steps on the `clip` queue,
DuckDB writes on the `lineage` queue, rows spooled beside the job and ingested by `job_lineage_rows`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.defs.assets.lineage import job_lineage_rows
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource
from cliplabel_pipeline_tests.defs.test_assets import ASSETS, JOB_SELECTION


def test_the_default_set_up_runs_each_run_in_one_process_without_an_ingest_step():
    from cliplabel_pipeline.definitions import defs

    assert defs.resolve_job_def("label_jobs_job").executor_def is dg.in_process_executor
    assert "job_lineage_rows" not in {k.to_user_string() for k in defs.resolve_all_asset_keys()}


CELERY_DEFINITIONS = """
import json
from cliplabel_pipeline.definitions import defs
from cliplabel_pipeline.defs.celery_app import app
job = defs.resolve_job_def("label_jobs_job")
print(json.dumps({
    "executor": job.executor_def.name,
    "queues": {n.name: n.definition.tags.get("dagster-celery/queue", "dagster") for n in job.graph.node_dict.values()},
    "cleanup": defs.resolve_job_def("cleanup_job").graph.node_dict["quarantine_low_confidence"].definition.tags,
    "worker": {"broker": app.conf.broker_url, "acks_late": app.conf.task_acks_late,
               "redeliver_s": app.conf.broker_transport_options["visibility_timeout"]},
}))
"""


def test_celery_chosen_by_configuration_sends_clip_steps_and_duckdb_writes_to_their_queues():
    pytest.importorskip("dagster_celery", reason="the `cluster` extra is not installed")
    env = {**os.environ, "CLIPLABEL_EXECUTOR": "celery", "CLIPLABEL_BROKER": "redis://10.0.0.7:6379/2",
           "CLIPLABEL_REDELIVER_S": "45"}
    out = subprocess.run([sys.executable, "-c", CELERY_DEFINITIONS], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["executor"] == "celery"
    queues = seen["queues"]
    assert queues["job_image_embeddings"] == queues["concept_text_embeddings"] == "clip"
    assert queues["job_lineage_rows"] == "lineage" and seen["cleanup"] == {"dagster-celery/queue": "lineage"}
    assert {q for name, q in queues.items() if name not in ("job_image_embeddings", "concept_text_embeddings",
                                                               "job_lineage_rows")} == {"dagster"}
    # what a worker started with the same variables runs with: the same broker; a lost step is redelivered
    assert seen["worker"] == {"broker": "redis://10.0.0.7:6379/2", "acks_late": True, "redeliver_s": 45.0}


def test_spooled_rows_reach_duckdb_through_the_ingest_step_once_per_item_however_often_it_runs(
        toy_job, resources, instance, db_path):
    root, job_id = toy_job
    spooling = {**resources, "duckdb": DuckDBResource(path=str(db_path), spool_rows=True)}
    instance.add_dynamic_partitions("jobs", [job_id])
    labelled = dg.materialize([*ASSETS, job_lineage_rows], partition_key=job_id, resources=spooling,
                              instance=instance, selection=JOB_SELECTION)
    assert labelled.success
    assert (root / job_id / "_cliplabel" / "lineage_rows.json").is_file()
    again = dg.materialize([*ASSETS, job_lineage_rows], partition_key=job_id, resources=spooling, instance=instance,
                           selection=dg.AssetSelection.assets(job_lineage_rows))  # the ingest step retried
    assert again.success
    assert query(db_path, "SELECT count(*), count(DISTINCT path) FROM labels") == [(9, 9)]
    assert query(db_path, "SELECT run_id FROM runs") == [(labelled.run_id,)]
    meta = again.asset_materializations_for_node("job_lineage_rows")[0].metadata
    assert meta["labels"].value == 9 and meta["labelled_in_run"].value == labelled.run_id


def test_steps_in_one_worker_process_share_one_loaded_model(toy_model, text_cache):
    first = ClipModelResource(model=toy_model, device="cpu", precision="fp32", cache_dir=str(text_cache))
    second = ClipModelResource(model=toy_model, device="cpu", precision="fp32", cache_dir=str(text_cache))
    assert first.labeller().encoder is second.labeller().encoder


def _instance_settings(yaml_path):
    import shutil
    import tempfile

    from dagster._core.instance.config import dagster_instance_config

    with tempfile.TemporaryDirectory() as home:
        shutil.copy(yaml_path, os.path.join(home, "dagster.yaml"))
        return dagster_instance_config(home)[0]


def test_the_cluster_instance_retries_failed_runs_ends_stuck_ones_and_runs_one_run_per_job():
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    cfg = _instance_settings(repo / "deploy" / "dagster.yaml")  # validated against the installed Dagster
    assert cfg["run_retries"] == {"enabled": True, "max_retries": 3}
    monitoring = cfg["run_monitoring"]
    assert monitoring["enabled"] and monitoring["start_timeout_seconds"] <= 120
    assert monitoring["poll_interval_seconds"] <= 30 and monitoring["max_resume_run_attempts"] == 0
    one_per_job = {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert one_per_job in cfg["run_coordinator"]["config"]["tag_concurrency_limits"]
    # the Helm values carry the same settings
    values = next(yaml.safe_load_all((repo / "deploy" / "kubernetes" / "values.yaml").read_text()))
    daemon = values["dagsterDaemon"]
    assert daemon["runRetries"] == {"enabled": True, "maxRetries": 3}
    assert daemon["runMonitoring"] == {"enabled": True, "startTimeoutSeconds": monitoring["start_timeout_seconds"],
                                       "pollIntervalSeconds": monitoring["poll_interval_seconds"]}
    assert daemon["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"] == [one_per_job]


def test_the_run_monitor_is_told_a_dead_run_worker_from_a_living_one(instance):
    from dagster._core.events import EngineEventData
    from dagster._core.launcher import WorkerStatus

    from cliplabel_pipeline.defs.run_launcher import LocalRunLauncher

    launcher = LocalRunLauncher()
    launcher.register_instance(instance)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid, expected in ((os.getpid(), WorkerStatus.RUNNING), (dead.pid, WorkerStatus.FAILED)):
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # no run worker yet
        instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
        assert launcher.check_run_worker_health(run).status == expected


def test_a_step_whose_job_is_gone_fails_once_saying_so_and_its_run_is_not_retried(resources, instance):
    from cliplabel_pipeline.defs.jobs import label_jobs_job  # with its step retry policy

    instance.add_dynamic_partitions("jobs", ["gone"])
    job = dg.Definitions(assets=ASSETS, jobs=[label_jobs_job], resources=resources).resolve_job_def("label_jobs_job")
    result = job.execute_in_process(partition_key="gone", instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    # each step that opens the job (its images, its reviews) fails once, saying so
    assert sorted(f.step_key for f in failures) == ["job_image_embeddings", "job_reviews"]
    assert all("not retried: the job is gone" in f.step_failure_data.error.message for f in failures)
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert instance.get_run_by_id(result.run_id).tags["dagster/retry_on_asset_or_op_failure"] == "false"


def test_a_worker_process_opens_one_dagster_instance_for_all_its_steps(tmp_path):
    """A Dagster instance opened per step left its SQLAlchemy dialects behind (memoised by SQLAlchemy's PostgreSQL
    dialect), so a worker's memory grew for hundreds of steps; the step task keeps the one it opened."""
    pytest.importorskip("dagster_celery")
    from cliplabel_pipeline.defs.step_task import StepTask

    task = StepTask()
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "one")) as one, \
            dg.instance_for_test(temp_dir=str(tmp_path / "two")) as two:
        first = task.instance_for(one.get_ref())
        assert task.instance_for(one.get_ref()) is first  # the next step: the same instance
        other = task.instance_for(two.get_ref())  # another deployment's steps: its own
        assert other is not first and other.root_directory == two.root_directory
        task.close_instance()  # the worker process ends
        assert task.instance_for(two.get_ref()) is not other
        task.close_instance()
