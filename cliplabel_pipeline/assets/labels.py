"""Top-k labels per item, and the split into confident and low-confidence items."""

import dagster as dg

from cliplabel_pipeline.assets.common import JOB_GROUP, LabelingConfig, as_failure, heartbeat, histogram_md
from cliplabel_pipeline.assets.embeddings import concept_text_embeddings, job_image_embeddings
from cliplabel_pipeline.core.jobs import job_dir
from cliplabel_pipeline.core.outputs import LABELS_FILE
from cliplabel_pipeline.core.stages import label_stage, provenance, split_stage
from cliplabel_pipeline.core.store import now, write_job_labels
from cliplabel_pipeline.partitions import jobs_partitions
from cliplabel_pipeline.resources import ClipModelResource, DuckDBResource, ResultsRootResource


@dg.asset(partitions_def=jobs_partitions, kinds={"numpy", "duckdb"}, group_name=JOB_GROUP,
          deps=[job_image_embeddings, concept_text_embeddings])
def job_label_assignments(context: dg.AssetExecutionContext, config: LabelingConfig, clip: ClipModelResource,
                          results_root: ResultsRootResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Top-k concepts with confidence for every item: ``labels.jsonl`` and the DuckDB ``labels`` rows."""
    job_id = context.partition_key
    started = now()
    with as_failure(), heartbeat(context):
        folder = job_dir(results_root.root, job_id)
        labeller = clip.labeller(config.top_k, config.min_confidence, config.batch_size)
        records, embedded = label_stage(labeller, folder)
        prov = provenance(labeller)
        write_job_labels(duckdb.db_path(results_root.root), job_id, context.run_id, records, {
            **prov, "asset": "job_label_assignments", "started_at": started, "finished_at": now(),
            "items_per_s": round(embedded.items_per_second, 3)})
    low = sum(r["low_confidence"] for r in records)
    return dg.MaterializeResult(metadata={
        "items": dg.MetadataValue.int(len(records)),
        "low_confidence": dg.MetadataValue.int(low),
        "model": prov["model"], "bank_version": prov["bank_version"],
        "threshold": dg.MetadataValue.float(config.min_confidence), "top_k": dg.MetadataValue.int(config.top_k),
        "label_histogram": dg.MetadataValue.md(histogram_md(records)),
        "items_per_s": dg.MetadataValue.float(round(embedded.items_per_second, 2)),
        "labels_jsonl": dg.MetadataValue.path(str(folder / LABELS_FILE)),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"json"}, group_name=JOB_GROUP, deps=[job_label_assignments])
def job_confident_labels(context: dg.AssetExecutionContext, results_root: ResultsRootResource) -> dg.MaterializeResult:
    """The items at or above the threshold, and the low-confidence rest, as two JSON Lines files."""
    with as_failure():
        confident, low = split_stage(job_dir(results_root.root, context.partition_key))
    return dg.MaterializeResult(metadata={
        "confident": dg.MetadataValue.int(len(confident)),
        "low_confidence": dg.MetadataValue.int(len(low)),
        "low_confidence_items": dg.MetadataValue.md(
            "\n".join(f"- `{r['path']}` ({r['top1']}, {r['confidence']:.2f})" for r in low[:50]) or "none"),
        "confident_histogram": dg.MetadataValue.md(histogram_md(confident)),
    })
