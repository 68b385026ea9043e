"""Response shapes, for the OpenAPI docs at ``/docs`` and for clients generated from them."""

from __future__ import annotations

from pydantic import BaseModel


class ScoredLabel(BaseModel):
    name: str
    score: float


class ImageResult(BaseModel):
    filename: str
    labels: list[ScoredLabel]
    top1: str
    confidence: float
    cosine: float
    margin: float
    match: float
    low_confidence: bool
    flagged_by: list[str]


class SkippedUpload(BaseModel):
    filename: str
    reason: str


class ClassifyResponse(BaseModel):
    results: list[ImageResult]
    skipped: list[SkippedUpload] = []
    model: str
    bank_version: str


class JobAccepted(BaseModel):
    job_id: str
    state: str
    status_url: str


class JobFileOut(BaseModel):
    path: str
    size: int


class JobStatusOut(BaseModel):
    job_id: str
    state: str
    status_url: str
    reason: str | None = None
    submitted: str | None = None
    started: str | None = None
    finished: str | None = None
    counts: dict[str, int] | None = None
    files: list[JobFileOut] | None = None
    run_id: str | None = None
