"""Asset checks, each testing one property, reported by the asset that holds the data (its ``check_specs``)
from the value it has just made: the embedding checks block bad data from going downstream. Each result names
the job it was made for."""

import dagster as dg
import numpy as np

from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.values import Embedded, LabelRecord

KINDS = ("source", "mask", "object")


def embeddings_are_finite(job_id: str, embedded: Embedded, dimension: int) -> dg.AssetCheckResult:
    """No embedding holds a NaN or an infinity."""
    bad = int((~np.isfinite(embedded.embeddings)).any(axis=1).sum())
    return _result(embeddings_are_finite, job_id, bad == 0, rows_with_nan_or_inf=bad)


def embeddings_are_unit_norm(job_id: str, embedded: Embedded, dimension: int) -> dg.AssetCheckResult:
    """Every embedding has length 1 (to 1e-3): scores are cosines."""
    norms = np.linalg.norm(embedded.embeddings, axis=1)
    worst = float(np.abs(norms - 1).max()) if len(norms) else 0.0
    return _result(embeddings_are_unit_norm, job_id, worst < 1e-3, max_norm_error=worst)


def embeddings_have_model_dimension(job_id: str, embedded: Embedded, dimension: int) -> dg.AssetCheckResult:
    """The embeddings are as wide as the model's text embeddings."""
    dim = int(embedded.embeddings.shape[1])
    return _result(embeddings_have_model_dimension, job_id, dim == dimension, dimension=dim, expected=dimension)


def labels_match_record_schema(job_id: str, records: list[LabelRecord], embedded: Embedded,
                               labels_jsonl) -> dg.AssetCheckResult:
    """Every line of ``labels.jsonl`` reads back as a label record of a known kind."""
    bad = []
    for row in read_jsonl(labels_jsonl):
        try:
            rec = LabelRecord.from_json(row)
            ok = (rec.kind in KINDS and isinstance(rec.confidence, float) and isinstance(rec.low_confidence, bool)
                  and all(isinstance(x.name, str) for x in rec.labels))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            bad.append(row.get("path"))
    return _result(labels_match_record_schema, job_id, not bad, bad_records=len(bad), first_bad=str(bad[:5]))


def labels_cover_every_readable_item(job_id: str, records: list[LabelRecord], embedded: Embedded,
                                     labels_jsonl) -> dg.AssetCheckResult:
    """Every item that was read and embedded has a label."""
    missing = sorted({i.path for i in embedded.items} - {r.path for r in records})
    return _result(labels_cover_every_readable_item, job_id, not missing, missing=len(missing),
                   first_missing=str(missing[:5]))


def confidences_within_unit_interval(job_id: str, records: list[LabelRecord], embedded: Embedded,
                                     labels_jsonl) -> dg.AssetCheckResult:
    """Every top-k score is a probability, within [0, 1]."""
    scores = [x.score for r in records for x in r.labels]
    outside = sum(not 0.0 <= s <= 1.0 for s in scores)
    return _result(confidences_within_unit_interval, job_id, outside == 0, outside=outside, scores=len(scores))


def _result(check, job_id: str, passed: bool, **metadata) -> dg.AssetCheckResult:
    """The result of ``check`` (a check is named by its function), naming the job it was made for."""
    return dg.AssetCheckResult(check_name=check.__name__, passed=bool(passed), metadata={"job": job_id, **metadata})


EMBEDDING_CHECKS = {f.__name__: f for f in (embeddings_are_finite, embeddings_are_unit_norm,
                                            embeddings_have_model_dimension)}
LABEL_CHECKS = {f.__name__: f for f in (labels_match_record_schema, labels_cover_every_readable_item,
                                        confidences_within_unit_interval)}

# A check spec names the asset it checks, and is declared by that asset: by its name, not yet its object.
EMBEDDING_CHECK_SPECS = [dg.AssetCheckSpec(name, asset=names.JOB_IMAGE_EMBEDDINGS, blocking=True,
                                           description=fn.__doc__) for name, fn in EMBEDDING_CHECKS.items()]
LABEL_CHECK_SPECS = [dg.AssetCheckSpec(name, asset=names.JOB_LABEL_ASSIGNMENTS, description=fn.__doc__)
                     for name, fn in LABEL_CHECKS.items()]
