"""Run config keeps the settings' bounds: a value out of them fails the run at the step's start, with one line
naming the field, and the step is not retried (the same config would fail again)."""

from __future__ import annotations

import dagster as dg
import pytest

from cliplabel_pipeline.defs.jobs import cleanup_job
from cliplabel_pipeline_tests.defs.test_assets import ASSETS, JOB_SELECTION


def _failure(result) -> tuple[str, str]:
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_key, failure.step_failure_data.error.message


@pytest.mark.parametrize("config, line", [
    ({"top_k": 0, "min_confidence": 5.0},
     "top_k must be between 1 and 100, got 0; min_confidence must be between 0 and 1, got 5"),
    ({"batch_size": 0, "min_match": -0.5},
     "batch_size must be between 1 and 1024, got 0; min_match must be between 0 and 1, got -0.5"),
])
def test_labelling_run_config_out_of_bounds_fails_the_step_with_one_line(toy_job, resources, instance, config,
                                                                         line):
    _, job_id = toy_job
    instance.add_dynamic_partitions("jobs", [job_id])
    result = dg.materialize(ASSETS, partition_key=job_id, resources=resources, instance=instance,
                            selection=JOB_SELECTION, run_config={"ops": {"job_label_assignments": {"config": config}}},
                            raise_on_error=False)
    step, message = _failure(result)
    assert step == "job_label_assignments"
    assert message.splitlines()[0].endswith(f"run config: {line}") and "ValidationError" not in message
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == []


@pytest.mark.parametrize("field, value, line", [
    ("min_confidence", 1.5, "min_confidence must be between 0 and 1, got 1.5"),
    ("min_match", -1.0, "min_match must be between 0 and 1, got -1"),
])
def test_cleanup_run_config_out_of_bounds_fails_before_anything_moves(toy_job, resources, instance, field, value,
                                                                       line):
    root, job_id = toy_job
    config = {"ops": {"quarantine_low_confidence": {"config": {"job_id": job_id, field: value, "apply": True}}}}
    result = cleanup_job.execute_in_process(run_config=config, instance=instance, resources=resources,
                                            raise_on_error=False)
    step, message = _failure(result)
    assert step == "quarantine_low_confidence" and f"run config: {line}" in message
    assert not (root / job_id / "quarantine").exists()
