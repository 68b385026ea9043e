"""Liveness and readiness; the only endpoints that never need the token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cliplabel_pipeline.service.schemas import (
    BatchCounters, LabelledSinceStart, NotReady, Readiness, labelled_counts,
)
from cliplabel_pipeline.service.state import state_of

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The model and the concept bank's text embeddings are loaded",
            response_model=Readiness, responses={503: {"model": NotReady}})
def readyz(request: Request) -> Readiness | JSONResponse:
    state = state_of(request)
    if state.error:
        return _not_ready(NotReady(status="failed", detail=state.error))
    if state.classifier is None or state.runner is None:
        return _not_ready(NotReady(status="loading", detail="the model and the concept bank are still loading"),
                          {"Retry-After": "5"})
    labeller, stats, jobs = state.classifier.labeller, state.classifier.batcher.stats, state.runner.tally
    return Readiness(model=labeller.encoder.name, precision=labeller.encoder.precision,
                     device=labeller.encoder.device, bank_version=labeller.index.bank.version,
                     concepts=len(labeller.index.names),
                     labelled=LabelledSinceStart(images=labelled_counts(state.classifier.tally.counts),
                                                 jobs=labelled_counts(jobs.counts) if jobs is not None else None),
                     batches=BatchCounters(count=stats.batches, images=stats.images,
                                           mean_size=round(stats.mean_batch, 2), decode_s=round(stats.decode_s, 3),
                                           encode_s=round(stats.encode_s, 3)))


def _not_ready(body: NotReady, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=503, headers=headers)
