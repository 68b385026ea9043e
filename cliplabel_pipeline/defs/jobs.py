"""Jobs: label one job's assets; clean up low-confidence items of a job."""

import dagster as dg

from cliplabel_pipeline.core.organising.cleanup import apply_cleanup, plan_cleanup
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, as_failure
from cliplabel_pipeline.defs.assets.embeddings import concept_text_embeddings
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import DuckDBResource, ResultsRootResource

# Every per-job asset of one job, in one run (with their checks), and the concept index they read.
label_jobs_job = dg.define_asset_job(
    "label_jobs_job", selection=dg.AssetSelection.groups(JOB_GROUP) | dg.AssetSelection.assets(concept_text_embeddings),
    partitions_def=jobs_partitions)


class CleanupConfig(dg.Config):
    """Which job, below which confidence; a dry run unless ``apply``; ``purge`` deletes instead of quarantining."""

    job_id: str
    min_confidence: float = Settings().min_confidence
    apply: bool = False
    purge: bool = False


@dg.op
def quarantine_low_confidence(context: dg.OpExecutionContext, config: CleanupConfig,
                              results_root: ResultsRootResource, duckdb: DuckDBResource) -> dg.Output:
    with as_failure():
        job = results_root.job(config.job_id)
        plan = plan_cleanup(job, config.min_confidence)
        if config.apply:
            apply_cleanup(job, plan, duckdb.db_path(results_root.root), purge=config.purge)
    listing = "\n".join(f"- `{r.path}` ({r.top1}, {r.confidence:.3f})" for r in plan) or "nothing"
    action = ("deleted" if config.purge else "quarantined") if config.apply else "would go (dry run)"
    context.log.info(f"{len(plan)} items below {config.min_confidence} {action}")
    return dg.Output(len(plan), metadata={"items": len(plan), "action": action, "items_list": dg.MetadataValue.md(listing)})


@dg.job
def cleanup_job():
    """Quarantine (or purge) a job's items below a threshold; `cliplabel restore` undoes a quarantine."""
    quarantine_low_confidence()
