"""``POST /classify/image``: label uploaded images with the warm model, batched with other callers'."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from cliplabel_pipeline.core.reading.uploads import Upload, UploadTooLarge
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.service.errors import ApiError
from cliplabel_pipeline.service.params import LabelOptions, label_options
from cliplabel_pipeline.service.schemas import ClassifyResponse, classify_response
from cliplabel_pipeline.service.state import ServiceState, ready

router = APIRouter(tags=["images"])


async def read_uploads(files: list[UploadFile], max_bytes: int) -> list[Upload]:
    """The uploads' bytes, each read no further than one byte past the limit."""
    uploads = []
    for i, f in enumerate(files):
        data = await f.read(max_bytes + 1)
        name = shown(f.filename or f"upload-{i + 1}")
        if len(data) > max_bytes:
            raise UploadTooLarge(f"{name}: over the {max_bytes:,}-byte limit")
        uploads.append(Upload(name, data))
    return uploads


async def classify_uploads(state: ServiceState, uploads: list[Upload], options: LabelOptions,
                           arrival=None) -> ClassifyResponse:
    """Check the headers, then decode and encode (in a batch shared with other callers, off the event loop)."""
    classifier = state.classifier

    def prepare():
        classifier.check(uploads)
        return classifier.labeller_for(options.labels)

    labeller = await run_in_threadpool(prepare)
    embedded = await asyncio.wrap_future(classifier.encode(uploads, arrival))
    if not embedded.items:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in embedded.skipped)
        raise ApiError(422, f"no image could be read: {reasons}")
    records = classifier.score(embedded, labeller, options.settings)
    return classify_response(records, embedded.skipped, labeller.encoder.name, labeller.index.bank.version)


@router.post("/classify/image", response_model=ClassifyResponse, summary="Label one or more uploaded images")
async def classify_image(request: Request, files: list[UploadFile] = File(..., description="one or more images"),
                         top_k: int | None = Form(None, description="labels kept per image (also a query parameter)"),
                         min_confidence: float | None = Form(None, description="softmax confidence below it flags an image"),
                         min_match: float | None = Form(None, description="open-set match below it flags an image"),
                         labels: str | None = Form(None, description="comma-separated labels replacing the bank"),
                         state: ServiceState = Depends(ready)) -> ClassifyResponse:
    """The same numbers as `cliplabel classify` on the same files. JPEG, PNG and WEBP, checked by content."""
    options = label_options(request, state.settings, top_k, min_confidence, labels, min_match)
    uploads = await read_uploads(files, state.settings.max_upload_bytes)
    return await classify_uploads(state, uploads, options, getattr(request.state, "arrival", None))
