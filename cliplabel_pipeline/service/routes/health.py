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
    labeller = state.classifier.labeller
    return JSONResponse({"status": "ready", "model": labeller.encoder.name, "precision": labeller.encoder.precision,
                         "device": labeller.encoder.device, "bank_version": labeller.index.bank.version,
                         "concepts": len(labeller.index.names)})
