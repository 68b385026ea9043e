"""Jobs under the results root: label (in the background), status, batch, cleanup, restore, export, files.

Every job is reached through the core's ``JobFolder``: the id is validated once (400), an unknown job is 404,
and nothing is read or written outside the results root or through a link planted in a job.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cliplabel_pipeline.core.errors import CliplabelError, UnknownJob
from cliplabel_pipeline.core.job_folder import JobFolder, is_real_folder
from cliplabel_pipeline.core.organising.export import EXPORT_FORMATS, FOLDER_FORMATS
from cliplabel_pipeline.core.serving.files import job_files
from cliplabel_pipeline.core.serving.runner import JobRequest
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.service.errors import ApiError, status_of
from cliplabel_pipeline.service.params import label_options
from cliplabel_pipeline.service.routes.images import classify_uploads, read_uploads
from cliplabel_pipeline.service.routes.job_actions import cleanup_job, export_file, restore_job, review_job
from cliplabel_pipeline.service.schemas import (CleanupAnswer, JobAccepted, JobFiles, JobStatusOut, RestoreAnswer, ReviewsAnswer,
                                                 job_status_out)
from cliplabel_pipeline.service.state import ServiceState, ready, state_of

router = APIRouter()
MAX_BATCH_JOBS = 1000
CHUNK = 1 << 20


def open_job(state: ServiceState, job_id: str) -> JobFolder:
    """The job's folder: 400 for an id that is not a single folder name, 404 when there is no such job (the
    server's own paths are not named to the client)."""
    job = JobFolder(state.settings.results_root, job_id, state.settings.waits)
    if not is_real_folder(job.path):
        raise UnknownJob(f"unknown job {shown(job_id)!r}: no such folder under the results root")
    return job


def _status_url(request: Request, job_id: str) -> str:
    """The job's status URL: from ``CLIPLABEL_PUBLIC_URL`` when set, else a path on this server. Never from the
    request's ``Host`` header, which the client chooses (a link to another host in a trusted answer)."""
    path = request.scope.get("root_path", "") + request.app.url_path_for("job_status", job_id=job_id)
    base = state_of(request).settings.public_url
    return f"{base.rstrip('/')}{path}" if base else path


def _exports(text) -> tuple[str, ...]:
    if text is not None and not isinstance(text, str):
        raise ApiError(422, "export: a comma-separated string of formats, such as \"csv,jsonl\"")
    formats = tuple(dict.fromkeys(x.strip() for x in (text or "").split(",") if x.strip()))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ApiError(422, f"export: unknown format {shown(unknown[0])!r} (use {', '.join(EXPORT_FORMATS)})")
    return formats


def _submit(request: Request, state: ServiceState, job_id: str, job_request: JobRequest) -> tuple[JobAccepted, bool]:
    job = open_job(state, job_id)
    status, created = state.runner.submit(job, job_request)
    return JobAccepted(job_id=job.id, state=status.state, status_url=_status_url(request, job.id)), created


@router.post("/classify/job/{job_id}", status_code=202, response_model=JobAccepted, tags=["jobs"],
             summary="Label a job folder in the background")
def classify_job(request: Request, response: Response, job_id: str, top_k: int | None = Query(None),
                 min_confidence: float | None = Query(None),
                 min_match: float | None = Query(None),
                 export: str | None = Query(None, description="extra export formats to write: csv,jsonl (the ZIP is always made)"),
                 state: ServiceState = Depends(ready)) -> JobAccepted:
    """202 with the status URL; 409 (with the same URL) while the job is already queued or running."""
    options = label_options(request, state.settings, top_k, min_confidence, min_match=min_match)
    accepted, created = _submit(request, state, job_id, JobRequest(options.settings, _exports(export)))
    if not created:
        raise ApiError(409, f"job {shown(job_id)!r} is already {accepted.state}: poll its status URL",
                       status_url=accepted.status_url, state=accepted.state)
    response.headers["Location"] = accepted.status_url
    return accepted


@router.get("/classify/job/{job_id}", name="job_status", response_model=JobStatusOut,
            response_model_exclude_none=True, tags=["jobs"], summary="A job's state, with counts and files when done")
def job_status(request: Request, job_id: str, state: ServiceState = Depends(ready)) -> JobStatusOut:
    job = open_job(state, job_id)
    return job_status_out(state.runner.status(job), _status_url(request, job.id))


@router.post("/classify/batch", status_code=202, tags=["jobs"], summary="Label many jobs, or many uploaded images",
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": {"type": "object", "properties": {
                     "job_ids": {"type": "array", "items": {"type": "string"}},
                     "top_k": {"type": "integer"}, "min_confidence": {"type": "number"},
                     "min_match": {"type": "number"}, "export": {"type": "string"}}}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                     "top_k": {"type": "integer"}, "min_confidence": {"type": "number"},
                     "min_match": {"type": "number"}, "labels": {"type": "string"}}}}}}})
async def classify_batch(request: Request, response: Response, state: ServiceState = Depends(ready)):
    """JSON ``{"job_ids": [...]}``: 202 with one status URL each (or that job's error). Multipart ``files``:
    200 with the labels, as ``POST /classify/image``."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=state.settings.max_upload_files + 1) as form:
            files = [f for f in form.getlist("files") if hasattr(f, "read")]
            options = label_options(request, state.settings, form.get("top_k"), form.get("min_confidence"),
                                    form.get("labels"), form.get("min_match"))
            uploads = await read_uploads(files, state.settings.max_upload_bytes)
        response.status_code = 200
        return await classify_uploads(state, uploads, options, getattr(request.state, "arrival", None))
    payload = await _json(request)
    ids = payload.get("job_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ApiError(422, 'send {"job_ids": ["<job id>", ...]} as JSON, or images as multipart field "files"')
    if len(ids) > MAX_BATCH_JOBS:
        raise ApiError(413, f"{len(ids)} jobs in one batch is over the {MAX_BATCH_JOBS}-job limit")
    options = label_options(request, state.settings, payload.get("top_k"), payload.get("min_confidence"),
                            min_match=payload.get("min_match"))
    job_request = JobRequest(options.settings, _exports(payload.get("export")))
    jobs = []
    for job_id in dict.fromkeys(ids):
        try:
            accepted, created = _submit(request, state, job_id, job_request)
            jobs.append({**accepted.model_dump(), "accepted": created})
        except CliplabelError as exc:
            jobs.append({"job_id": shown(job_id), "error": shown(exc), "status": status_of(exc)})
        except ApiError as exc:
            jobs.append({"job_id": shown(job_id), "error": exc.detail, "status": exc.status})
    if not any("status_url" in j for j in jobs):  # nothing accepted, nothing already running: an error status
        status = Counter(j["status"] for j in jobs).most_common(1)[0][0]
        raise ApiError(status, f"no job of the batch was accepted ({jobs[0]['error']})", jobs=jobs)
    return {"jobs": jobs}


async def _json(request: Request) -> dict:
    try:
        payload = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the body is not valid JSON (or nested too deep)") from None
    if not isinstance(payload, dict):
        raise ApiError(422, 'send a JSON object: {"job_ids": ["<job id>", ...]}')
    return payload


@router.post("/classify/cleanup/{job_id}", tags=["actions"], summary="List, quarantine or purge low-confidence items")
def classify_cleanup(job_id: str, min_confidence: float | None = Query(None, ge=0, le=1),
                     min_match: float | None = Query(None, ge=0, le=1),
                     apply: bool = Query(False, description="move them to quarantine/ (default: a dry run)"),
                     purge: bool = Query(False, description="with apply: delete them for good"),
                     state: ServiceState = Depends(ready)) -> CleanupAnswer:
    if purge and not apply:
        raise ApiError(422, "purge deletes files for good and only works together with apply=true")
    conf = state.settings.min_confidence if min_confidence is None else min_confidence
    match = state.settings.min_match if min_match is None else min_match
    return cleanup_job(state, open_job(state, job_id), conf, match, apply, purge)


@router.post("/classify/restore/{job_id}", tags=["actions"], summary="Put quarantined items back, byte for byte")
def classify_restore(job_id: str, state: ServiceState = Depends(ready)) -> RestoreAnswer:
    return restore_job(state, open_job(state, job_id))


@router.get("/classify/export/{job_id}", tags=["exports"], summary="Download an export, streamed from disk")
async def classify_export(job_id: str,
                          format: str = Query("zip", description="zip, csv, jsonl, or a folder as a ZIP: coco, hf, "
                                                                 "labelstudio"),
                          only: Literal["all", "flagged"] = Query("all", description="flagged: the review queue, "
                                                                                     "least sure first"),
                          image_root: str | None = Query(None, description="labelstudio: URL prefix of the images "
                                                                           "(followed by <job>/<path>)"),
                          state: ServiceState = Depends(ready)) -> StreamingResponse:
    job = open_job(state, job_id)
    if format not in EXPORT_FORMATS:
        raise ApiError(422, f"format must be one of {', '.join(EXPORT_FORMATS)}, got {shown(format)[:20]!r}")
    fh, size = await run_in_threadpool(export_file, state, job, format, only, image_root)
    folder = format in FOLDER_FORMATS
    media = "application/zip" if folder else {
        "zip": "application/zip", "csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}[format]

    def chunks():
        with fh:
            while block := fh.read(CHUNK):
                yield block

    name = f"{job.export_folder(format, only).name}.zip" if folder else job.export_file(format).name
    return StreamingResponse(chunks(), media_type=media, headers={
        "Content-Length": str(size), "Content-Disposition": _attachment(name)})


def _attachment(name: str) -> str:
    from urllib.parse import quote

    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f'attachment; filename="{ascii_name}"; filename*=UTF-8\'\'{quote(name)}'


@router.post("/jobs/{job_id}/reviews", tags=["reviews"],
             summary="Take people's decisions back: a Label Studio export, an edited COCO file or review lines",
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": {}}, "application/x-ndjson": {"schema": {}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"}}}}}}})
async def post_reviews(request: Request, job_id: str,
                       reviewer: str | None = Query(None, max_length=200, description="who decided, where the file "
                                                                                      "does not say"),
                       state: ServiceState = Depends(ready)) -> ReviewsAnswer:
    """The file as the body (or multipart field ``file``); 200 with what was taken and what was not matched."""
    job = open_job(state, job_id)
    name = "the request body"
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            if not hasattr(upload, "read"):
                raise ApiError(422, 'send the file of reviews as the body, or as multipart field "file"')
            name, data = shown(upload.filename or "file"), await upload.read()
    else:
        data = await request.body()
    return await run_in_threadpool(review_job, state, job, name, data, reviewer)


@router.get("/jobs/{job_id}/files", response_model=JobFiles, tags=["exports"],
            summary="Every file of a job, with sizes")
def list_files(job_id: str, state: ServiceState = Depends(ready)) -> JobFiles:
    job = open_job(state, job_id)
    return JobFiles(job_id=job.id, files=job_files(job))
