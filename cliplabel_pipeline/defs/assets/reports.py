"""KMeans groups, exports and the metrics report of a job."""

import base64
import io
import re

import dagster as dg
from PIL import Image

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.labelling.filtered import FilteredSets
from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.organising.export import FOLDER_FORMATS, installed_folder_formats, selected
from cliplabel_pipeline.core.pipeline import (
    Exported, Grouped, Labelled, export_format, export_grouped, group_labelled, report_exported,
)
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, CheckedConfig, as_failure, path_md
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ClipModelResource


@dg.asset(partitions_def=jobs_partitions, kinds={"scikitlearn", "json"}, group_name=JOB_GROUP,
          io_manager_key="job_folder_io")
def job_groups(context: dg.AssetExecutionContext, clip: ClipModelResource, job_label_assignments: Labelled,
               job_confidence_filtered_sets: FilteredSets, concept_text_embeddings: ConceptIndex) -> dg.Output[Grouped]:
    """The kept items grouped by label; the flagged ones clustered by KMeans on their embeddings and named after
    the nearest concept: ``groups.json``."""
    labelled = job_label_assignments
    with as_failure(context):
        bank = labelled.provenance.bank
        index = concept_text_embeddings if bank == clip.bank_spec else clip.concept_index(bank)
        grouped = group_labelled(labelled, index, job_confidence_filtered_sets)
    groups = grouped.groups
    rows = [f"| {g.name} | {len(g.items)} |" for g in groups.groups]
    rows += [f"| ~{c.name} (flagged, similarity {c.similarity:.2f}) | {len(c.items)} |" for c in groups.clusters]
    return dg.Output(grouped, metadata={
        "groups": dg.MetadataValue.int(len(groups.groups)),
        "clusters": dg.MetadataValue.int(len(groups.clusters)),
        "table": dg.MetadataValue.md("| group | items |\n|---|---|\n" + "\n".join(rows)),
        "groups_json": path_md(labelled.job.groups_json),
    })


class ExportConfig(CheckedConfig):
    """Which folder exports the job gets beside ``labels.csv``, the per-item JSON and the grouped ZIP, as
    ``cliplabel export --format`` writes them into ``export/<job>-<format>/``: by default every format this
    installation can write (``coco`` needs the ``coco`` extra). ``review_queue``: the formats also written with
    only the flagged items, least sure first, into ``export/<job>-<format>-flagged/``. ``image_root``: the URL
    prefix of the images in Label Studio's tasks (its local-files form when unset)."""

    formats: list[str] = installed_folder_formats()
    review_queue: list[str] = ["labelstudio"]
    image_root: str | None = None

    def checked(self) -> "ExportConfig":
        unknown = sorted({*self.formats, *self.review_queue} - set(FOLDER_FORMATS))
        if unknown:
            raise CliplabelError(f"unknown folder export {', '.join(map(repr, unknown))}: use {', '.join(FOLDER_FORMATS)} "
                                 "(labels.csv, the per-item JSON and the ZIP are always written)")
        return self


@dg.asset(partitions_def=jobs_partitions, kinds={"csv", "json"}, group_name=JOB_GROUP, io_manager_key="job_folder_io")
def job_exports(context: dg.AssetExecutionContext, config: ExportConfig, job_groups: Grouped) -> dg.Output[Exported]:
    """``labels.csv``, one JSON per item under ``labels/``, ``export/<job>.zip`` of grouped files, ``manifest.json``,
    and the folder exports other tools open (COCO, Hugging Face imagefolder, Label Studio tasks) with the review
    queue; every one carries the label of record."""
    job = job_groups.labelled.job
    with as_failure(context):
        config.checked()
        exported = export_grouped(job_groups)
        folders = {fmt: export_format(job, fmt, image_root=config.image_root) for fmt in config.formats}
        folders |= {f"{fmt}_flagged": export_format(job, fmt, only="flagged", image_root=config.image_root)
                    for fmt in config.review_queue}
    queue = len(selected(job_groups.labelled.records, "flagged"))
    return dg.Output(exported, metadata={
        **{name: path_md(path) for name, path in vars(exported.files).items()},
        "zip_bytes": dg.MetadataValue.int(exported.files.zip.stat().st_size),
        **{name: path_md(path) for name, path in folders.items()},
        "folder_exports": ", ".join(folders) or "none",
        "review_queue_items": dg.MetadataValue.int(queue),
    })


@dg.asset(partitions_def=jobs_partitions, kinds={"json", "markdown"}, group_name=JOB_GROUP)
def job_metrics_report(context: dg.AssetExecutionContext, job_exports: Exported) -> dg.MaterializeResult:
    """``metrics.json`` and ``report/report.md`` with pictures: accuracy with ground truth, score statistics without."""
    with as_failure(context):
        result = report_exported(job_exports)
    metrics = result.metrics
    scores, perf, truth = metrics.scores, metrics.performance, metrics.truth
    meta = {
        "items": dg.MetadataValue.int(metrics.items),
        "mean_confidence": dg.MetadataValue.float(scores.confidence["mean"]),
        "mean_match": dg.MetadataValue.float(scores.match.get("mean", 0.0)),
        "headline": dg.MetadataValue.text(scores.headline()),
        **{name: dg.MetadataValue.int(n) for name, n in scores.flags.as_fields().items()},
        "kept_share": dg.MetadataValue.float(round(scores.kept / scores.flags.items, 6) if scores.flags.items else 0.0),
        "distinct_labels": dg.MetadataValue.int(scores.distinct_labels),
        "items_per_s": dg.MetadataValue.float(perf.items_per_s),
        "peak_rss_mb": dg.MetadataValue.int(perf.peak_rss_mb),
        "report": path_md(result.report),
        "report_preview": dg.MetadataValue.md(_inline_pictures(result.labelled.job)),
    }
    if truth:
        meta["accuracy"] = dg.MetadataValue.float(truth.accuracy)
        meta["top_k_accuracy"] = dg.MetadataValue.float(truth.top_k_accuracy)
    meta |= _review_metadata(metrics.review)
    return dg.MaterializeResult(metadata=meta)


def _review_metadata(review) -> dict:
    """The ``review`` section of ``metrics.json``: how right the model was on the items people reviewed."""
    if review is None:
        return {"reviewed": dg.MetadataValue.int(0)}
    meta = {"reviewed": dg.MetadataValue.int(review.reviewed),
            **{f"reviews_{d}": dg.MetadataValue.int(n) for d, n in review.decisions.items()},
            "review_by_kind": dg.MetadataValue.json(review.by_kind),
            "review_suggested_thresholds": dg.MetadataValue.json(review.suggested or {})}
    for name, value in (("review_accuracy", review.accuracy), ("review_top_k_accuracy", review.top_k_accuracy)):
        if value is not None:
            meta[name] = dg.MetadataValue.float(value)
    return meta


PREVIEW_BYTES = 600_000  # the report preview's pictures, all together, in Dagster's metadata
PREVIEW_SIDE = 420


def _inline_pictures(job) -> str:
    """The report's Markdown with every picture inlined as a data URI, scaled to at most ``PREVIEW_SIDE``
    pixels a side, so the Dagster UI shows them all; once ``PREVIEW_BYTES`` are spent, a picture becomes a line
    naming its file (never a broken image). Read through the job folder: a link in ``report/`` is never followed."""
    text = job.read_bytes(job.report_md).decode("utf-8")
    spent = 0
    for alt, name in re.findall(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", text):
        data = _small_png(job, name) if job.is_file(job.report_dir / name) else None
        if data is not None and spent + len(data) <= PREVIEW_BYTES:
            spent += len(data)
            replacement = f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"
        else:
            replacement = f"*{alt}: `report/{name}` in the job folder*"
        text = text.replace(f"![{alt}]({name})", replacement)
    return text


def _small_png(job, name: str) -> bytes | None:
    try:
        with Image.open(io.BytesIO(job.read_bytes(job.report_dir / name))) as img:
            img = img.convert("RGB")
            img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            out = io.BytesIO()
            img.quantize(64).save(out, format="PNG", optimize=True)
            return out.getvalue()
    except (OSError, ValueError):
        return None
