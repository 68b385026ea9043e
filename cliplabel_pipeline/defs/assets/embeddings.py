"""The concept bank's text embeddings, and the image embeddings of each job."""

from collections.abc import Iterator

import dagster as dg

from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.pipeline import embed_job
from cliplabel_pipeline.core.values import Embedded
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, LabelingConfig, as_failure, heartbeat, path_md
from cliplabel_pipeline.defs.checks import EMBEDDING_CHECKS, EMBEDDING_CHECK_SPECS
from cliplabel_pipeline.defs.cluster import CLIP_QUEUE, on_queue
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ClipModelResource, ResultsRootResource


@dg.asset(kinds={"pytorch", "numpy"}, group_name="concepts", io_manager_key="concept_index_io",
          op_tags=on_queue(CLIP_QUEUE))
def concept_text_embeddings(context: dg.AssetExecutionContext, clip: ClipModelResource) -> dg.Output[ConceptIndex]:
    """The concept bank's text embeddings (mean over templates): built once per model, precision, templates
    and concept list, then loaded from the on-disk cache. Every labelling run materialises it."""
    with as_failure(context), heartbeat(context, clip.settings.heartbeat_s):
        index = clip.concept_index()
    return dg.Output(index, metadata={
        "concepts": dg.MetadataValue.int(len(index.names)),
        "templates": dg.MetadataValue.int(len(index.bank.templates)),
        "bank_version": index.bank.version,
        "model_identity": index.model_identity, "text_precision": index.text_precision,
        "cache_hit": dg.MetadataValue.bool(index.cache_hit),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"pytorch", "numpy"}, group_name=JOB_GROUP, pool="clip_model",
          io_manager_key="job_folder_io", op_tags=on_queue(CLIP_QUEUE),
          check_specs=EMBEDDING_CHECK_SPECS)
def job_image_embeddings(context: dg.AssetExecutionContext, config: LabelingConfig, clip: ClipModelResource,
                         results_root: ResultsRootResource) -> Iterator[dg.Output[Embedded] | dg.AssetCheckResult]:
    """CLIP image embeddings of every readable item of the job; unreadable ones recorded with a reason. Its
    checks (finite, unit norm, the model's width) block the labels when they fail."""
    with as_failure(context), heartbeat(context, clip.settings.heartbeat_s):
        job = results_root.job(context.partition_key)
        labeller = clip.labeller()
        embedded = embed_job(labeller, job, config.label_settings())
    yield dg.Output(embedded, metadata={
        "items": dg.MetadataValue.int(len(embedded.items)),
        "skipped": dg.MetadataValue.int(len(embedded.skipped)),
        "skipped_reasons": dg.MetadataValue.md(
            "\n".join(f"- `{s.path}`: {s.reason}" for s in embedded.skipped) or "none"),
        "dimension": dg.MetadataValue.int(int(embedded.embeddings.shape[1])),
        "items_per_s": dg.MetadataValue.float(round(embedded.items_per_second, 2)),
        "model": embedded.encoder.model, "precision": embedded.encoder.precision, "device": embedded.encoder.device,
        "embeddings": path_md(job.embeddings_npy),
    })
    width = int(labeller.index.text_emb.shape[1])
    for check in EMBEDDING_CHECKS.values():
        yield check(job.id, embedded, width)
