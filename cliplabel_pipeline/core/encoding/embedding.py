"""Streaming images through the image tower: decode a batch with every core, then encode it.

On the CPU, decoding and encoding take turns: a batch is decoded by a pool of threads (one per core the
model uses; Pillow releases the GIL), then encoded by the model on all cores. Measured on 2 cores, this
beat decoding in a thread beside the model, whose work slowed the model's threads by more than it cost
itself. On CUDA the next batch is decoded while the GPU encodes the current one. Either way at most two
batches of resized uint8 crops exist at a time, so memory stays flat whatever the number of images;
normalisation to float happens per batch, vectorised.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cliplabel_pipeline.core.encoding import heap
from cliplabel_pipeline.core.encoding.decode_pool import crop_of, skip_reason
from cliplabel_pipeline.core.encoding.decode_pool import load_item as _load
from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.reading.images import (
    ImageSkipped, Picture, crop_source_under_mask, load_picture, normalise_batch,
)
from cliplabel_pipeline.core.encoding.model import ClipHandle
from cliplabel_pipeline.core.heartbeat import memory_fields
from cliplabel_pipeline.core.reading.items import JobItems
from cliplabel_pipeline.core.values import Embedded, EmbeddedItem, SkippedItem

log = logging.getLogger(__name__)
Loader = Callable[[], tuple[Picture | Image.Image, int]]
Job = tuple[EmbeddedItem, Loader]  # the item (area 0 until decoded) and how to decode it


def decode_item(handle: ClipHandle, job: Job) -> tuple[EmbeddedItem, np.ndarray | None, str | None]:
    """``(item with area, uint8 crop, None)``, or ``(item, None, reason)`` for an item that is skipped."""
    item, loader = job
    try:
        img, area = loader()
        pixels = crop_of(img, item.kind, handle.image_size, handle.crop_size)
        return EmbeddedItem(item.path, item.kind, area), pixels, None
    except Exception as exc:  # noqa: BLE001 - whatever one item raises is that item's: a skip, never the job's end
        return item, None, skip_reason(item.path, exc)


def _decoded_chunks(handle: ClipHandle, jobs: Iterable[Job], size: int) -> Iterator[list[tuple]]:
    """Chunks of ``size`` decoded items, in order; on CUDA the next chunk is decoded while one is consumed."""
    cuda = handle.device.startswith("cuda")
    workers = min(8, os.cpu_count() or 1) if cuda else max(1, torch.get_num_threads())
    jobs = iter(jobs)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="prefetch") as ahead:
        def decode(chunk: list) -> list[tuple]:
            return list(pool.map(functools.partial(decode_item, handle), chunk))

        pending = None
        while chunk := list(itertools.islice(jobs, size)):
            if not cuda:
                yield decode(chunk)
                continue
            submitted = ahead.submit(decode, chunk)
            if pending is not None:
                yield pending.result()
            pending = submitted
        if pending is not None:
            yield pending.result()


def embed_images(handle: ClipHandle, jobs: Iterable[Job], batch_size: int = 32,
                 progress: Callable[[int], None] | None = None) -> Embedded:
    """Decode, preprocess and encode every ``(meta, loader)``; unreadable ones land in ``skipped`` with reasons.

    Embeddings are written straight into one array sized for every item (its pages become resident only
    as rows are written), so no second copy is made at the end.
    """
    start = time.perf_counter()
    jobs = list(jobs)  # loaders are small closures; knowing the count sizes the output once
    emb = np.empty((len(jobs), handle.model.config.projection_dim), np.float32)
    metas: list[EmbeddedItem] = []
    skipped: list[SkippedItem] = []
    batch_secs: list[float] = []
    pending_meta: list[EmbeddedItem] = []
    pending_pix: list[np.ndarray] = []

    def flush() -> None:
        t0 = time.perf_counter()
        pixels = normalise_batch(np.stack(pending_pix), handle.mean, handle.std)
        emb[len(metas):len(metas) + len(pending_meta)] = encode_images(handle, pixels, batch_size)
        batch_secs.append(time.perf_counter() - t0)
        heap.settle()
        rate = len(pending_meta) / max(batch_secs[-1], 1e-9)
        log.info("batch=%d items=%d dur=%.2fs items/s=%.1f %s", len(batch_secs), len(pending_meta), batch_secs[-1],
                 rate, memory_fields())
        metas.extend(pending_meta)
        pending_meta.clear()
        pending_pix.clear()
        if progress:
            progress(len(metas) + len(skipped))

    for chunk in _decoded_chunks(handle, jobs, batch_size):
        for meta, pixels, reason in chunk:
            if reason is not None:
                skipped.append(SkippedItem(meta.path, meta.kind, reason))
                continue
            pending_meta.append(meta)
            pending_pix.append(pixels)
            if len(pending_pix) == batch_size:
                flush()
    if pending_pix:
        flush()
    if progress:
        progress(len(jobs))  # every item encoded or skipped, the last ones skipped too
    heap.settle(force=True)  # the job's buffers handed back, whatever comes next
    return Embedded(metas, emb[:len(metas)], skipped, handle.info, batch_secs, time.perf_counter() - start)


def job_loaders(manifest: JobItems) -> Iterator[Job]:
    """``(meta, loader)`` for each item of a job; masks are read as the source region under them."""
    source_cache: dict[str, Picture | str] = {}
    lock = threading.Lock()  # masks are decoded by several threads; the source is read once

    def source_picture() -> Picture:
        with lock:
            return _source_picture()

    def _source_picture() -> Picture:
        if "img" not in source_cache:
            item = manifest.source
            try:
                if item is None:
                    raise ImageSkipped("the job has no source.png to cut the mask from")
                # masks need every pixel
                source_cache["img"] = _load(manifest.job, item.path, lambda fh: load_picture(fh, reduced=False))[0]
            except ImageSkipped as exc:
                source_cache["img"] = f"source.png unreadable ({exc})"
        value = source_cache["img"]
        if isinstance(value, str):
            raise ImageSkipped(value)
        return value

    for item in manifest.items:
        meta = EmbeddedItem(item.path, item.kind)
        if item.kind == "mask":
            yield meta, (lambda p=item.path: _load(manifest.job, p, lambda fh: crop_source_under_mask(source_picture(), fh)))
        else:
            yield meta, (lambda p=item.path: _load(manifest.job, p, load_picture))


def path_loaders(paths: Iterable[Path]) -> Iterator[Job]:
    """``(item, loader)`` for loose image files (``cliplabel classify``)."""
    for path in paths:
        yield EmbeddedItem(Path(path).as_posix(), "image"), (lambda p=Path(path): load_picture(p))
