"""Label Studio's ML backend protocol (``/health``, ``/setup``, ``/predict``), and the job images Label Studio
shows (``/results/<job>/<path>``: a job's inputs only, read as regular files inside the job)."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cliplabel_pipeline.core.job_folder import INPUT_DIRS, SOURCE_NAME
from cliplabel_pipeline.core.serving.ml_backend import predict_tasks, read_input_image
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.service.errors import ApiError
from cliplabel_pipeline.service.routes.jobs import open_job
from cliplabel_pipeline.service.schemas import MLBackendHealth, MLBackendPredictions, MLBackendSetup
from cliplabel_pipeline.service.state import ServiceState, ready

router = APIRouter(tags=["label studio"])


def _version(state: ServiceState) -> str:
    labeller = state.classifier.labeller
    return f"cliplabel {labeller.encoder.name} bank {labeller.index.bank.version}"


@router.get("/health", summary="Label Studio's ML backend health check")
def ls_health(state: ServiceState = Depends(ready)) -> MLBackendHealth:
    return MLBackendHealth(model_version=_version(state))


@router.post("/setup", summary="Label Studio connects a project to cliplabel as its model")
def ls_setup(payload: dict = Body(default_factory=dict), state: ServiceState = Depends(ready)) -> MLBackendSetup:
    return MLBackendSetup(model_version=_version(state))


@router.post("/predict", summary="Label Studio asks predictions for a batch of tasks")
async def ls_predict(payload: dict = Body(...), state: ServiceState = Depends(ready)) -> MLBackendPredictions:
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        raise ApiError(422, 'send {"tasks": [...]} as Label Studio does')
    settings = LabelSettings.from_settings(state.settings)

    def classify(uploads):  # on a worker thread: the batch is encoded with other callers' images
        classifier, fresh = state.classifier, {}
        good = []
        for up in uploads:  # one task's bad image costs that task its prediction, never the batch's
            try:
                classifier.check([up])
            except Exception:  # noqa: BLE001 - refused before decoding: that task gets an empty prediction
                continue
            good.append(up)
        step = state.settings.max_upload_files
        for start in range(0, len(good), step):
            embedded = classifier.encode(good[start:start + step]).result()
            fresh.update((r.path, r) for r in classifier.score(embedded, classifier.labeller, settings))
        return fresh

    results = await run_in_threadpool(predict_tasks, tasks, state.settings.results_root, _version(state), classify,
                                      state.settings.max_upload_bytes)
    return MLBackendPredictions(results=results, model_version=_version(state))


@router.get("/results/{job_id}/{path:path}", summary="An input image of a job (for Label Studio to show)")
def job_image(job_id: str, path: str, state: ServiceState = Depends(ready)) -> Response:
    job = open_job(state, job_id)
    if path != SOURCE_NAME and path.split("/", 1)[0] not in INPUT_DIRS:
        raise ApiError(404, f"{shown(path)!r} is not an input image of the job")
    data = read_input_image(job, path, state.settings.max_upload_bytes)  # over the limit: 413, never read
    return Response(data, media_type="image/png" if data[:4] == b"\x89PNG" else "application/octet-stream")
