"""``new_jobs_sensor``: new, unchanged, half-written, changed, restart with cursor, own outputs ignored."""

from __future__ import annotations

import os
import time

import dagster as dg

from cliplabel_pipeline.defs.resources import DuckDBResource, ResultsRootResource
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.defs.sensors import AGAIN_AFTER_S, asked_again, new_jobs_sensor_every
from cliplabel_pipeline.toyworld.jobs import write_toy_job

new_jobs_sensor = new_jobs_sensor_every(Settings().sensor_interval_s)


def evaluate(instance, root, cursor=None, settle=5.0, db=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "results_root": ResultsRootResource(path=str(root), settle_seconds=settle),
        "duckdb": DuckDBResource(path=str(db) if db else None)})
    return new_jobs_sensor(context)


def age(job_dir, seconds=60):
    """Pretend the segmentation service finished writing ``seconds`` ago."""
    past = time.time() - seconds
    for dirpath, dirnames, filenames in os.walk(job_dir):
        for name in [".", *dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (past, past), follow_symlinks=False)


def test_new_finished_job_adds_its_partition_and_requests_a_run(results_root, instance):
    age(write_toy_job(results_root, "job-a", seed=1))
    result = evaluate(instance, results_root)
    assert [r.partition_key for r in result.run_requests] == ["job-a"]
    assert result.run_requests[0].run_key.startswith("job-a:")
    assert result.dynamic_partitions_requests[0].partition_keys == ["job-a"]


def test_unchanged_job_is_not_requested_again_even_after_a_restart(results_root, instance):
    age(write_toy_job(results_root, "job-a", seed=1))
    first = evaluate(instance, results_root)
    second = evaluate(instance, results_root, cursor=first.cursor)  # a new sensor process: only the cursor survives
    assert second.run_requests == [] and "no new or changed" in second.skip_reason.skip_message


def test_half_written_job_is_not_picked_up_until_it_settles(results_root, instance):
    job = write_toy_job(results_root, "job-b", seed=2)  # files just written
    result = evaluate(instance, results_root)
    assert result.run_requests == [] and "job-b: changed" in result.skip_reason.skip_message
    (results_root / "job-c" / "masks").mkdir(parents=True)  # no source.png yet
    age(job)
    result = evaluate(instance, results_root, cursor=result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["job-b"]


def test_changed_job_is_relabelled_with_a_new_run_key(results_root, instance):
    job = write_toy_job(results_root, "job-a", seed=1)
    age(job)
    first = evaluate(instance, results_root)
    (job / "objects" / "obj_00.png").write_bytes((job / "objects" / "obj_01.png").read_bytes())
    age(job)
    second = evaluate(instance, results_root, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["job-a"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_outputs_written_by_the_pipeline_do_not_count_as_a_change(results_root, instance):
    job = write_toy_job(results_root, "job-a", seed=1)
    age(job)
    first = evaluate(instance, results_root)
    (job / "labels.jsonl").write_text("{}\n")
    (job / "_cliplabel").mkdir()
    (job / "_cliplabel" / "embeddings.npy").write_bytes(b"x")
    (job / "report").mkdir()
    second = evaluate(instance, results_root, cursor=first.cursor)
    assert second.run_requests == []


def test_completion_marker_makes_a_job_ready_at_once(results_root, instance):
    write_toy_job(results_root, "job-m", seed=3)
    root = ResultsRootResource(path=str(results_root), settle_seconds=3600, completion_marker="_SUCCESS")
    context = dg.build_sensor_context(instance=instance, resources={"results_root": root, "duckdb": DuckDBResource()})
    assert new_jobs_sensor(context).run_requests == []
    (results_root / "job-m" / "_SUCCESS").touch()
    context = dg.build_sensor_context(instance=instance, resources={"results_root": root, "duckdb": DuckDBResource()})
    assert [r.partition_key for r in new_jobs_sensor(context).run_requests] == ["job-m"]


def test_one_hostile_job_never_stops_the_sensor_from_serving_the_others(results_root, instance):
    for job_id in ("good-1", "looped", "good-2"):
        write_toy_job(results_root, job_id, seed=4)
    looped = results_root / "looped"
    (looped / "objects" / "loop").symlink_to(looped / "objects" / "loop")
    (looped / "masks").rename(looped / "masks-old")
    (looped / "masks").symlink_to(looped / "masks")  # a loop where a folder should be
    (results_root / "bad\x1bname").mkdir()
    for job_dir in results_root.iterdir():
        age(job_dir)
    result = evaluate(instance, results_root)
    assert {r.partition_key for r in result.run_requests} == {"good-1", "looped", "good-2"}


def test_a_restored_job_is_looked_at_again(results_root, instance, toy_model, tmp_path):
    from cliplabel_pipeline.cli import main

    write_toy_job(results_root, "job-r", seed=6)
    age(results_root / "job-r")
    first = evaluate(instance, results_root)
    assert [r.partition_key for r in first.run_requests] == ["job-r"]
    common = ["--results-root", str(results_root), "--db", str(tmp_path / "x.duckdb")]
    assert main(["job", "job-r", "--model", toy_model, *common]) == 0
    assert main(["cleanup", "job-r", "--min-confidence", "1", "--apply", *common]) == 0
    age(results_root / "job-r")
    after_cleanup = evaluate(instance, results_root, cursor=first.cursor)
    assert [r.partition_key for r in after_cleanup.run_requests] == ["job-r"]
    assert main(["restore", "job-r", *common]) == 0
    age(results_root / "job-r")
    after_restore = evaluate(instance, results_root, cursor=after_cleanup.cursor)
    assert [r.partition_key for r in after_restore.run_requests] == ["job-r"]
    assert len({r.run_key for r in first.run_requests + after_cleanup.run_requests + after_restore.run_requests}) == 3


def test_a_changed_job_is_relabelled_with_its_own_labels_and_threshold_not_the_defaults(results_root, instance,
                                                                                      toy_model, tmp_path):
    from cliplabel_pipeline.cli import main

    db = tmp_path / "own.duckdb"
    write_toy_job(results_root, "job-own", seed=8)
    assert main(["job", "job-own", "--model", toy_model, "--results-root", str(results_root), "--db", str(db),
                 "--labels", "red star,blue circle", "--min-confidence", "0.6", "--top-k", "2"]) == 0
    age(results_root / "job-own")
    first = evaluate(instance, results_root, db=db)
    (results_root / "job-own" / "objects" / "obj_00.png").write_bytes(
        (results_root / "job-own" / "objects" / "obj_01.png").read_bytes())  # the segmentation redid an object
    age(results_root / "job-own")
    again = evaluate(instance, results_root, cursor=first.cursor, db=db)
    config = again.run_requests[0].run_config["ops"]["job_label_assignments"]["config"]
    assert config["labels"] == ["red star", "blue circle"]
    assert config["min_confidence"] == 0.6 and config["top_k"] == 2


def _failed_for_good(instance, job_id, **tags):
    """A run of ``job_id`` that failed with its retries spent, as Dagster leaves it (``dagster/will_retry``)."""
    from dagster._core.utils import make_new_run_id

    run = instance.add_run(dg.DagsterRun(job_name="label_jobs_job", run_id=make_new_run_id(),
                                         run_config={"ops": {"job_label_assignments": {"config": {"top_k": 2}}}},
                                         tags={"dagster/partition": job_id, "dagster/will_retry": "false", **tags}))
    instance.report_run_failed(run)
    return instance.get_run_record_by_id(run.run_id)


def test_a_job_whose_runs_gave_up_on_a_transient_fault_is_asked_again_a_bounded_number_of_times(instance):
    failed = _failed_for_good(instance, "job-a")
    again: dict = {}
    assert asked_again(instance, {"job-a": "fp"}, again, set(), failed.end_time + 5) == []  # not yet
    asked = asked_again(instance, {"job-a": "fp"}, again, set(), failed.end_time + AGAIN_AFTER_S[0] + 1)
    assert [(r.partition_key, r.run_key) for r in asked] == [("job-a", "job-a:fp:again1")]
    assert asked[0].run_config == failed.dagster_run.run_config  # the same choices as the run that failed
    for n in range(2, len(AGAIN_AFTER_S) + 1):  # each new run failed for good too
        failed = _failed_for_good(instance, "job-a")
        asked = asked_again(instance, {"job-a": "fp"}, again, set(), failed.end_time + AGAIN_AFTER_S[n - 1] + 1)
        assert [r.run_key for r in asked] == [f"job-a:fp:again{n}"]
    failed = _failed_for_good(instance, "job-a")
    assert asked_again(instance, {"job-a": "fp"}, again, set(), failed.end_time + AGAIN_AFTER_S[-1] + 1) == []
    # changed inputs start a new count; the relabelling run is then the latest
    later = failed.end_time + AGAIN_AFTER_S[-1] + 1
    assert [r.run_key for r in asked_again(instance, {"job-a": "fp2"}, again, set(), later)] == ["job-a:fp2:again1"]


def test_a_job_gone_or_retried_since_is_not_asked_again(instance):
    gone = _failed_for_good(instance, "job-a", **{"dagster/retry_on_asset_or_op_failure": "false"})
    failed = _failed_for_good(instance, "job-b")
    instance.add_run(dg.DagsterRun(job_name="label_jobs_job", run_id="0" * 36, tags={"dagster/partition": "job-b"}))
    later = max(gone.end_time, failed.end_time) + AGAIN_AFTER_S[-1] + 1
    assert asked_again(instance, {"job-a": "fp", "job-b": "fp"}, {}, set(), later) == []
    assert asked_again(instance, {}, {}, set(), later) == []  # a job no longer in the results root
    ask_now = _failed_for_good(instance, "job-c")
    too_late = ask_now.end_time + 2 * AGAIN_AFTER_S[-1] + 60  # e.g. the sensor stopped meanwhile: a person's turn
    assert asked_again(instance, {"job-c": "fp"}, {}, set(), too_late) == []
