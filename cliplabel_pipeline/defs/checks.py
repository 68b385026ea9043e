"""Asset checks: each tests one property; the embedding checks block bad data from going downstream."""

import warnings

import dagster as dg
import numpy as np

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.values import LabelRecord
from cliplabel_pipeline.defs.assets.embeddings import job_image_embeddings
from cliplabel_pipeline.defs.assets.labels import job_label_assignments
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ClipModelResource, ResultsRootResource

KINDS = ("source", "mask", "object")

# Checks per partition are what a per-job asset needs; Dagster calls them "preview" and says so on every load of
# the code location, a line that tells a user of cliplabel nothing they can act on.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)


def _embeddings(context, results_root) -> np.ndarray:
    return results_root.job(context.partition_key).read_embedded().embeddings


@dg.asset_check(asset=job_image_embeddings, blocking=True, partitions_def=jobs_partitions)
def embeddings_are_finite(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    emb = _embeddings(context, results_root)
    bad = int((~np.isfinite(emb)).any(axis=1).sum())
    return dg.AssetCheckResult(passed=bad == 0, metadata={"rows_with_nan_or_inf": bad})


@dg.asset_check(asset=job_image_embeddings, blocking=True, partitions_def=jobs_partitions)
def embeddings_are_unit_norm(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    norms = np.linalg.norm(_embeddings(context, results_root), axis=1)
    worst = float(np.abs(norms - 1).max()) if len(norms) else 0.0
    return dg.AssetCheckResult(passed=worst < 1e-3, metadata={"max_norm_error": worst})


@dg.asset_check(asset=job_image_embeddings, blocking=True, partitions_def=jobs_partitions)
def embeddings_have_model_dimension(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource,
                                    clip: ClipModelResource):
    dim = int(_embeddings(context, results_root).shape[1])
    expected = int(clip.concept_index().text_emb.shape[1])
    return dg.AssetCheckResult(passed=dim == expected, metadata={"dimension": dim, "expected": expected})


@dg.asset_check(asset=job_label_assignments, partitions_def=jobs_partitions)
def labels_match_record_schema(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    bad = []
    for row in read_jsonl(results_root.job(context.partition_key).labels_jsonl):
        try:
            rec = LabelRecord.from_json(row)
            ok = (rec.kind in KINDS and isinstance(rec.confidence, float) and isinstance(rec.low_confidence, bool)
                  and all(isinstance(x.name, str) for x in rec.labels))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            bad.append(row.get("path"))
    return dg.AssetCheckResult(passed=not bad, metadata={"bad_records": len(bad), "first_bad": str(bad[:5])})


@dg.asset_check(asset=job_label_assignments, partitions_def=jobs_partitions)
def labels_cover_every_readable_item(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    job = results_root.job(context.partition_key)
    embedded = {i.path for i in job.read_embedded().items}
    labelled = {r.path for r in job.read_labels()}
    missing = sorted(embedded - labelled)
    return dg.AssetCheckResult(passed=not missing, metadata={"missing": len(missing), "first_missing": str(missing[:5])})


@dg.asset_check(asset=job_label_assignments, partitions_def=jobs_partitions)
def confidences_within_unit_interval(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    scores = [x.score for r in results_root.job(context.partition_key).read_labels() for x in r.labels]
    outside = sum(not 0.0 <= s <= 1.0 for s in scores)
    return dg.AssetCheckResult(passed=outside == 0, metadata={"outside": outside, "scores": len(scores)})


all_checks = [embeddings_are_finite, embeddings_are_unit_norm, embeddings_have_model_dimension,
              labels_match_record_schema, labels_cover_every_readable_item, confidences_within_unit_interval]
