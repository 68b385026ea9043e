"""The optional bearer token: with ``CLIPLABEL_API_TOKEN`` set, every endpoint but the health checks needs it.

Checked as the request arrives, before its body is read: an unauthenticated upload is refused unread.
The OpenAPI pages (``/docs``, ``/redoc``, ``/openapi.json``) stay open: they describe the API, hold no data.
"""

from __future__ import annotations

import json
import secrets

OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
_REFUSAL = json.dumps({"detail": "missing or wrong bearer token: send 'Authorization: Bearer <CLIPLABEL_API_TOKEN>'"}).encode()


def token_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


class BearerToken:
    """ASGI middleware: 401 for a request without the token (none set: every request passes)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if token_matches(header, self.token):
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(_REFUSAL)).encode())]})
        await send({"type": "http.response.body", "body": _REFUSAL})
