"""Jobs: label one job's assets; apply its reviews; clean up its flagged items, or restore them."""

import dagster as dg

from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.core import upkeep
from cliplabel_pipeline.core.labelling.filtered import split_by_confidence
from cliplabel_pipeline.core.organising.cleanup import plan_words, quarantine_plan
from cliplabel_pipeline.core.settings import Confidence, Match, Settings
from cliplabel_pipeline.core.storage.runs import RecordedRun
from cliplabel_pipeline.core.upkeep import Upkeep
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, STEP_RETRY_POLICY, CheckedConfig, as_failure
from cliplabel_pipeline.defs.assets.embeddings import concept_text_embeddings
from cliplabel_pipeline.defs.assets.filtered import job_confidence_filtered_sets
from cliplabel_pipeline.defs.assets.labels import job_label_assignments
from cliplabel_pipeline.defs.assets.reports import job_exports, job_groups, job_metrics_report
from cliplabel_pipeline.defs.assets.reviews import job_reviews
from cliplabel_pipeline.defs.cluster import LINEAGE_QUEUE, on_queue
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource

# Every per-job asset of one job, in one run (with their checks), and the concept index they read.
label_jobs_job = dg.define_asset_job(
    names.LABEL_JOBS_JOB, selection=dg.AssetSelection.groups(JOB_GROUP) | dg.AssetSelection.assets(concept_text_embeddings),
    op_retry_policy=STEP_RETRY_POLICY)


# What a job's reviews change, without encoding an image: the reviews as read, the labels of record (scored again
# from the stored embeddings, the reviews laid over them), groups, exports and report, with their checks.
apply_reviews_job = dg.define_asset_job(
    names.APPLY_REVIEWS_JOB, selection=dg.AssetSelection.assets(job_reviews).downstream(),
    op_retry_policy=STEP_RETRY_POLICY)


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
    return {"ops": {job_label_assignments.node_def.name: {"config": config}}}


class CleanupConfig(CheckedConfig):
    """Which job, below which confidence or match; a dry run unless ``apply``; ``purge`` deletes instead of
    quarantining."""

    job_id: str
    min_confidence: Confidence = Settings().min_confidence
    min_match: Match = Settings().min_match
    apply: bool = False
    purge: bool = False


# What a cleanup or restore does to a job's assets: the labels (and so their filtered sets) are changed in place,
# not made again: observed. Groups, exports and report are rebuilt from them: materialised, or observed as stale
# when they could not be rebuilt.
CHANGED_IN_PLACE = (job_label_assignments, job_confidence_filtered_sets)
REBUILT = (job_groups, job_exports, job_metrics_report)


def report_action(context: dg.OpExecutionContext, job_id: str, action: str, done: Upkeep) -> None:
    """The asset events of a cleanup or restore that changed ``done.paths`` of job ``job_id``."""
    metadata = {"action": action, "items": dg.MetadataValue.int(len(done.paths)), "by_run": context.run.run_id}
    for asset in CHANGED_IN_PLACE:
        context.log_event(dg.AssetObservation(asset_key=asset.key, partition=job_id, metadata={
            **metadata, "change": f"{len(done.paths)} items' label lines and rows {_moved(action)}"}))
    for asset in REBUILT:
        if done.stale:
            context.log_event(dg.AssetObservation(asset_key=asset.key, partition=job_id,
                                                  metadata={**metadata, "stale": done.stale}))
        else:
            context.log_event(dg.AssetMaterialization(asset_key=asset.key, partition=job_id,
                                                      metadata={**metadata, "rebuilt": "from the labels as they are now"}))


def _moved(action: str) -> str:
    return {"quarantine": "moved to quarantine", "purge": "deleted", "restore": "put back"}[action]


@dg.op(tags=on_queue(LINEAGE_QUEUE))  # it writes DuckDB: on a cluster, on the one writer's host
def quarantine_low_confidence(context: dg.OpExecutionContext, config: CleanupConfig,
                              results_root: ResultsRootResource, duckdb: DuckDBResource,
                              clip: ClipModelResource) -> dg.Output:
    """The flagged items of the job's confidence-filtered sets at the config's thresholds (masks and cut-outs):
    listed, and with ``apply`` quarantined (or purged), every output derived from the labels rebuilt."""
    with as_failure(context):
        job = results_root.job(config.job_id)
        db = duckdb.db_path(results_root.root)
        upkeep.recover(job, db, clip.settings)  # the settings: where the concept index is cached
        filtered = split_by_confidence(job.read_labels(), config.min_confidence, config.min_match)
        plan = quarantine_plan(job, filtered)
        if config.apply and plan:
            done = upkeep.cleanup(job, plan, db, clip.settings, purge=config.purge)
            report_action(context, job.id, "purge" if config.purge else "quarantine", done)
    rules = {f.path: f.rules for f in filtered.flagged}
    listing = "\n".join(f"- `{r.path}` ({r.top1}, confidence {r.confidence:.3f}, match {r.match}, "
                        f"by {'+'.join(rules[r.path])})" for r in plan) or "nothing"
    action = ("deleted" if config.purge else "quarantined") if config.apply else "would go (dry run)"
    going = [f for f in filtered.flagged if f.path in {r.path for r in plan}]
    context.log.info(f"{plan_words(going, config.min_confidence, config.min_match)} ({action})")
    return dg.Output(len(plan), metadata={"items": len(plan), "action": action, "items_list": dg.MetadataValue.md(listing)})


@dg.job(name=names.CLEANUP_JOB, op_retry_policy=STEP_RETRY_POLICY)
def cleanup_job():
    """Quarantine (or purge) a job's items below a threshold; `restore_job` undoes a quarantine."""
    quarantine_low_confidence()


class RestoreConfig(CheckedConfig):
    job_id: str


@dg.op(tags=on_queue(LINEAGE_QUEUE))  # it writes DuckDB: on a cluster, on the one writer's host
def restore_quarantined(context: dg.OpExecutionContext, config: RestoreConfig, results_root: ResultsRootResource,
                        duckdb: DuckDBResource, clip: ClipModelResource) -> dg.Output:
    """Every quarantined item of the job back in place, with its label line and rows; the outputs derived from
    the labels rebuilt."""
    with as_failure(context):
        job = results_root.job(config.job_id)
        done = upkeep.restore(job, duckdb.db_path(results_root.root), clip.settings)
    report_action(context, job.id, "restore", done)
    return dg.Output(len(done.paths), metadata={"items": len(done.paths)})


@dg.job(name=names.RESTORE_JOB, op_retry_policy=STEP_RETRY_POLICY)
def restore_job():
    """Put a job's quarantined items back, byte for byte, with their label lines and rows."""
    restore_quarantined()
