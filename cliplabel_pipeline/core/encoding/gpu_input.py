"""Jobs embedded on the GPU: each job's ``source.png`` and masks decoded once, every item built on the device.

A per-file loader decodes the source once per mask and a cut-out per object; on a GPU that decoding, not the
model, bounds the rate. Here a pool of processes (``decode_pool``, one per core) decodes the source and
each mask once, a mask into its box and the bool mask inside it; they go to the device as uint8, where
``device_crops`` builds the masks' items: the crop, the grey outside, the square padding, the resize and
normalisation that the CPU path (``reading.images``) produces, to a level. Whole pictures (the source's own
item, a cut-out decoded itself) come from the workers as the CPU path's own uint8 crops.

A cut-out is decoded only where no mask stands for it. A segmentation service writes ``objects/<name>`` as the
source under ``masks/<name>``, cropped to the mask's box; such a cut-out's crop is the mask's crop, pixel for
pixel (outside the mask both are neutral grey), so it takes the mask's embedding and area. Its PNG header is
read (no pixels) to check it has the mask's box size; any other cut-out, or one whose mask is skipped, is
decoded as the CPU path does. (A cut-out that differs from the source under its mask inside the box, or whose
pixels are damaged behind a sound header, is labelled as its mask.)

Crops of consecutive jobs share the encoder's batches, whose size is chosen from the device's free memory.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np
import torch
from cliplabel_pipeline.core.encoding.decode_pool import (
    MaskCut, SourceDecoded, decode_masks, decode_pictures, decode_pool, decode_source,
)
from cliplabel_pipeline.core.encoding.device_crops import Boxes, build_crops, uint8_crops
from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.encoding.model import ClipHandle
from cliplabel_pipeline.core.reading.images import OBJECT_MARGIN
from cliplabel_pipeline.core.reading.items import JobItems
from cliplabel_pipeline.core.values import Embedded, EmbeddedItem, SkippedItem

log = logging.getLogger(__name__)
MASK_CHUNK = 256  # masks built on the device at once (their levels cropped to their boxes)
MASK_TASK = 64  # masks a decoding task takes: few enough to spread a job over the cores, enough to amortise a task
PICTURE_TASK = 16  # whole pictures a decoding task takes
AHEAD = 2048  # masks decoded or decoding at most (bounds host memory whatever the job's size)


def choose_batch_size(device: str | torch.device) -> int:
    """The encoder's batch: 1024 where a quarter of the free device memory holds its activations (about 3 MB an
    image for ViT-B/32 in fp16), halved down to 64 otherwise; 32 on the CPU (what the CPU path uses)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 32
    free, _ = torch.cuda.mem_get_info(device)
    size = 1024
    while size > 64 and size * 3 * 2**20 > free // 4:
        size //= 2
    return size


@dataclass
class _Source:
    picture: torch.Tensor  # [H, W, 3] uint8 on the device, upright RGB
    size: tuple[int, int]  # (w, h) in file pixels
    area: int


@dataclass
class _Job:
    """A job on its way: its items in manifest order, their areas, embedding rows and skip reasons."""

    manifest: JobItems
    start: float
    source: _Source | str | None = None  # the decoded source, or why it could not be
    first_batch: int = 0  # the encoder's batches from this one on ran while the job was in flight
    areas: dict[int, int] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    rows: dict[int, int] = field(default_factory=dict)  # item -> row among the job's encoded crops
    same_as: dict[int, int] = field(default_factory=dict)  # cut-out -> the mask whose crop it is
    boxes: dict[int, tuple[int, int]] = field(default_factory=dict)  # mask -> its box's (w, h)
    crops: int = 0  # crops handed to the encoder
    embeddings: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (first row, rows)
    encoded: int = 0


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A decoded picture onto the device as uint8 (copied first where its buffer is read-only)."""
    return torch.from_numpy(array if array.flags.writeable else np.array(array, order="C")).to(device)


class _Decoders:
    """Decoding tasks for a stream of jobs, run by a pool (``decode_pool``), results taken in order."""

    def __init__(self, handle: ClipHandle, workers: int, processes: bool, pool: Executor | None):
        self.sizes = (handle.image_size, handle.crop_size)
        self.owned = pool is None
        self.pool = pool or decode_pool(workers, processes)

    def source(self, job: _Job) -> Future | None:
        item = job.manifest.source
        if item is None:
            return None
        has_masks = any(it.kind == "mask" for it in job.manifest.items)
        return self.pool.submit(decode_source, job.manifest.job, item.path, has_masks, *self.sizes)

    def masks(self, job: _Job, masks: list[str], cutouts: list[str | None], size: tuple[int, int]) -> Future:
        return self.pool.submit(decode_masks, job.manifest.job, masks, cutouts, size)

    def pictures(self, job: _Job, items: list[tuple[str, str]]) -> Future:
        return self.pool.submit(decode_pictures, job.manifest.job, items, *self.sizes)

    def close(self) -> None:
        if self.owned:
            self.pool.shutdown(cancel_futures=True)


class _Encoder:
    """Crops of consecutive jobs gathered into full batches for the model; rows handed back to their jobs."""

    def __init__(self, handle: ClipHandle, batch_size: int):
        self.handle, self.batch_size = handle, batch_size
        self.pending: list[tuple[_Job, int, torch.Tensor]] = []  # (job, first row, pixels)
        self.count = 0
        self.batch_seconds: list[float] = []

    def add(self, job: _Job, pixels: torch.Tensor) -> None:
        self.pending.append((job, job.crops, pixels))
        job.crops += len(pixels)
        self.count += len(pixels)
        while self.count >= self.batch_size:
            self._encode(self.batch_size)

    def flush(self) -> None:
        if self.count:
            self._encode(self.count)

    def _encode(self, size: int) -> None:
        parts, taken = [], 0
        while taken < size:
            job, first, pixels = self.pending[0]
            use = min(len(pixels), size - taken)
            parts.append((job, first, pixels[:use]))
            if use == len(pixels):
                self.pending.pop(0)
            else:
                self.pending[0] = (job, first + use, pixels[use:])
            taken += use
        t0 = time.perf_counter()
        emb = encode_images(self.handle, torch.cat([p for _, _, p in parts]), self.batch_size)
        self.batch_seconds.append(time.perf_counter() - t0)
        self.count -= size
        row = 0
        for job, first, pixels in parts:
            job.embeddings.append((first, emb[row:row + len(pixels)]))
            job.encoded += len(pixels)
            row += len(pixels)


def embed_jobs_on_device(handle: ClipHandle, manifests: Iterable[JobItems], batch_size: int | None = None,
                         workers: int | None = None, build_device: str | None = None, processes: bool = True,
                         pool: Executor | None = None) -> Iterator[Embedded]:
    """The ``Embedded`` of each job of ``manifests``, in order: the same items, skips and (to a level of each
    crop) the same embeddings as ``embed_images`` over ``job_loaders``. Crops are built on ``build_device``
    (the model's device unless given); decoding by ``pool`` if given, else by ``workers`` processes (the
    machine's cores; threads where ``processes`` is False)."""
    device = torch.device(build_device or handle.device)
    batch_size = batch_size or choose_batch_size(device)
    workers = workers or os.cpu_count() or 1
    decoders = _Decoders(handle, workers, processes, pool)
    encoder = _Encoder(handle, batch_size)
    waiting: deque[_Job] = deque()
    manifests = iter(manifests)
    ahead: deque[tuple[_Job, Future | None]] = deque()  # the next jobs' sources decode while this one is built

    def open_next():
        while len(ahead) < 2 * workers and (manifest := next(manifests, None)) is not None:
            job = _Job(manifest, time.perf_counter())
            ahead.append((job, decoders.source(job)))

    try:
        open_next()
        while ahead:
            job, source = ahead.popleft()
            open_next()
            with torch.inference_mode():  # per step: a generator's caller must not inherit the mode
                _build_job(handle, job, source, decoders, encoder, device)
            waiting.append(job)
            while waiting and waiting[0].encoded == waiting[0].crops:
                yield _embedded(handle, waiting.popleft(), encoder)
        with torch.inference_mode():
            encoder.flush()
        while waiting:
            yield _embedded(handle, waiting.popleft(), encoder)
    finally:
        decoders.close()


def _build_job(handle: ClipHandle, job: _Job, source: Future | None, decoders: _Decoders, encoder: _Encoder,
               device: torch.device) -> None:
    """The job's masks decoded in runs (its source first: they are cut from it), each run's crops built on the
    device; cut-outs their mask stands for take its crop, other pictures come as the CPU path's crops."""
    items = job.manifest.items
    job.first_batch = len(encoder.batch_seconds)
    src = None if source is None else source.result()
    masks = [i for i, it in enumerate(items) if it.kind == "mask"]
    by_name = {it.path.split("/", 1)[1]: i for i, it in enumerate(items) if it.kind == "object"}
    paired: set[int] = set()
    pictures = []
    if isinstance(src, SourceDecoded) and masks:
        job.source = _Source(_to_device(src.rgb, device), src.size, src.area)
        runs: deque[tuple[list[int], list[int | None], Future]] = deque()
        for start in range(0, len(masks), MASK_TASK):
            run = masks[start:start + MASK_TASK]
            cut = [by_name.get(items[i].path.split("/", 1)[1]) for i in run]
            paired.update(c for c in cut if c is not None)
            runs.append((run, cut, None))
        chunk: list[tuple[int, MaskCut]] = []
        submitted = 0

        def top_up():
            nonlocal submitted
            while submitted < len(runs) and submitted - done < AHEAD // MASK_TASK:
                run, cut, _ = runs[submitted]
                runs[submitted] = (run, cut, decoders.masks(job, [items[i].path for i in run],
                                                            [None if c is None else items[c].path for c in cut],
                                                            src.size))
                submitted += 1
        done = 0
        top_up()
        while done < len(runs):
            run, cut, future = runs[done]
            results = future.result()
            runs[done] = (run, cut, None)
            done += 1
            top_up()
            for i, c, result in zip(run, cut, results):
                if isinstance(result, str):
                    job.reasons[i] = result
                    if c is not None:
                        pictures.append(c)
                    continue
                chunk.append((i, result))
                if c is not None:
                    box = result.box
                    if result.cutout_size == (box[2] - box[0], box[3] - box[1]):
                        job.same_as[c] = i
                    else:
                        pictures.append(c)
                if len(chunk) == MASK_CHUNK:
                    _build_masks(handle, job, chunk, encoder)
                    chunk = []
        if chunk:
            _build_masks(handle, job, chunk, encoder)
    else:
        reason = "the job has no source.png to cut the mask from" if src is None else f"source.png unreadable ({src})"
        for i in masks:
            job.reasons[i] = reason
    pictures += [i for i, it in enumerate(items) if it.kind not in ("mask", "source") and i not in paired]
    futures = [(run, decoders.pictures(job, [(items[i].path, items[i].kind) for i in run]))
               for run in (pictures[k:k + PICTURE_TASK] for k in range(0, len(pictures), PICTURE_TASK))]
    for run, future in futures:
        for i, result in zip(run, future.result()):
            if isinstance(result, str):
                job.reasons[i] = result
            else:
                _add_crop(handle, job, i, *result, encoder, device)
    if job.manifest.source is not None:
        s = items.index(job.manifest.source)
        if not isinstance(src, SourceDecoded):
            job.reasons[s] = src
        elif isinstance(src.own, str):
            job.reasons[s] = src.own
        else:
            _add_crop(handle, job, s, src.own, src.area, encoder, device)
    job.source = None  # the decoded source goes with the job's last crop


def _build_masks(handle: ClipHandle, job: _Job, chunk: list[tuple[int, MaskCut]], encoder: _Encoder) -> None:
    """A run of decoded masks' crops built on the device from the source: their cropped masks padded into one
    array, sent at once."""
    height = max(c.inside.shape[0] for _, c in chunk)
    width = max(c.inside.shape[1] for _, c in chunk)
    levels = np.zeros((len(chunk), height, width), np.uint8)
    for k, (_, cut) in enumerate(chunk):
        h, w = cut.inside.shape
        levels[k, :h, :w] = cut.inside
        levels[k, :h, :w] *= 255
    dev = job.source.picture.device
    boxes = torch.tensor([c.box for _, c in chunk], device=dev)
    pixels = build_crops(job.source.picture, Boxes(boxes, boxes[:, 2:] - boxes[:, :2]),
                         torch.from_numpy(levels).to(dev), True, handle.crop_size, handle.image_size,
                         handle.mean, handle.std, handle.dtype, levels_at_box=True, margin=OBJECT_MARGIN)
    for row, (i, cut) in enumerate(chunk):
        job.rows[i], job.areas[i] = job.crops + row, cut.area
    encoder.add(job, pixels)


def _add_crop(handle: ClipHandle, job: _Job, i: int, pixels: np.ndarray, area: int, encoder: _Encoder,
              device: torch.device) -> None:
    """One item whose uint8 crop the CPU path's own code made (a source's, a cut-out's): normalised on the device."""
    crop = torch.from_numpy(np.array(pixels, order="C")[None]).to(device)
    job.rows[i], job.areas[i] = job.crops, area
    encoder.add(job, uint8_crops(crop, handle.mean, handle.std, handle.dtype))


def _embedded(handle: ClipHandle, job: _Job, encoder: _Encoder) -> Embedded:
    dim = handle.model.config.projection_dim
    crops = np.empty((job.crops, dim), np.float32)
    for first, rows in job.embeddings:
        crops[first:first + len(rows)] = rows
    items, rows, skipped = [], [], []
    for i, it in enumerate(job.manifest.items):
        if i in job.reasons:
            skipped.append(SkippedItem(it.path, it.kind, job.reasons[i]))
            continue
        m = job.same_as.get(i, i)
        items.append(EmbeddedItem(it.path, it.kind, job.areas[m]))
        rows.append(job.rows[m])
    emb = crops[rows] if rows else np.zeros((0, dim), np.float32)
    return Embedded(items, emb, skipped, handle.info, encoder.batch_seconds[job.first_batch:],
                    time.perf_counter() - job.start)
