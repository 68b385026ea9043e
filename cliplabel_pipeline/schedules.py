"""``label_backfill_schedule``: relabel jobs with no labels, or labels made with another model, bank,
templates or thresholds."""


import os

import dagster as dg

from cliplabel_pipeline.assets.common import LabelingConfig
from cliplabel_pipeline.core.jobs import SOURCE_NAME
from cliplabel_pipeline.core.labeller import current_provenance
from cliplabel_pipeline.core.store import latest_label_provenance
from cliplabel_pipeline.jobs import label_jobs_job
from cliplabel_pipeline.partitions import jobs_partitions
from cliplabel_pipeline.resources import ClipModelResource, DuckDBResource, ResultsRootResource

CRON = os.environ.get("CLIPLABEL_BACKFILL_CRON", "0 3 * * *")


@dg.schedule(job=label_jobs_job, cron_schedule=CRON)
def label_backfill_schedule(context: dg.ScheduleEvaluationContext, clip: ClipModelResource,
                            results_root: ResultsRootResource, duckdb: DuckDBResource):
    defaults = LabelingConfig()
    current = current_provenance(clip.model, defaults.top_k, defaults.min_confidence)
    labelled = latest_label_provenance(duckdb.db_path(results_root.root))
    tick = context.scheduled_execution_time.isoformat()
    requests, missing_keys = [], []
    known = set(context.instance.get_dynamic_partitions(jobs_partitions.name))
    for job_id in results_root.job_ids():
        if not (results_root.root / job_id / SOURCE_NAME).is_file():
            continue
        previous = labelled.get(job_id)
        if previous is None:
            reason = "missing"
        elif any(previous[k] != v for k, v in current.items()):
            reason = "stale"
        else:
            continue
        if job_id not in known:
            missing_keys.append(job_id)
        requests.append(dg.RunRequest(partition_key=job_id, run_key=f"backfill:{job_id}:{tick}",
                                      tags={"cliplabel/backfill_reason": reason}))
    if missing_keys:
        context.instance.add_dynamic_partitions(jobs_partitions.name, missing_keys)
    return requests or dg.SkipReason("every job has labels made with the current model, bank and thresholds")
