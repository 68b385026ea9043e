"""Uploads announced to the batcher as they start to arrive, so a batch waits for them and for nothing else."""

from __future__ import annotations

UPLOAD_PATHS = ("/classify/image", "/classify/batch")


class AnnounceUploads:
    """ASGI middleware: a multipart POST to an upload endpoint is announced before its body is read, and
    withdrawn when it ends without reaching the batcher (an error, a refusal)."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        classifier = self.state.classifier
        if (scope["type"] != "http" or classifier is None or scope["method"] != "POST"
                or scope["path"] not in UPLOAD_PATHS
                or not dict(scope.get("headers") or []).get(b"content-type", b"").startswith(b"multipart/")):
            return await self.app(scope, receive, send)
        arrival = classifier.batcher.announce()
        scope.setdefault("state", {})["arrival"] = arrival
        try:
            await self.app(scope, receive, send)
        finally:
            arrival.withdraw()
