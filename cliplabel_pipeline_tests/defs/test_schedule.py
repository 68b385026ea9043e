"""``label_backfill_schedule``: jobs with no labels, or whose model, bank or templates changed underneath them,
are requested with their own settings; a person's own labels, threshold or model are never replaced."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.database import write_connection
from cliplabel_pipeline.defs.schedules import label_backfill_schedule_at
from cliplabel_pipeline.toyworld.jobs import write_toy_job

label_backfill_schedule = label_backfill_schedule_at(Settings().backfill_cron)


def label_with_cli(root, db_path, job_id, model, *options):
    assert main(["job", job_id, "--results-root", str(root), "--db", str(db_path), "--model", model,
                 "--precision", "fp32", *options]) == 0


def change_run(db_path, job_id, column, value):
    """What the job was labelled with changes underneath it (as after a bank or weights update)."""
    with write_connection(db_path) as con:
        con.execute(f"UPDATE runs SET {column} = ? WHERE job_id = ?", [value, job_id])


def run_schedule(instance, resources):
    with dg.build_schedule_context(instance=instance, resources=resources,
                                   scheduled_execution_time=datetime(2026, 11, 24, 3, tzinfo=timezone.utc)) as context:
        return label_backfill_schedule(context)


def test_missing_and_stale_jobs_are_requested_fresh_ones_are_not(results_root, resources, instance, db_path, toy_model):
    for job_id in ("missing", "stale-model", "stale-bank", "fresh"):
        write_toy_job(results_root, job_id, seed=5)
    for job_id in ("stale-model", "stale-bank", "fresh"):
        label_with_cli(results_root, db_path, job_id, toy_model)
    change_run(db_path, "stale-model", "model_identity", "0" * 16)
    change_run(db_path, "stale-bank", "bank_version", "own-older")
    requests = run_schedule(instance, resources)
    reasons = {r.partition_key: r.tags["cliplabel/backfill_reason"] for r in requests}
    assert reasons == {"missing": "missing", "stale-model": "model changed", "stale-bank": "bank changed"}
    assert set(instance.get_dynamic_partitions("jobs")) == {"missing", "stale-model", "stale-bank"}


def test_a_persons_own_labels_threshold_and_model_are_never_replaced(results_root, resources, instance, db_path,
                                                                     toy_model, tmp_path):
    for job_id in ("own-labels", "own-threshold", "own-model"):
        write_toy_job(results_root, job_id, seed=5)
    label_with_cli(results_root, db_path, "own-labels", toy_model, "--labels", "red star,blue circle", "--top-k", "2")
    label_with_cli(results_root, db_path, "own-threshold", toy_model, "--min-confidence", "0.6")
    other_model = tmp_path / "other-model"
    other_model.symlink_to(toy_model, target_is_directory=True)
    label_with_cli(results_root, db_path, "own-model", str(other_model))
    result = run_schedule(instance, resources)
    assert isinstance(result, dg.SkipReason) and "every job has labels" in result.skip_message


def test_a_stale_job_is_relabelled_with_its_own_labels_and_threshold(results_root, resources, instance, db_path,
                                                                     toy_model):
    write_toy_job(results_root, "own", seed=5)
    label_with_cli(results_root, db_path, "own", toy_model, "--labels", "red star,blue circle",
                   "--min-confidence", "0.6")
    change_run(db_path, "own", "model_identity", "0" * 16)
    [request] = run_schedule(instance, resources)
    config = request.run_config["ops"]["job_label_assignments"]["config"]
    assert config["labels"] == ["red star", "blue circle"] and config["min_confidence"] == 0.6


def test_nothing_to_backfill_is_a_skip(results_root, resources, instance, db_path, toy_model):
    write_toy_job(results_root, "fresh", seed=5)
    label_with_cli(results_root, db_path, "fresh", toy_model)
    result = run_schedule(instance, resources)
    assert isinstance(result, dg.SkipReason) and "every job has labels" in result.skip_message
