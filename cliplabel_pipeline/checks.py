"""Asset checks: each tests one property; the embedding checks block bad data from going downstream."""


import dagster as dg
import numpy as np

from cliplabel_pipeline.assets.embeddings import job_image_embeddings
from cliplabel_pipeline.assets.labels import job_label_assignments
from cliplabel_pipeline.core.artifacts import load_embedded
from cliplabel_pipeline.core.jobs import job_dir
from cliplabel_pipeline.core.outputs import LABELS_FILE, read_jsonl
from cliplabel_pipeline.partitions import jobs_partitions
from cliplabel_pipeline.resources import ClipModelResource, ResultsRootResource

RECORD_TYPES = {"path": str, "kind": str, "labels": list, "top1": str, "confidence": float, "cosine": float,
                "margin": float, "low_confidence": bool}


def _embeddings(context, results_root) -> np.ndarray:
    return load_embedded(job_dir(results_root.root, context.partition_key)).embeddings


def _records(context, results_root) -> list[dict]:
    return read_jsonl(job_dir(results_root.root, context.partition_key) / LABELS_FILE)


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
    expected = int(clip.labeller().text_emb.shape[1])
    return dg.AssetCheckResult(passed=dim == expected, metadata={"dimension": dim, "expected": expected})


@dg.asset_check(asset=job_label_assignments, partitions_def=jobs_partitions)
def labels_match_record_schema(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    bad = [r.get("path") for r in _records(context, results_root)
           if any(not isinstance(r.get(k), t) for k, t in RECORD_TYPES.items())
           or r["kind"] not in ("source", "mask", "object")]
    return dg.AssetCheckResult(passed=not bad, metadata={"bad_records": len(bad), "first_bad": str(bad[:5])})


@dg.asset_check(asset=job_label_assignments, partitions_def=jobs_partitions)
def labels_cover_every_readable_item(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    folder = job_dir(results_root.root, context.partition_key)
    embedded = {m["path"] for m in load_embedded(folder).meta}
    labelled = {r["path"] for r in _records(context, results_root)}
    missing = sorted(embedded - labelled)
    return dg.AssetCheckResult(passed=not missing, metadata={"missing": len(missing), "first_missing": str(missing[:5])})


@dg.asset_check(asset=job_label_assignments, partitions_def=jobs_partitions)
def confidences_within_unit_interval(context: dg.AssetCheckExecutionContext, results_root: ResultsRootResource):
    scores = [s["score"] for r in _records(context, results_root) for s in r["labels"]]
    outside = sum(not 0.0 <= s <= 1.0 for s in scores)
    return dg.AssetCheckResult(passed=outside == 0, metadata={"outside": outside, "scores": len(scores)})


all_checks = [embeddings_are_finite, embeddings_are_unit_norm, embeddings_have_model_dimension,
              labels_match_record_schema, labels_cover_every_readable_item, confidences_within_unit_interval]
