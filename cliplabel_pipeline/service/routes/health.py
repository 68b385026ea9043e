"""Liveness and readiness; the only endpoints that never need the token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cliplabel_pipeline.service.state import state_of

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The model and the concept bank's text embeddings are loaded")
def readyz(request: Request) -> JSONResponse:
    state = state_of(request)
    if state.error:
        return JSONResponse({"status": "failed", "detail": state.error}, status_code=503)
    if state.classifier is None or state.runner is None:
        return JSONResponse({"status": "loading", "detail": "the model and the concept bank are still loading"},
                            status_code=503, headers={"Retry-After": "5"})
    labeller, stats = state.classifier.labeller, state.classifier.batcher.stats
    return JSONResponse({"status": "ready", "model": labeller.encoder.name, "precision": labeller.encoder.precision,
                         "device": labeller.encoder.device, "bank_version": labeller.index.bank.version,
                         "concepts": len(labeller.index.names),
                         "labelled": {"images": state.classifier.tally.to_json(),
                                      "jobs": state.runner.tally and state.runner.tally.to_json()},
                         "batches": {"count": stats.batches, "images": stats.images,
                                     "mean_size": round(stats.mean_batch, 2), "decode_s": round(stats.decode_s, 3),
                                     "encode_s": round(stats.encode_s, 3)}})
