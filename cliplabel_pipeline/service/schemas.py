"""Response shapes, derived from the core's values (for the OpenAPI docs at ``/docs``, for clients generated from
them, and as what the handlers return): an upload's result is a ``LabelRecord`` named by its ``filename``, a
job's status is the core's ``JobStatus`` with its URL."""

from __future__ import annotations

import dataclasses
import typing

from pydantic import BaseModel, Field, create_model

from cliplabel_pipeline.core.labelling.filtered import FlagCounts
from cliplabel_pipeline.core.organising.labelstudio import Prediction
from cliplabel_pipeline.core.serving.files import JobFile
from cliplabel_pipeline.core.serving.runner import JobStatus
from cliplabel_pipeline.core.organising.review_files import Unmatched
from cliplabel_pipeline.core.reviewing import ReviewImport
from cliplabel_pipeline.core.values import LabelRecord, Provenance, Review, SkippedItem


def fields_of(value_type: type, *names: str, drop: tuple[str, ...] = ()) -> dict[str, tuple]:
    """The fields ``names`` of the dataclass ``value_type`` (all but ``drop`` when none are named), in order, as
    ``create_model`` takes them: their annotations (with what they say about serialising) and defaults."""
    hints = typing.get_type_hints(value_type, include_extras=True)
    chosen = [f for f in dataclasses.fields(value_type) if (f.name in names if names else f.name not in drop)]
    return {f.name: (hints[f.name], _default(f)) for f in chosen}


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return Field(default_factory=f.default_factory)
    return ...


ImageResult = create_model("ImageResult", filename=(str, ...), **fields_of(LabelRecord, drop=("path", "kind")))
SkippedUpload = create_model("SkippedUpload", filename=(str, ...), **fields_of(SkippedItem, drop=("path", "kind")))
ClassifyResponse = create_model(
    "ClassifyResponse", results=(list[ImageResult], ...), skipped=(list[SkippedUpload], Field(default_factory=list)),
    **fields_of(Provenance, "model", "bank_version"))
JobAccepted = create_model("JobAccepted", **fields_of(JobStatus, "job_id", "state"), status_url=(str, ...))
JobStatusOut = create_model("JobStatusOut", **fields_of(JobStatus, "job_id", "state"), status_url=(str, ...),
                            **fields_of(JobStatus, drop=("job_id", "state")))


CleanupItem = create_model("CleanupItem", **fields_of(LabelRecord, "path", "top1", "confidence", "match"))


class CleanupAnswer(BaseModel):
    """What a cleanup lists (a dry run) or did: ``action`` and ``outputs`` only once it acted."""

    job_id: str
    min_confidence: float
    min_match: float
    dry_run: bool
    count: int
    items: list[CleanupItem]
    action: typing.Literal["quarantined", "purged"] | None = Field(None, exclude_if=lambda value: value is None)
    outputs: str | None = Field(None, exclude_if=lambda value: value is None)  # "rebuilt", or why they are stale


class RestoreAnswer(BaseModel):
    job_id: str
    restored: int
    items: list[str]
    outputs: str


class ReviewsAnswer(BaseModel):
    """What ``POST /jobs/{id}/reviews`` took: the file's form, counts by decision, the reviews as stored, what
    could not be matched and why, the items whose label of record changed, and the outputs rebuilt or stale."""

    job_id: str
    form: str
    counts: dict[str, int]
    reviews: list[Review]
    unmatched: list[Unmatched]
    changed: list[str]
    outputs: str


def reviews_answer(done: ReviewImport) -> ReviewsAnswer:
    return ReviewsAnswer(job_id=done.job_id, form=done.form, counts=done.counts(), reviews=done.added,
                         unmatched=done.unmatched, changed=done.changed,
                         outputs=f"stale: {done.stale}" if done.stale else "rebuilt")


class JobFiles(BaseModel):
    job_id: str
    files: list[JobFile]


def classify_response(records: list[LabelRecord], skipped: list[SkippedItem], model: str,
                      bank_version: str) -> BaseModel:
    """What ``POST /classify/image`` answers for labelled uploads and those that could not be read."""
    return ClassifyResponse(
        results=[ImageResult(filename=r.path, **{k: getattr(r, k) for k in ImageResult.model_fields if k != "filename"})
                 for r in records],
        skipped=[SkippedUpload(filename=s.path, reason=s.reason) for s in skipped], model=model,
        bank_version=bank_version)


def job_status_out(status: JobStatus, status_url: str) -> BaseModel:
    return JobStatusOut(**{f.name: getattr(status, f.name) for f in dataclasses.fields(status)}, status_url=status_url)


# GET /readyz: what was labelled since start is the core's one count of what is flagged (``FlagCounts``)
LabelledCounts = create_model("LabelledCounts", items=(int, ...), **fields_of(FlagCounts))


def labelled_counts(counts: FlagCounts) -> BaseModel:
    return LabelledCounts(items=counts.items, **{f.name: getattr(counts, f.name) for f in dataclasses.fields(counts)})


class LabelledSinceStart(BaseModel):
    """Uploads, and the items of jobs run in the service (``None`` when runs go to Dagster, whose UI counts them)."""

    images: LabelledCounts
    jobs: LabelledCounts | None


class BatchCounters(BaseModel):
    count: int
    images: int
    mean_size: float
    decode_s: float
    encode_s: float


class Readiness(BaseModel):
    """``GET /readyz`` once the model and the bank's text embeddings are loaded."""

    status: typing.Literal["ready"] = "ready"
    model: str
    precision: str
    device: str
    bank_version: str
    concepts: int
    labelled: LabelledSinceStart
    batches: BatchCounters


class NotReady(BaseModel):
    """``GET /readyz`` (503) while the model loads, or after it failed to."""

    status: typing.Literal["loading", "failed"]
    detail: str


# Label Studio's ML backend protocol: what /health, /setup and /predict answer, in the order of keys it is sent.
class MLBackendHealth(BaseModel):
    status: typing.Literal["UP"] = "UP"
    model_class: typing.Literal["cliplabel"] = "cliplabel"
    model_version: str


MLBackendSetup = create_model("MLBackendSetup", **fields_of(Prediction, "model_version"))
MLBackendPredictions = create_model("MLBackendPredictions", results=(list[Prediction], ...),
                                    **fields_of(Prediction, "model_version"))
