"""The optional bearer token: with ``CLIPLABEL_API_TOKEN`` set, every endpoint but the health checks needs it."""

from __future__ import annotations

import secrets

from fastapi import Request

from cliplabel_pipeline.service.errors import ApiError


def require_token(request: Request) -> None:
    """A FastAPI dependency: 401 unless ``Authorization: Bearer <token>`` matches the configured token."""
    token = request.app.state.settings.api_token
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "missing or wrong bearer token: send 'Authorization: Bearer <CLIPLABEL_API_TOKEN>'")
