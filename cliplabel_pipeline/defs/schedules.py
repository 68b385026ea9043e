"""``label_backfill_schedule``: label jobs that have no labels, and relabel jobs whose model, bank or
templates changed underneath them, each with the labels, templates and thresholds it was labelled with."""

import dagster as dg

from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.core.freshness import relabel_reason
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.storage.runs import latest_runs
from cliplabel_pipeline.defs.jobs import label_jobs_job, own_choices_config
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource


def label_backfill_schedule_at(cron: str) -> dg.ScheduleDefinition:
    """``label_backfill_schedule`` on ``cron`` (``Settings.backfill_cron``, read where the definitions are built)."""
    return dg.schedule(name=names.LABEL_BACKFILL_SCHEDULE, job=label_jobs_job, cron_schedule=cron)(label_backfill)


def label_backfill(context: dg.ScheduleEvaluationContext, clip: ClipModelResource,
                            results_root: ResultsRootResource, duckdb: DuckDBResource):
    runs = latest_runs(duckdb.db_path(results_root.root))
    tick = context.scheduled_execution_time.isoformat()
    requests, missing_keys = [], []
    known = set(context.instance.get_dynamic_partitions(jobs_partitions.name))
    for job_id in results_root.job_ids():
        try:
            if not JobFolder(results_root.root, job_id).is_file(SOURCE_NAME):
                continue
        except CliplabelError as exc:  # one bad job never stops the others
            context.log.warning(f"job {shown(job_id)} not looked at: {shown(exc)}")
            continue
        reason = relabel_reason(runs.get(job_id), clip.settings.model)
        if reason is None:
            continue
        if job_id not in known:
            missing_keys.append(job_id)
        requests.append(dg.RunRequest(partition_key=job_id, run_key=f"backfill:{job_id}:{tick}",
                                      run_config=own_choices_config(runs.get(job_id)),
                                      tags={"cliplabel/backfill_reason": reason}))
    if missing_keys:
        context.instance.add_dynamic_partitions(jobs_partitions.name, missing_keys)
    return requests or dg.SkipReason("every job has labels made with its model, bank and templates as they are now")
