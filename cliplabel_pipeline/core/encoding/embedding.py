"""Streaming images through the image tower: items decoded to uint8 crops, encoded a batch at a time.

On the CPU, a job's items (and loose files) are decoded by background processes at the lowest priority
(``decode_pool.background_pool``, one per core the model uses), up to ``AHEAD`` batches ahead of the one
being encoded: they run on the cycles the model's threads leave (``OMP_WAIT_POLICY=PASSIVE``, set in
``cliplabel_pipeline/__init__.py``, lets those threads sleep instead of spinning between operations), and when the
model is waiting for them they have the machine to themselves. Measured on 2 cores: decoding in threads in
turn with the model cost about 0.9 ms an item outside it, decoding in threads beside the model slowed the
model's threads more than it saved (the GIL and the cores are shared), in processes beside it 0.1-0.3 ms.
Where processes cannot be started (Windows has no forkserver) or a loader is not picklable, a batch is
decoded by a pool of threads, then encoded, in turn. On CUDA the next batch is decoded while the GPU encodes
the current one. Either way a bounded number of batches of resized uint8 crops exist at a time, so memory
stays flat whatever the number of images; normalisation to float happens per batch, vectorised.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cliplabel_pipeline.core.encoding import heap
from cliplabel_pipeline.core.encoding.decode_pool import (
    PORTABLE_LOADERS, PathLoader, as_decoded, background_pool, crop_item, crop_items, give_up, job_item_loaders,
)
from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.encoding.model import ClipHandle
from cliplabel_pipeline.core.reading.images import Picture, normalise_batch
from cliplabel_pipeline.core.heartbeat import memory_fields
from cliplabel_pipeline.core.reading.items import JobItems
from cliplabel_pipeline.core.values import Embedded, EmbeddedItem, SkippedItem

log = logging.getLogger(__name__)
Loader = Callable[[], tuple[Picture | Image.Image, int]]
Job = tuple[EmbeddedItem, Loader]  # the item (area 0 until decoded) and how to decode it
BACKGROUND_TASK = 8  # items a background process decodes per task: small enough to keep both busy to the end
AHEAD = 2  # batches decoded ahead of the one being encoded (2 x 32 crops of 150 KB)
START_BACKGROUND_AT = 4  # batches a job must exceed for this process to start its decoding processes


def decode_item(handle: ClipHandle, job: Job) -> tuple[EmbeddedItem, np.ndarray | None, str | None]:
    """``(item with area, uint8 crop, None)``, or ``(item, None, reason)`` for an item that is skipped."""
    item, loader = job
    pixels, area, reason = crop_item(loader, item.path, item.kind, handle.image_size, handle.crop_size)
    return (item, None, reason) if reason is not None else (EmbeddedItem(item.path, item.kind, area), pixels, None)


def _decoded_chunks(handle: ClipHandle, jobs: list[Job], size: int) -> Iterator[list[tuple]]:
    """Chunks of ``size`` decoded items, in order: decoded ahead by background processes where every loader can
    run in one; else on CUDA the next chunk decoded while one is consumed, on the CPU each chunk in turn."""
    cuda = handle.device.startswith("cuda")
    if not cuda and all(isinstance(loader, PORTABLE_LOADERS) for _, loader in jobs):
        # starting the processes (about 0.3 s, then their imports) pays off from a few batches on; a process
        # that has them already uses them for any job
        pool = background_pool(max(1, torch.get_num_threads()), start=len(jobs) > START_BACKGROUND_AT * size)
        if pool is not None:
            yield from _background_chunks(handle, jobs, size, pool)
            return
    workers = min(8, os.cpu_count() or 1) if cuda else max(1, torch.get_num_threads())
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as threads, \
            ThreadPoolExecutor(1, thread_name_prefix="prefetch") as ahead:
        def decode(chunk: list) -> list[tuple]:
            return list(threads.map(functools.partial(decode_item, handle), chunk))

        pending = None
        for start in range(0, len(jobs), size):
            chunk = jobs[start:start + size]
            if not cuda:
                yield decode(chunk)
                continue
            submitted = ahead.submit(decode, chunk)
            if pending is not None:
                yield pending.result()
            pending = submitted
        if pending is not None:
            yield pending.result()


def _background_chunks(handle: ClipHandle, jobs: list[Job], size: int, pool: Executor) -> Iterator[list[tuple]]:
    """Chunks of ``size`` decoded items, in order, decoded by ``pool``'s processes up to ``AHEAD`` batches ahead
    of the one being encoded. A task that fails as a whole (a decoding process died) is decoded here instead,
    and the pool is dropped, so nothing is lost and the next job starts a new one."""
    tasks: deque[tuple[list[Job], Future | None]] = deque()
    position, out = 0, []

    def top_up() -> None:
        nonlocal position, pool
        while position < len(jobs) and len(tasks) * BACKGROUND_TASK < AHEAD * size:
            part = jobs[position:position + BACKGROUND_TASK]
            position += len(part)
            future = None
            if pool is not None:
                try:
                    future = pool.submit(crop_items, [loader for _, loader in part], handle.image_size,
                                         handle.crop_size)
                except Exception as exc:  # noqa: BLE001 - a pool that cannot take work: decode here from now on
                    pool = give_up(pool, exc)
            tasks.append((part, future))

    top_up()
    while tasks:
        part, future = tasks.popleft()
        crops = None
        if future is not None:
            try:
                crops = future.result()
            except Exception as exc:  # noqa: BLE001 - a dead process or an unpicklable result: decode here
                pool = give_up(pool, exc)
        top_up()
        if crops is None:
            out.extend(decode_item(handle, job) for job in part)
        else:
            out.extend(as_decoded(item, result) for (item, _), result in zip(part, crops))
        while len(out) >= size:
            yield out[:size]
            out = out[size:]
    if out:
        yield out


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
    """``(meta, loader)`` for each item of a job; masks are read as the source region under them (the source
    decoded once)."""
    for item, loader in zip(manifest.items, job_item_loaders(manifest)):
        yield EmbeddedItem(item.path, item.kind), loader


def path_loaders(paths: Iterable[Path]) -> Iterator[Job]:
    """``(item, loader)`` for loose image files (``cliplabel classify``)."""
    for path in paths:
        name = Path(path).as_posix()
        yield EmbeddedItem(name, "image"), PathLoader(os.fspath(path))
