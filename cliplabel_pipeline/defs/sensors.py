"""``new_jobs_sensor``: label every job the segmentation service finishes, relabel changed ones, and ask again
for a job whose runs gave up on a transient fault (a full disk freed later than its retries lasted).
``job_reviews_sensor``: when a job's reviews change, bring what depends on them up to date."""


import json
import time
from datetime import datetime, timezone

import dagster as dg

from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.reading.items import job_readiness
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.storage.runs import latest_runs
from cliplabel_pipeline.defs.assets.common import NO_RUN_RETRY_TAG
from cliplabel_pipeline.defs.jobs import apply_reviews_job, label_jobs_job, own_choices_config
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import DuckDBResource, ResultsRootResource

# A job whose run failed for good (its step and run retries spent, ``dagster/will_retry`` false) on a fault that
# is not lasting is requested again, this long after that run ended: at most three times per input state.
AGAIN_AFTER_S = (30, 120, 480)
WILL_RETRY_TAG, PARTITION_TAG = "dagster/will_retry", "dagster/partition"  # dagster._core.storage.tags
ASKED_AGAIN_TAG = "cliplabel/asked_again"  # on a run the sensor asked again for: the how-manieth time


def new_jobs_sensor_every(seconds: int) -> dg.SensorDefinition:
    """``new_jobs_sensor``, evaluated every ``seconds`` (``Settings.sensor_interval_s``, read where the
    definitions are built)."""
    return dg.sensor(name=names.NEW_JOBS_SENSOR, job=label_jobs_job, minimum_interval_seconds=seconds,
                     default_status=dg.DefaultSensorStatus.RUNNING)(new_jobs)


def job_reviews_sensor_every(seconds: int) -> dg.SensorDefinition:
    """``job_reviews_sensor``, evaluated every ``seconds``."""
    return dg.sensor(name=names.JOB_REVIEWS_SENSOR, job=apply_reviews_job, minimum_interval_seconds=seconds,
                     default_status=dg.DefaultSensorStatus.RUNNING)(job_reviews)


def new_jobs(context: dg.SensorEvaluationContext, results_root: ResultsRootResource, duckdb: DuckDBResource):
    """Cursor: ``{job_id: input fingerprint}`` of jobs already requested, and under ``"_again"`` the runs
    asked again. A job is requested when it is ready (see ``job_readiness``) and its fingerprint differs from
    the cursor's; a job labelled before is relabelled with its own labels, templates and thresholds, never the
    defaults. A job whose latest run gave up on a transient fault is asked again (``AGAIN_AFTER_S``)."""
    seen: dict = json.loads(context.cursor) if context.cursor else {}
    again: dict[str, list] = seen.pop("_again", {})  # job_id -> [fingerprint, runs asked again for it]
    known = set(context.instance.get_dynamic_partitions(jobs_partitions.name))
    requests, new_keys, waiting, runs = [], [], [], None
    present = results_root.job_ids()
    for job_id in present:
        try:
            job = JobFolder(results_root.root, job_id)
            ready, detail = job_readiness(job, results_root.settle_seconds, time.time(), results_root.completion_marker)
            detail = f"{detail}:a{job.action_count()}" if ready else detail  # a cleanup or restore: look again
        except (CliplabelError, OSError) as exc:  # one bad job never stops the others
            context.log.warning(f"job {shown(job_id)} not looked at: {shown(exc)}")
            ready, detail = False, "unreadable"
        if not ready:
            waiting.append(f"{job_id}: {detail}")
            continue
        if seen.get(job_id) == detail:
            continue
        if job_id not in known:
            new_keys.append(job_id)
        if runs is None:  # read once, and only when some job is to be requested
            try:
                runs = latest_runs(duckdb.db_path(results_root.root))
            except CliplabelError as exc:  # a busy database: look again next tick, with the cursor unchanged
                return dg.SensorResult(skip_reason=dg.SkipReason(f"lineage not readable now ({shown(exc)})"),
                                       cursor=context.cursor)
        requests.append(dg.RunRequest(partition_key=job_id, run_key=f"{job_id}:{detail}",
                                      run_config=own_choices_config(runs.get(job_id))))
        seen[job_id] = detail
        again.pop(job_id, None)
    requests += asked_again(context.instance, {j: seen[j] for j in present if j in seen}, again,
                            {r.partition_key for r in requests}, time.time())
    cursor = json.dumps({**seen, **({"_again": again} if again else {})}, sort_keys=True)
    if not requests:
        reason = "no new or changed finished jobs" + (f"; waiting: {'; '.join(waiting[:5])}" if waiting else "")
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           dynamic_partitions_requests=[jobs_partitions.build_add_request(new_keys)] if new_keys else [])


def job_reviews(context: dg.SensorEvaluationContext, results_root: ResultsRootResource, duckdb: DuckDBResource):
    """Cursor: ``{job_id: SHA-256 of reviews.jsonl}`` of the reviews already requested. A labelled job whose
    ``reviews.jsonl`` is new or changed (``cliplabel review``, ``POST /jobs/{id}/reviews``) gets a run of
    ``apply_reviews_job`` for its partition, with its own labels and thresholds; the run key is the file's hash,
    so the same reviews never run twice."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(jobs_partitions.name))
    changed: dict[str, str] = {}
    for job_id in results_root.job_ids():
        try:
            job = JobFolder(results_root.root, job_id)
            version = job.reviews_version() if job.has_labels() else None
        except (CliplabelError, OSError) as exc:  # one bad job never stops the others
            context.log.warning(f"job {shown(job_id)} not looked at: {shown(exc)}")
            continue
        if version is not None and seen.get(job_id) != version:
            changed[job_id] = version
    if not changed:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new or changed reviews"), cursor=context.cursor)
    try:
        runs = latest_runs(duckdb.db_path(results_root.root))
    except CliplabelError as exc:  # a busy database: look again next tick, with the cursor unchanged
        return dg.SensorResult(skip_reason=dg.SkipReason(f"lineage not readable now ({shown(exc)})"),
                               cursor=context.cursor)
    requests = [dg.RunRequest(partition_key=job_id, run_key=f"reviews:{job_id}:{version}",
                              run_config=own_choices_config(runs.get(job_id)), tags={"cliplabel/trigger": "reviews"})
                for job_id, version in changed.items()]
    new_keys = [job_id for job_id in changed if job_id not in known]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen | changed, sort_keys=True),
                           dynamic_partitions_requests=[jobs_partitions.build_add_request(new_keys)] if new_keys else [])


def asked_again(instance: dg.DagsterInstance, seen: dict, again: dict, requested: set, now: float) -> list:
    """Run requests for jobs whose latest run failed for good on a fault that is not lasting, each no sooner
    than ``AGAIN_AFTER_S[n]`` after that run ended and at most ``len(AGAIN_AFTER_S)`` times per fingerprint;
    ``again`` is updated. A job gone, or one whose step said its fault is lasting, is never asked again."""
    out = []
    recent = datetime.fromtimestamp(now - 2 * AGAIN_AFTER_S[-1], tz=timezone.utc)  # none older can be due
    gave_up = instance.get_run_records(dg.RunsFilter(job_name=label_jobs_job.name, statuses=[
        dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "false"}, updated_after=recent), limit=50)
    for record in gave_up:
        run, job_id = record.dagster_run, record.dagster_run.tags.get(PARTITION_TAG)
        if job_id not in seen or job_id in requested or run.tags.get(NO_RUN_RETRY_TAG) == "false":
            continue
        fingerprint, n = again.get(job_id, [seen[job_id], 0])
        if fingerprint != seen[job_id]:
            fingerprint, n = seen[job_id], 0
        if n >= len(AGAIN_AFTER_S) or now < (record.end_time or now) + AGAIN_AFTER_S[n]:
            continue
        latest = instance.get_runs(dg.RunsFilter(job_name=label_jobs_job.name, tags={PARTITION_TAG: job_id}),
                                   limit=1)
        if latest and latest[0].run_id != run.run_id:  # retried, relabelled or asked again since
            continue
        out.append(dg.RunRequest(partition_key=job_id, run_key=f"{job_id}:{fingerprint}:again{n + 1}",
                                 run_config=run.run_config, tags={ASKED_AGAIN_TAG: str(n + 1)}))
        again[job_id] = [fingerprint, n + 1]
        requested.add(job_id)
    return out
