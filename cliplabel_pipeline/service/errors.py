"""Every error the service answers is a JSON body ``{"detail": "<one line>"}``, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cliplabel_pipeline.core.errors import CliplabelError, UnknownJob
from cliplabel_pipeline.core.reading.uploads import UnsupportedUpload, UploadTooLarge
from cliplabel_pipeline.core.settings import Settings, bad_values
from cliplabel_pipeline.core.serving.runner import JobBusy
from cliplabel_pipeline.core.storage.guarded import shown

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success: its status, one readable line, and extra fields for the body."""

    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


def _body(status: int, detail: str, **extra) -> JSONResponse:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return JSONResponse({"detail": shown(" ".join(str(detail).split())), **extra}, status_code=status,
                        headers=headers)


# The HTTP meaning of the core's errors, by class (the first that matches): every other one is the caller's 400.
STATUS_OF_ERROR: dict[type[CliplabelError], int] = {
    UnknownJob: 404, JobBusy: 409, UploadTooLarge: 413, UnsupportedUpload: 415,
}


def status_of(exc: CliplabelError) -> int:
    """The HTTP status of a core error: an unknown job 404, a busy job 409, limits 413, formats 415, the rest 400."""
    return next((status for kind, status in STATUS_OF_ERROR.items() if isinstance(exc, kind)), 400)


def _validation_line(exc: RequestValidationError) -> str:
    """FastAPI's own validation in the settings' words (``top_k must be a whole number, got '2.5'``), each
    parameter named as the request names it: the same line a bad value gets on every face."""
    errors = [{**err, "loc": tuple(x for x in err.get("loc", ()) if x not in ("body", "query", "path", "form"))}
              for err in exc.errors()]
    return bad_values(Settings, errors)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return _body(exc.status, exc.detail, **exc.extra)

    @app.exception_handler(CliplabelError)
    async def _core(request: Request, exc: CliplabelError) -> JSONResponse:
        return _body(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _body(422, _validation_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        # the form parser's own limits (files, fields) are limits: 413, as the service's are
        status = 413 if exc.status_code == 400 and detail.startswith("Too many") else exc.status_code
        return _body(status, detail)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, shown(request.url.path))
        return _body(500, f"internal error ({type(exc).__name__}); the service log has the details")
