"""Groups, exports and the metrics report of a job."""


import json

import dagster as dg
import numpy as np

from cliplabel_pipeline.assets.common import JOB_GROUP
from cliplabel_pipeline.assets.labels import job_confident_labels
from cliplabel_pipeline.core.artifacts import load_embedded, work_dir
from cliplabel_pipeline.core.export import (
    build_manifest, write_asset_jsons, write_grouped_zip, write_labels_csv, write_manifest,
)
from cliplabel_pipeline.core.grouping import group_items
from cliplabel_pipeline.core.heartbeat import peak_memory_mb
from cliplabel_pipeline.core.jobs import job_dir
from cliplabel_pipeline.core.metrics import job_metrics
from cliplabel_pipeline.core.outputs import LABELS_FILE, read_jsonl, write_atomic
from cliplabel_pipeline.core.report import write_report
from cliplabel_pipeline.partitions import jobs_partitions
from cliplabel_pipeline.resources import ClipModelResource, ResultsRootResource


def _provenance(folder) -> dict:
    return json.loads((work_dir(folder) / "provenance.json").read_text())


@dg.asset(partitions_def=jobs_partitions, kinds={"scikitlearn", "json"}, group_name=JOB_GROUP,
          deps=[job_confident_labels])
def job_groups(context: dg.AssetExecutionContext, clip: ClipModelResource,
               results_root: ResultsRootResource) -> dg.MaterializeResult:
    """Confident items grouped by top-1 label; low-confidence items clustered and named: ``groups.json``."""
    folder = job_dir(results_root.root, context.partition_key)
    records = read_jsonl(folder / LABELS_FILE)
    embedded = load_embedded(folder)
    by_path = dict(zip((m["path"] for m in embedded.meta), embedded.embeddings))
    labeller = clip.labeller()
    groups = group_items(records, by_path, labeller.text_emb, labeller.bank.names)
    path = write_atomic(folder / "groups.json", json.dumps(groups, indent=1, ensure_ascii=False).encode())
    table = "| group | items |\n|---|---|\n" + "\n".join(
        f"| {g['name']} | {len(g['items'])} |" for g in groups["groups"]) + "\n" + "\n".join(
        f"| ~{c['name']} (cluster {c['cluster']}, sim {c['similarity']:.2f}) | {len(c['items'])} |" for c in groups["clusters"])
    return dg.MaterializeResult(metadata={
        "groups": dg.MetadataValue.int(len(groups["groups"])),
        "clusters": dg.MetadataValue.int(len(groups["clusters"])),
        "table": dg.MetadataValue.md(table), "groups_json": dg.MetadataValue.path(str(path)),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"csv", "json"}, group_name=JOB_GROUP, deps=[job_groups])
def job_exports(context: dg.AssetExecutionContext, results_root: ResultsRootResource) -> dg.MaterializeResult:
    """``labels.csv``, one JSON per item under ``labels/``, ``<job>.zip`` of grouped files, ``manifest.json``."""
    job_id = context.partition_key
    folder = job_dir(results_root.root, job_id)
    records = read_jsonl(folder / LABELS_FILE)
    groups = json.loads((folder / "groups.json").read_text())
    skipped = read_jsonl(folder / "skipped.jsonl")
    csv_path = write_labels_csv(folder / "labels.csv", records)
    json_dir = write_asset_jsons(folder, records)
    zip_path = write_grouped_zip(folder / "export" / f"{job_id}.zip", folder, groups)
    manifest = build_manifest(job_id, _provenance(folder), records, skipped, groups)
    manifest_path = write_manifest(folder / "manifest.json", manifest)
    return dg.MaterializeResult(metadata={
        "items": dg.MetadataValue.int(len(records)),
        "csv": dg.MetadataValue.path(str(csv_path)), "per_item_json": dg.MetadataValue.path(str(json_dir)),
        "zip": dg.MetadataValue.path(str(zip_path)), "zip_bytes": dg.MetadataValue.int(zip_path.stat().st_size),
        "manifest": dg.MetadataValue.path(str(manifest_path)),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"json", "markdown"}, group_name=JOB_GROUP, deps=[job_exports])
def job_metrics_report(context: dg.AssetExecutionContext, results_root: ResultsRootResource) -> dg.MaterializeResult:
    """``metrics.json`` and ``report/report.md`` with pictures: accuracy with ground truth, score statistics without."""
    folder = job_dir(results_root.root, context.partition_key)
    records = read_jsonl(folder / LABELS_FILE)
    embedded = load_embedded(folder)
    prov = _provenance(folder)
    perf = {"items_per_s": round(embedded.items_per_second, 3), "batch_seconds": embedded.batch_seconds,
            "seconds": round(embedded.seconds, 3), **peak_memory_mb()}
    metrics = job_metrics(records, folder, prov["min_confidence"], perf)
    write_atomic(folder / "metrics.json", json.dumps(metrics, indent=1).encode())
    report = write_report(folder, records, metrics, json.loads((folder / "groups.json").read_text()))
    truth = metrics["truth"] or {}
    meta = {
        "items": dg.MetadataValue.int(len(records)),
        "mean_confidence": dg.MetadataValue.float(metrics["scores"]["confidence"].get("mean", float("nan"))),
        "share_at_or_above_threshold": dg.MetadataValue.float(metrics["scores"]["share_at_or_above_threshold"] or 0.0),
        "distinct_labels": dg.MetadataValue.int(metrics["scores"]["distinct_labels"]),
        "items_per_s": dg.MetadataValue.float(perf["items_per_s"]),
        "report": dg.MetadataValue.path(str(report)),
        "confidence_histogram": dg.MetadataValue.md(f"![confidence histogram]({report.parent / 'confidence.png'})"),
    }
    if truth:
        meta["accuracy"] = dg.MetadataValue.float(truth["accuracy"])
        meta["top_k_accuracy"] = dg.MetadataValue.float(truth["top_k_accuracy"])
    meta["mean_batch_seconds"] = dg.MetadataValue.float(float(np.mean(embedded.batch_seconds)) if embedded.batch_seconds else 0.0)
    return dg.MaterializeResult(metadata=meta)
