"""A cap on request bodies, enforced while they arrive (a declared ``Content-Length`` or a chunked stream)."""

from __future__ import annotations

import json


class BodyLimit:
    """ASGI middleware: a request whose body passes ``max_bytes`` is answered 413 without reading the rest."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, int(declared))
        seen, exceeded, started = 0, False, False

        async def counting_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge(seen)
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:  # whatever the app answers to the cut-off body, the client gets the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            await self._refuse(send, seen)

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps({"detail": f"request body of at least {size:,} bytes is over the "
                                     f"{self.max_bytes:,}-byte limit"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    def __init__(self, seen: int):
        super().__init__(seen)
        self.seen = seen
