"""``label_backfill_schedule``: jobs with no labels, or whose model, bank or templates changed underneath them,
are requested with their own settings; a person's own labels, threshold or model are never replaced."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from unittest import mock

import dagster as dg
from hypothesis import given, settings
from hypothesis import strategies as st

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
    with write_connection(db_path, Settings().db_wait_s) as con:
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


CRON_FIELDS = st.one_of(st.sampled_from(["*", "*/5", "*/90", "1-5", "0,30", "MON-FRI", "JAN", "L", "?", "x"]),
                        st.integers(-1, 70).map(str), st.integers(1, 100).map(lambda n: f"*/{n}"))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.lists(CRON_FIELDS, min_size=3, max_size=7).map(" ".join),
                 st.sampled_from(["0 3 * * *", "@daily", "@hourly", "0 0 30 2 *", "0 0 31 4 *", "", "  ",
                                  "0 3 * * * *", "0 3 * *"])))
def test_the_backfill_cron_is_refused_at_load_exactly_when_dagster_would_refuse_or_warn_about_it(cron):
    """``CLIPLABEL_BACKFILL_CRON`` is checked where the definitions read it, by Dagster's own rules: refused in
    one line naming it when Dagster would refuse the schedule or warn that it runs more often than written;
    otherwise the schedule is built on it, with no warning."""
    import warnings

    from cliplabel_pipeline.core.settings import BadValue
    from cliplabel_pipeline.defs.loading import definitions_settings

    with mock.patch.dict(os.environ, {"CLIPLABEL_BACKFILL_CRON": cron}):
        try:
            loaded = definitions_settings()
        except BadValue as exc:
            refused = str(exc)
        else:
            refused = None
    if not cron:  # empty: the variable is not set, and the default stands
        assert refused is None and loaded.backfill_cron == Settings().backfill_cron
        return
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            built = label_backfill_schedule_at(cron)
        except dg.DagsterInvalidDefinitionError:
            built = None
    if refused is None:
        assert built is not None and built.cron_schedule == cron == loaded.backfill_cron and not said
    else:
        assert built is None or said, (cron, refused)
        shown = repr(cron if len(cron) <= 40 else cron[:40] + "...")  # a long value is shown cut, on one line
        assert refused.startswith("CLIPLABEL_BACKFILL_CRON must ") and refused.endswith(f", got {shown}")
        assert "\n" not in refused
