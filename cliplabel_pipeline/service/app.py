"""The FastAPI application: ``create_app(settings)``; ``cliplabel serve`` runs it with uvicorn.

The model loads in a thread at start-up, so ``/healthz`` answers at once and ``/readyz`` says when the model
and the concept bank's text embeddings are in memory.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cliplabel_pipeline.core.settings import Settings, offline_hub, say_stray_variables
from cliplabel_pipeline.service.arrivals import AnnounceUploads
from cliplabel_pipeline.service.auth import BearerToken
from cliplabel_pipeline.service.errors import install_error_handlers
from cliplabel_pipeline.service.limits import BodyLimit
from cliplabel_pipeline.service.routes import health, images, jobs, labelstudio
from cliplabel_pipeline.service.state import ServiceState


def max_request_bytes(settings: Settings) -> int:
    """The largest body a request may have: eight files at the byte limit (or as many as allowed, when fewer),
    plus the form's own overhead. Bounds what one request can spool while it arrives."""
    return settings.max_upload_bytes * min(settings.max_upload_files, 8) + 65536


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service over ``settings``; when None (uvicorn's factory), ``Settings.from_env()``: the one read of the
    ``CLIPLABEL_*`` variables in this process, where a bad value fails (``BadValue`` naming its variable) before
    the server starts (and a misspelled variable is one warning line)."""
    if settings is None:
        say_stray_variables()
        settings = Settings.from_env()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        offline_hub()  # the service never downloads: `cliplabel model pull` does
        threading.Thread(target=state.load, name="load-model", daemon=True).start()
        yield
        state.loaded.wait()
        state.close()

    app = FastAPI(title="cliplabel", summary="Zero-shot CLIP labels for images and segmentation jobs",
                  version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.service = state
    install_error_handlers(app)
    for module in (health, images, jobs, labelstudio):
        app.include_router(module.router)
    # the last added runs first: the token, then the body's size, then the announcement to the batcher
    app.add_middleware(AnnounceUploads, state=state)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes(settings))
    app.add_middleware(BearerToken, token=settings.api_token)
    return app
