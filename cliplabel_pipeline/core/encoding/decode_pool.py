"""A job's files decoded by a pool of processes (one per core) into compact arrays for the GPU input path.

Threads did not scale: Pillow's PNG decoding, the budget's checks and the mask work hold the GIL, so 16
threads decoded masks at about one core's rate. Each task here decodes a run of items through
``reading.images``' own ``_decode`` (its structure checks and CPU budget hold in the worker) and returns
small arrays: a mask as its bounding box, area and the bool mask cropped to the box; a whole picture (a
source's own crop, a cut-out) as the CPU path's uint8 crop, so those items are exactly the CPU path's; the
source's full RGB only where masks are cut from it. Nothing here imports torch, so a worker starts light.

Processes start by ``forkserver`` (forking after CUDA is initialised is unsafe); where processes cannot be
made, ``decode_pool`` falls back to threads running the same tasks.
"""

from __future__ import annotations

import logging
import multiprocessing
import struct
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cliplabel_pipeline.core.reading.images import (
    EXACT_PIXELS, _decode, letterbox, load_picture, mask_inside_array, resize_and_crop, upright_mask,
)
from cliplabel_pipeline.core.reading.picture import ImageSkipped, decoding
from cliplabel_pipeline.core.storage.guarded import NotRegularFile

log = logging.getLogger(__name__)
LETTERBOXED = {"mask", "object"}  # whole objects: letterboxed, never centre-cropped
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_item(job, rel: str, decode: Callable):
    """``decode`` the item ``rel``, opened as a regular file inside the job (never through a link)."""
    try:
        fh = job.open_item(rel)
    except NotRegularFile as exc:
        raise ImageSkipped(str(exc)) from None
    with fh:
        return decode(fh)


def skip_reason(path: str, exc: Exception) -> str:
    """Why the item ``path`` is skipped after ``exc`` (logged): an ``ImageSkipped``'s own words, else the type."""
    if isinstance(exc, ImageSkipped):
        log.info("skipped %s: %s", path, exc)
        return str(exc)
    log.warning("skipped %s: unexpected %s", path, type(exc).__name__, exc_info=exc)
    return f"could not be read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def crop_of(img, kind: str, image_size: int, crop_size: int) -> np.ndarray:
    """The CPU path's uint8 crop of an item's picture: letterboxed for whole objects, else CLIP's geometry."""
    if kind in LETTERBOXED:
        return letterbox(img, crop_size)
    return resize_and_crop(img, image_size, crop_size)


@dataclass(frozen=True)
class MaskCut:
    """A decoded mask: its box ``x0, y0, x1, y1`` in source pixels, its area, the bool mask inside the box, and
    the (w, h) of the cut-out named as it, from that PNG's header (None: no such cut-out, or not a PNG)."""

    box: tuple[int, int, int, int]
    area: int
    inside: np.ndarray
    cutout_size: tuple[int, int] | None


@dataclass(frozen=True)
class SourceDecoded:
    """A job's source: its upright RGB where masks are cut from it, its size, area and own crop (or reason)."""

    rgb: np.ndarray | None
    size: tuple[int, int]
    area: int
    own: np.ndarray | str


def _png_size(fh) -> tuple[int, int] | None:
    """Width and height from a PNG's header (24 bytes; no pixels decoded), None for anything else."""
    head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _mask_cut(fh, source_size: tuple[int, int]) -> tuple[tuple[int, int, int, int], int, np.ndarray]:
    mask = _decode(fh, None, reduced=False)
    with decoding():
        inside = mask_inside_array(mask.image)
        if mask.orientation != 1 or inside.shape[::-1] != tuple(source_size):
            img = upright_mask(Image.fromarray(inside.view(np.uint8) * np.uint8(255)), mask.orientation, source_size)
            inside = np.asarray(img) != 0
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    if not len(rows):
        raise ImageSkipped("empty mask (no foreground pixels)")
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    cut = np.ascontiguousarray(inside[y0:y1, x0:x1])
    return (x0, y0, x1, y1), int(np.count_nonzero(cut)), cut


def decode_masks(job, masks: list[str], cutouts: list[str | None], source_size: tuple[int, int]) -> list:
    """For each mask of ``masks``: a ``MaskCut`` (with its paired cut-out's header size), or the skip reason."""
    out: list[MaskCut | str] = []
    for rel, cutout in zip(masks, cutouts):
        try:
            box, area, cut = load_item(job, rel, lambda fh: _mask_cut(fh, source_size))
        except Exception as exc:  # noqa: BLE001 - one item's failure is that item's skip, never the job's end
            out.append(skip_reason(rel, exc))
            continue
        size = None
        if cutout is not None:
            try:
                size = load_item(job, cutout, _png_size)
            except Exception:  # noqa: BLE001 - an unreadable header only means the cut-out is decoded itself
                size = None
        out.append(MaskCut(box, area, cut, size))
    return out


def decode_source(job, rel: str, keep_rgb: bool, image_size: int, crop_size: int) -> SourceDecoded | str:
    """The job's source decoded once at full size (masks need every pixel) and its own crop as the CPU path
    makes it (decoded again, reduced, only where the CPU path reduces it: a JPEG over ``EXACT_PIXELS``); or
    the reason it cannot be read."""
    try:
        pic, area = load_item(job, rel, lambda fh: load_picture(fh, reduced=not keep_rgb))
    except Exception as exc:  # noqa: BLE001 - the source's own skip, and every mask's reason
        return skip_reason(rel, exc)
    try:
        own_pic = pic
        if keep_rgb and pic.size[0] * pic.size[1] > EXACT_PIXELS:
            own_pic, area = load_item(job, rel, load_picture)
        own = crop_of(own_pic, "source", image_size, crop_size)
    except Exception as exc:  # noqa: BLE001 - too small to crop, and the like: the source item's skip only
        own = skip_reason(rel, exc)
    rgb = np.asarray(pic.rgb()) if keep_rgb else None
    return SourceDecoded(rgb, pic.size, area, own)


def decode_pictures(job, items: list[tuple[str, str]], image_size: int, crop_size: int) -> list:
    """For each ``(path, kind)``: ``(uint8 crop, area)`` exactly as the CPU path makes it, or the skip reason."""
    out: list[tuple[np.ndarray, int] | str] = []
    for rel, kind in items:
        try:
            pic, area = load_item(job, rel, load_picture)
            out.append((crop_of(pic, kind, image_size, crop_size), area))
        except Exception as exc:  # noqa: BLE001 - that item's skip
            out.append(skip_reason(rel, exc))
    return out


def decode_pool(workers: int, processes: bool = True) -> Executor:
    """``workers`` processes started by forkserver, or threads where ``processes`` is False or processes
    cannot be made here."""
    if processes:
        try:
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        except (OSError, ValueError, NotImplementedError) as exc:
            log.warning("decoding with threads: no process pool here (%s)", exc)
    return ThreadPoolExecutor(workers, thread_name_prefix="decode-job")
