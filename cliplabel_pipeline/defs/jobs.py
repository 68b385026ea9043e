"""Jobs: label one job's assets; clean up low-confidence items of a job."""

import dagster as dg

from cliplabel_pipeline.core import upkeep
from cliplabel_pipeline.core.organising.cleanup import plan_cleanup
from cliplabel_pipeline.core.settings import Confidence, Match, Settings
from cliplabel_pipeline.core.storage.lineage import RecordedRun
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, STEP_RETRY_POLICY, CheckedConfig, as_failure
from cliplabel_pipeline.defs.assets.embeddings import concept_text_embeddings
from cliplabel_pipeline.defs.assets.reviews import job_reviews
from cliplabel_pipeline.defs.cluster import LINEAGE_QUEUE, on_queue
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource

# Every per-job asset of one job, in one run (with their checks), and the concept index they read.
label_jobs_job = dg.define_asset_job(
    "label_jobs_job", selection=dg.AssetSelection.groups(JOB_GROUP) | dg.AssetSelection.assets(concept_text_embeddings),
    partitions_def=jobs_partitions, op_retry_policy=STEP_RETRY_POLICY)


# What a job's reviews change, without encoding an image: the reviews as read, the labels of record (scored again
# from the stored embeddings, the reviews laid over them), groups, exports and report, with their checks.
apply_reviews_job = dg.define_asset_job(
    "apply_reviews_job", selection=dg.AssetSelection.assets(job_reviews).downstream(),
    partitions_def=jobs_partitions, op_retry_policy=STEP_RETRY_POLICY)


def own_choices_config(previous: RecordedRun | None) -> dict:
    """Run config that relabels a job with its own labels, templates, top-k and threshold (those recorded with
    its last run in DuckDB); the defaults for a job never labelled. The sensors and the schedule use it."""
    if previous is None:
        return {}
    bank = previous.bank
    config = {"top_k": previous.top_k, "min_confidence": previous.min_confidence, "labels": list(bank.labels),
              "labels_file": bank.labels_file, "templates_file": bank.templates_file}
    if previous.min_match is not None:
        config["min_match"] = previous.min_match
    return {"ops": {"job_label_assignments": {"config": config}}}


class CleanupConfig(CheckedConfig):
    """Which job, below which confidence or match; a dry run unless ``apply``; ``purge`` deletes instead of
    quarantining."""

    job_id: str
    min_confidence: Confidence = Settings().min_confidence
    min_match: Match = Settings().min_match
    apply: bool = False
    purge: bool = False


# What a cleanup or restore changes: recorded against these assets of the job's partition.
CHANGED_ASSETS = ("job_label_assignments", "job_groups", "job_exports", "job_metrics_report")


def _record_against_assets(context: dg.OpExecutionContext, job_id: str, action: str, done) -> None:
    metadata = {"action": action, "items": len(done.paths),
                "outputs": "stale: " + done.stale if done.stale else "rebuilt"}
    for key in CHANGED_ASSETS:
        context.log_event(dg.AssetMaterialization(asset_key=key, partition=job_id, metadata=metadata))


@dg.op(tags=on_queue(LINEAGE_QUEUE))  # it writes DuckDB: on a cluster, on the one writer's host
def quarantine_low_confidence(context: dg.OpExecutionContext, config: CleanupConfig,
                              results_root: ResultsRootResource, duckdb: DuckDBResource,
                              clip: ClipModelResource) -> dg.Output:
    with as_failure(context):
        job = results_root.job(config.job_id)
        db = duckdb.db_path(results_root.root)
        upkeep.recover(job, db, clip.settings)  # the settings: where the concept index is cached
        plan = plan_cleanup(job, config.min_confidence, config.min_match)
        if config.apply and plan:
            done = upkeep.cleanup(job, plan, db, clip.settings, purge=config.purge)
            _record_against_assets(context, job.id, "purge" if config.purge else "quarantine", done)
    listing = "\n".join(f"- `{r.path}` ({r.top1}, confidence {r.confidence:.3f}, match {r.match})"
                        for r in plan) or "nothing"
    action = ("deleted" if config.purge else "quarantined") if config.apply else "would go (dry run)"
    context.log.info(f"{len(plan)} items below confidence {config.min_confidence} or match {config.min_match} "
                     f"{action}")
    return dg.Output(len(plan), metadata={"items": len(plan), "action": action, "items_list": dg.MetadataValue.md(listing)})


@dg.job(op_retry_policy=STEP_RETRY_POLICY)
def cleanup_job():
    """Quarantine (or purge) a job's items below a threshold; `restore_job` undoes a quarantine."""
    quarantine_low_confidence()


class RestoreConfig(CheckedConfig):
    job_id: str


@dg.op(tags=on_queue(LINEAGE_QUEUE))  # it writes DuckDB: on a cluster, on the one writer's host
def restore_quarantined(context: dg.OpExecutionContext, config: RestoreConfig, results_root: ResultsRootResource,
                        duckdb: DuckDBResource, clip: ClipModelResource) -> dg.Output:
    with as_failure(context):
        job = results_root.job(config.job_id)
        done = upkeep.restore(job, duckdb.db_path(results_root.root), clip.settings)
    _record_against_assets(context, job.id, "restore", done)
    return dg.Output(len(done.paths), metadata={"items": len(done.paths)})


@dg.job(op_retry_policy=STEP_RETRY_POLICY)
def restore_job():
    """Put a job's quarantined items back, byte for byte, with their label lines and rows."""
    restore_quarantined()
