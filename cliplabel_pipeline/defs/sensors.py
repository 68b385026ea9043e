"""``new_jobs_sensor``: label every job the segmentation service finishes, and relabel changed ones.
``job_reviews_sensor``: when a job's reviews change, bring what depends on them up to date."""


import json
import time

import dagster as dg

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.reading.items import job_readiness
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.storage.lineage import latest_runs
from cliplabel_pipeline.defs.jobs import apply_reviews_job, label_jobs_job, own_choices_config
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import DuckDBResource, ResultsRootResource

INTERVAL_S = Settings.from_env().sensor_interval_s


@dg.sensor(job=label_jobs_job, minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING)
def new_jobs_sensor(context: dg.SensorEvaluationContext, results_root: ResultsRootResource, duckdb: DuckDBResource):
    """Cursor: ``{job_id: input fingerprint}`` of jobs already requested. A job is requested when it is
    ready (see ``job_readiness``) and its fingerprint differs from the cursor's; a job labelled before is
    relabelled with its own labels, templates and thresholds, never the defaults."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(jobs_partitions.name))
    requests, new_keys, waiting, runs = [], [], [], None
    for job_id in results_root.job_ids():
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
    cursor = json.dumps(seen, sort_keys=True)
    if not requests:
        reason = "no new or changed finished jobs" + (f"; waiting: {'; '.join(waiting[:5])}" if waiting else "")
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           dynamic_partitions_requests=[jobs_partitions.build_add_request(new_keys)] if new_keys else [])


@dg.sensor(job=apply_reviews_job, minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING)
def job_reviews_sensor(context: dg.SensorEvaluationContext, results_root: ResultsRootResource,
                       duckdb: DuckDBResource):
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
