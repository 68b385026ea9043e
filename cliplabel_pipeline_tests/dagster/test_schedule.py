"""``label_backfill_schedule``: jobs with no labels or stale labels are requested; fresh ones are not."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from cliplabel_pipeline.core.labeller import current_provenance
from cliplabel_pipeline.core.store import now, write_job_labels
from cliplabel_pipeline.schedules import label_backfill_schedule
from cliplabel_pipeline.toyworld.jobs import write_toy_job


def labelled_with(db_path, job_id, prov, **changes):
    run = {**prov, **changes, "asset": "job_label_assignments", "model": "toy", "precision": "fp32",
           "started_at": now(), "finished_at": now(), "items_per_s": 1.0}
    write_job_labels(db_path, job_id, f"run-{job_id}", [], run)


def run_schedule(instance, resources):
    context = dg.build_schedule_context(instance=instance, resources=resources,
                                        scheduled_execution_time=datetime(2026, 11, 24, 3, tzinfo=timezone.utc))
    return label_backfill_schedule(context)


def test_missing_and_stale_jobs_are_requested_fresh_ones_are_not(results_root, resources, instance, db_path, toy_model):
    for job_id in ("missing", "stale-model", "stale-threshold", "fresh"):
        write_toy_job(results_root, job_id, seed=5)
    prov = current_provenance(toy_model, 3, 0.25)
    labelled_with(db_path, "stale-model", prov, model_identity="0" * 16)
    labelled_with(db_path, "stale-threshold", prov, min_confidence=0.5)
    labelled_with(db_path, "fresh", prov)
    requests = run_schedule(instance, resources)
    reasons = {r.partition_key: r.tags["cliplabel/backfill_reason"] for r in requests}
    assert reasons == {"missing": "missing", "stale-model": "stale", "stale-threshold": "stale"}
    assert set(instance.get_dynamic_partitions("jobs")) == {"missing", "stale-model", "stale-threshold"}


def test_nothing_to_backfill_is_a_skip(results_root, resources, instance, db_path, toy_model):
    write_toy_job(results_root, "fresh", seed=5)
    labelled_with(db_path, "fresh", current_provenance(toy_model, 3, 0.25))
    result = run_schedule(instance, resources)
    assert isinstance(result, dg.SkipReason) and "every job has labels" in result.skip_message
