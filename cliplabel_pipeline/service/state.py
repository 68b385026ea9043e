"""What one server process holds: its settings, the warm classifier and the job runner, loaded at start-up."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from fastapi import Request

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.service.errors import ApiError

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    classifier: object | None = None  # UploadClassifier, once the model and the bank's index are loaded
    runner: object | None = None  # LocalJobRunner or DagsterJobRunner
    error: str | None = None
    loaded: threading.Event = field(default_factory=threading.Event)

    def load(self) -> None:
        """Load the model and the bank's text embeddings (the slow part), then the job runner."""
        try:
            from cliplabel_pipeline.core.labeller import Labeller
            from cliplabel_pipeline.core.serving.classifier import UploadClassifier

            labeller = Labeller.load(self.settings)
            self.classifier = UploadClassifier(labeller, self.settings)
            self.runner = _runner(labeller, self.settings)
            log.info("ready: %s, %d concepts", labeller.encoder.name, len(labeller.index.names))
        except CliplabelError as exc:
            self.error = shown(exc)
            log.error("cannot serve: %s", self.error)
        except Exception as exc:  # noqa: BLE001 - readiness reports it; the log keeps the traceback
            self.error = f"loading failed: {type(exc).__name__}: {shown(exc)[:200]}"
            log.exception("loading the model failed")
        finally:
            self.loaded.set()

    def close(self) -> None:
        for part in (self.runner, self.classifier):
            if part is not None:
                part.close()


def uses_dagster(settings: Settings) -> bool:
    """Whether jobs go to the Dagster instance: ``service_runs`` says so, or is ``auto`` with DAGSTER_HOME set
    (``Settings`` allows only auto, dagster and local)."""
    mode = settings.service_runs
    return mode == "dagster" or (mode == "auto" and bool(os.environ.get("DAGSTER_HOME")))


def _runner(labeller, settings: Settings):
    if uses_dagster(settings):
        from cliplabel_pipeline.service.dagster_runs import DagsterJobRunner

        return DagsterJobRunner(settings)
    from cliplabel_pipeline.core.serving.runner import LocalJobRunner

    return LocalJobRunner(labeller, settings)


def state_of(request: Request) -> ServiceState:
    return request.app.state.service


def ready(request: Request) -> ServiceState:
    """A FastAPI dependency: the loaded service, or 503 while it loads (or when loading failed)."""
    state = state_of(request)
    if state.error:
        raise ApiError(503, f"not ready: {state.error}")
    if state.classifier is None or state.runner is None:
        raise ApiError(503, "not ready: the model and the concept bank are still loading", retry_after=5)
    return state
