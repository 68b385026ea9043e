"""Jobs embedded on the GPU: each job's ``source.png`` and masks decoded once, every item built on the device.

A per-file loader decodes the source once per mask and a cut-out per object; on a GPU that decoding, not the
model, bounds the rate. Here a pool of threads (one per core; Pillow decodes without the GIL) decodes the
source and each mask once and sends them to the device as uint8, where ``device_crops`` builds the items:
the mask rule, the crop, the grey outside, the square padding or centre crop, the resize and normalisation
that the CPU path (``reading.images``) and ``CLIPImageProcessor`` produce, to a level.

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
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from cliplabel_pipeline.core.encoding.device_crops import Boxes, build_crops, mask_boxes
from cliplabel_pipeline.core.encoding.embedding import LETTERBOXED, _load, skip_reason
from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.encoding.model import ClipHandle
from cliplabel_pipeline.core.reading.images import _decode, _mask_inside, _uses_alpha, load_picture
from cliplabel_pipeline.core.reading.items import Item, JobItems
from cliplabel_pipeline.core.reading.picture import TRANSPOSE, ImageSkipped, decoding
from cliplabel_pipeline.core.values import Embedded, EmbeddedItem, SkippedItem

log = logging.getLogger(__name__)
MASK_CHUNK = 256  # masks stacked on the device at once (80 MB of 480p levels)
AHEAD = 1024  # decoded items waiting at most (bounds host and device memory whatever the job's size)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def _png_size(fh) -> tuple[int, int] | None:
    """Width and height from a PNG's header (24 bytes; no pixels decoded), None for anything else."""
    head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _mask_levels(fh, source_size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[h, w]`` at the source's size, on where >= 128: an 8-bit grey mask as stored, any other form
    through ``reading.images``' own rule. Orientation and size as ``crop_source_under_mask`` takes them."""
    mask = _decode(fh, None, reduced=False)
    with decoding():
        img = mask.image
        if img.mode == "L" and not _uses_alpha(img):
            inside = img
        else:
            inside = _mask_inside(img)
        if mask.orientation != 1:
            inside = inside.transpose(TRANSPOSE[mask.orientation])
        if inside.size != source_size:
            (sw, sh), (mw, mh) = source_size, inside.size
            if abs(mw / mh - sw / sh) > 0.01:
                raise ImageSkipped(f"mask is {mw}x{mh} but source.png is {sw}x{sh} (different aspect ratio)")
            inside = inside.resize(source_size, Image.NEAREST)
        return np.asarray(inside)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A decoded picture onto the device as uint8 (copied first: Pillow's buffers are read-only)."""
    return torch.from_numpy(np.array(array, order="C")).to(device)


class _Decoders:
    """Decoding tasks for the items of a stream of jobs, run by a pool, their results taken in order."""

    def __init__(self, device: torch.device, workers: int):
        self.device = device
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="decode-job")

    def source(self, job: _Job) -> Future:
        item = job.manifest.source

        def run():
            if item is None:
                return None
            try:
                pic, area = _load(job.manifest.job, item.path, lambda fh: load_picture(fh, reduced=False))
                return _Source(_to_device(np.asarray(pic.rgb()), self.device), pic.size, area)
            except Exception as exc:  # the source's own skip, and every mask's reason
                return skip_reason(item.path, exc)
        return self.pool.submit(run)

    def mask(self, job: _Job, source: Future, item: Item) -> Future:
        def run():
            src = source.result()
            if src is None:
                raise ImageSkipped("the job has no source.png to cut the mask from")
            if isinstance(src, str):
                raise ImageSkipped(f"source.png unreadable ({src})")
            return _to_device(_load(job.manifest.job, item.path, lambda fh: _mask_levels(fh, src.size)), self.device)
        return self.pool.submit(self._guarded, item, run)

    def header(self, job: _Job, item: Item) -> Future:
        return self.pool.submit(self._guarded, item, lambda: _load(job.manifest.job, item.path, _png_size))

    def picture(self, job: _Job, item: Item) -> Future:
        def run():
            pic, area = _load(job.manifest.job, item.path, load_picture)
            return _to_device(np.asarray(pic.rgb()), self.device), pic.size, area
        return self.pool.submit(self._guarded, item, run)

    @staticmethod
    def _guarded(item: Item, run):
        try:
            return run()
        except Exception as exc:  # one item's failure is that item's skip, never the job's end
            return ImageSkipped(skip_reason(item.path, exc))

    def close(self) -> None:
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
                         workers: int | None = None, build_device: str | None = None) -> Iterator[Embedded]:
    """The ``Embedded`` of each job of ``manifests``, in order: the same items, skips and (to a level of each
    crop) the same embeddings as ``embed_images`` over ``job_loaders``. Crops are built on ``build_device``
    (the model's device unless given); ``workers`` decoding threads (the machine's cores)."""
    device = torch.device(build_device or handle.device)
    batch_size = batch_size or choose_batch_size(device)
    workers = workers or os.cpu_count() or 1
    decoders = _Decoders(device, workers)
    encoder = _Encoder(handle, batch_size)
    waiting: deque[_Job] = deque()
    manifests = iter(manifests)
    ahead: deque[tuple[_Job, Future]] = deque()  # the next jobs' sources decode while this one is built

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
                _build_job(handle, job, source, decoders, encoder)
            waiting.append(job)
            while waiting and waiting[0].encoded == waiting[0].crops:
                yield _embedded(handle, waiting.popleft(), encoder)
        with torch.inference_mode():
            encoder.flush()
        while waiting:
            yield _embedded(handle, waiting.popleft(), encoder)
    finally:
        decoders.close()


def _build_job(handle: ClipHandle, job: _Job, source: Future, decoders: _Decoders, encoder: _Encoder) -> None:
    """Decode the job's masks once (its source is on its way), build every item's crop on the device, hand them
    to the encoder."""
    items = job.manifest.items
    job.first_batch = len(encoder.batch_seconds)
    masks = {it.path.split("/", 1)[1]: i for i, it in enumerate(items) if it.kind == "mask"}
    paired = {i for i, it in enumerate(items) if it.kind == "object" and it.path.split("/", 1)[1] in masks}
    order = [i for i, it in enumerate(items) if it.kind == "mask"]
    order += [i for i, it in enumerate(items) if it.kind not in ("mask", "source")]
    tasks: deque[tuple[int, str, Future]] = deque()
    submitted = 0

    def top_up():
        nonlocal submitted
        while submitted < len(order) and len(tasks) < AHEAD:
            i = order[submitted]
            if items[i].kind == "mask":
                tasks.append((i, "mask", decoders.mask(job, source, items[i])))
            elif i in paired:
                tasks.append((i, "header", decoders.header(job, items[i])))
            else:
                tasks.append((i, "picture", decoders.picture(job, items[i])))
            submitted += 1

    top_up()
    job.source = source.result()
    chunk: list[tuple[int, torch.Tensor]] = []
    late: list[tuple[int, Future]] = []  # cut-outs their mask does not stand for: decoded after all
    while tasks:
        i, task, future = tasks.popleft()
        result = future.result()
        top_up()
        if task == "header":
            m = masks[items[i].path.split("/", 1)[1]]
            if not isinstance(result, ImageSkipped) and m in job.rows and job.boxes[m] == result:
                job.same_as[i] = m
            else:
                late.append((i, decoders.picture(job, items[i])))
        elif isinstance(result, ImageSkipped):
            job.reasons[i] = str(result)
        elif task == "mask":
            chunk.append((i, result))
        else:
            _build_picture(handle, job, i, *result, encoder)
        if chunk and (len(chunk) == MASK_CHUNK or not tasks or tasks[0][1] != "mask"):
            _build_masks(handle, job, chunk, encoder)
            chunk = []
    for i, future in late:
        result = future.result()
        if isinstance(result, ImageSkipped):
            job.reasons[i] = str(result)
        else:
            _build_picture(handle, job, i, *result, encoder)
    if job.manifest.source is not None:
        s = items.index(job.manifest.source)
        if isinstance(job.source, _Source):
            _build_picture(handle, job, s, job.source.picture, job.source.size, job.source.area, encoder)
        else:
            job.reasons[s] = job.source
    job.source = None  # the decoded source goes with the job's last crop


def _build_masks(handle: ClipHandle, job: _Job, chunk: list[tuple[int, torch.Tensor]], encoder: _Encoder) -> None:
    levels = torch.stack([t for _, t in chunk])
    xyxy, areas = mask_boxes(levels)
    areas_cpu, xyxy_cpu = areas.cpu().tolist(), xyxy.cpu()
    keep = [k for k, a in enumerate(areas_cpu) if a > 0]
    for k, (i, _) in enumerate(chunk):
        if areas_cpu[k] == 0:
            job.reasons[i] = "empty mask (no foreground pixels)"
    if not keep:
        return
    sel = torch.tensor(keep, device=levels.device)
    boxes = xyxy[sel]
    wh = boxes[:, 2:] - boxes[:, :2]
    pixels = build_crops(job.source.picture, Boxes(boxes, wh), levels[sel], True, handle.crop_size,
                         handle.image_size, handle.mean, handle.std, handle.dtype)
    for row, k in enumerate(keep):
        i = chunk[k][0]
        job.rows[i], job.areas[i] = job.crops + row, int(areas_cpu[k])
        x0, y0, x1, y1 = xyxy_cpu[k].tolist()
        job.boxes[i] = (x1 - x0, y1 - y0)
    encoder.add(job, pixels)


def _build_picture(handle: ClipHandle, job: _Job, i: int, picture: torch.Tensor, size: tuple[int, int], area: int,
                   encoder: _Encoder) -> None:
    """One item that is a whole picture of its own (the source, a cut-out): its crop on the device."""
    h, w = picture.shape[:2]
    dev = picture.device
    letterboxed = job.manifest.items[i].kind in LETTERBOXED
    if not letterboxed and min(handle.image_size, int(handle.image_size * max(size) / min(size))) < handle.crop_size:
        job.reasons[i] = f"image of {size[0]}x{size[1]} is too small to crop to {handle.crop_size}"  # as resize_and_crop
        return
    boxes = Boxes(torch.tensor([[0, 0, w, h]], device=dev), torch.tensor([list(size)], device=dev))
    pixels = build_crops(picture, boxes, None, letterboxed, handle.crop_size, handle.image_size,
                         handle.mean, handle.std, handle.dtype)
    job.rows[i], job.areas[i] = job.crops, area
    encoder.add(job, pixels)


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
