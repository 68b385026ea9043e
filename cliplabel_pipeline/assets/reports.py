"""Groups, exports and the metrics report of a job."""

import dagster as dg

from cliplabel_pipeline.assets.common import JOB_GROUP, as_failure
from cliplabel_pipeline.assets.labels import job_confident_labels
from cliplabel_pipeline.core.jobs import job_dir
from cliplabel_pipeline.core.stages import GROUPS_FILE, export_stage, group_stage, report_stage
from cliplabel_pipeline.partitions import jobs_partitions
from cliplabel_pipeline.resources import ClipModelResource, ResultsRootResource


@dg.asset(partitions_def=jobs_partitions, kinds={"scikitlearn", "json"}, group_name=JOB_GROUP,
          deps=[job_confident_labels])
def job_groups(context: dg.AssetExecutionContext, clip: ClipModelResource,
               results_root: ResultsRootResource) -> dg.MaterializeResult:
    """Confident items grouped by top-1 label; low-confidence items clustered and named: ``groups.json``."""
    with as_failure():
        folder = job_dir(results_root.root, context.partition_key)
        groups = group_stage(clip.labeller(), folder)
    rows = [f"| {g['name']} | {len(g['items'])} |" for g in groups["groups"]]
    rows += [f"| ~{c['name']} (low confidence, similarity {c['similarity']:.2f}) | {len(c['items'])} |"
             for c in groups["clusters"]]
    return dg.MaterializeResult(metadata={
        "groups": dg.MetadataValue.int(len(groups["groups"])),
        "clusters": dg.MetadataValue.int(len(groups["clusters"])),
        "table": dg.MetadataValue.md("| group | items |\n|---|---|\n" + "\n".join(rows)),
        "groups_json": dg.MetadataValue.path(str(folder / GROUPS_FILE)),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"csv", "json"}, group_name=JOB_GROUP, deps=[job_groups])
def job_exports(context: dg.AssetExecutionContext, results_root: ResultsRootResource) -> dg.MaterializeResult:
    """``labels.csv``, one JSON per item under ``labels/``, ``export/<job>.zip`` of grouped files, ``manifest.json``."""
    job_id = context.partition_key
    with as_failure():
        paths = export_stage(job_dir(results_root.root, job_id), job_id)
    return dg.MaterializeResult(metadata={
        **{name: dg.MetadataValue.path(str(path)) for name, path in paths.items()},
        "zip_bytes": dg.MetadataValue.int(paths["zip"].stat().st_size),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"json", "markdown"}, group_name=JOB_GROUP, deps=[job_exports])
def job_metrics_report(context: dg.AssetExecutionContext, results_root: ResultsRootResource) -> dg.MaterializeResult:
    """``metrics.json`` and ``report/report.md`` with pictures: accuracy with ground truth, score statistics without."""
    with as_failure():
        metrics, report = report_stage(job_dir(results_root.root, context.partition_key))
    scores, perf, truth = metrics["scores"], metrics["performance"], metrics["truth"]
    meta = {
        "items": dg.MetadataValue.int(metrics["items"]),
        "mean_confidence": dg.MetadataValue.float(scores["confidence"]["mean"]),
        "share_at_or_above_threshold": dg.MetadataValue.float(scores["share_at_or_above_threshold"]),
        "distinct_labels": dg.MetadataValue.int(scores["distinct_labels"]),
        "items_per_s": dg.MetadataValue.float(perf["items_per_s"]),
        "peak_rss_mb": dg.MetadataValue.int(perf["peak_rss_mb"]),
        "report": dg.MetadataValue.path(str(report)),
        "report_preview": dg.MetadataValue.md(_inline_pictures(report)),
    }
    if truth:
        meta["accuracy"] = dg.MetadataValue.float(truth["accuracy"])
        meta["top_k_accuracy"] = dg.MetadataValue.float(truth["top_k_accuracy"])
    return dg.MaterializeResult(metadata=meta)


def _inline_pictures(report, limit: int = 8) -> str:
    """The report's Markdown with its first pictures inlined as data URIs, so the Dagster UI shows them
    (the histogram, the confusion matrix and the first groups; the rest stay links to keep metadata small)."""
    import base64

    text = report.read_text(encoding="utf-8")
    for png in sorted(report.parent.glob("*.png"))[:limit]:
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        text = text.replace(f"]({png.name})", f"]({uri})")
    return text
