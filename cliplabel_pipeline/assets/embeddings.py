"""Text embeddings of the concept bank, and image embeddings per job."""


import dagster as dg

from cliplabel_pipeline.assets.common import JOB_GROUP, LabelingConfig, as_failure, heartbeat
from cliplabel_pipeline.core.artifacts import work_dir
from cliplabel_pipeline.core.concepts import text_cache_path
from cliplabel_pipeline.core.jobs import job_dir
from cliplabel_pipeline.core.stages import embed_stage
from cliplabel_pipeline.core.store import now, write_job_assets
from cliplabel_pipeline.partitions import jobs_partitions
from cliplabel_pipeline.resources import ClipModelResource, DuckDBResource, ResultsRootResource


@dg.asset(kinds={"pytorch", "numpy"}, group_name="concepts")
def concept_text_embeddings(context: dg.AssetExecutionContext, clip: ClipModelResource) -> dg.MaterializeResult:
    """The concept bank's text embeddings (mean over templates), computed once and cached on disk."""
    with as_failure(), heartbeat(context):
        labeller = clip.labeller()
    h, bank = labeller.handle, labeller.bank
    return dg.MaterializeResult(metadata={
        "concepts": dg.MetadataValue.int(len(bank.names)),
        "templates": dg.MetadataValue.int(len(bank.templates)),
        "bank_version": bank.version,
        "model": h.name, "precision": h.precision,
        "cache_hit": dg.MetadataValue.bool(labeller.text_cache_hit),
        "cache_file": dg.MetadataValue.path(str(text_cache_path(h, bank, clip.cache_dir))),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"pytorch", "numpy"}, group_name=JOB_GROUP, pool="clip_model",
          deps=[concept_text_embeddings])
def job_image_embeddings(context: dg.AssetExecutionContext, config: LabelingConfig, clip: ClipModelResource,
                         results_root: ResultsRootResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """CLIP image embeddings of every readable item of the job; unreadable ones recorded with a reason."""
    job_id = context.partition_key
    with as_failure(), heartbeat(context):
        folder = job_dir(results_root.root, job_id)
        labeller = clip.labeller(batch_size=config.batch_size)
        embedded = embed_stage(labeller, folder, job_id)
    write_job_assets(duckdb.db_path(results_root.root), job_id, context.run_id, folder, embedded.meta, embedded.skipped)
    return dg.MaterializeResult(metadata={
        "items": dg.MetadataValue.int(len(embedded.meta)),
        "skipped": dg.MetadataValue.int(len(embedded.skipped)),
        "skipped_reasons": dg.MetadataValue.md(
            "\n".join(f"- `{s['path']}`: {s['reason']}" for s in embedded.skipped) or "none"),
        "dimension": dg.MetadataValue.int(int(embedded.embeddings.shape[1])),
        "items_per_s": dg.MetadataValue.float(round(embedded.items_per_second, 2)),
        "model": labeller.handle.name, "precision": labeller.handle.precision, "device": labeller.handle.device,
        "embeddings": dg.MetadataValue.path(str(work_dir(folder) / "embeddings.npy")),
        "finished": now().isoformat(timespec="seconds"),
    })
