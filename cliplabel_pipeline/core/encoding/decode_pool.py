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

import contextlib
import importlib.machinery
import io
import logging
import multiprocessing
import os
import signal
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import psutil
from PIL import Image

from cliplabel_pipeline.core.reading.images import (
    EXACT_PIXELS, OBJECT_MARGIN, _decode, crop_source_under_mask, letterbox, load_picture, mask_inside_array,
    resize_and_crop, upright_mask,
)
from cliplabel_pipeline.core.reading.picture import ALPHA, ImageSkipped, Picture, decoding
from cliplabel_pipeline.core.storage.guarded import NotRegularFile
from cliplabel_pipeline.core.values import EmbeddedItem

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
    return _unexpected(exc)


def _unexpected(exc: Exception) -> str:
    return f"could not be read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def is_cut_out(img) -> bool:
    """Whether a loose file's picture is a cut-out: it has an alpha channel (or a palette with a transparent
    entry), as a segmentation service's ``objects/*.png`` do; a photo has none. Its pixels are not asked: a square
    cut to its box is opaque from edge to edge and still a cut-out."""
    image = img.image if isinstance(img, Picture) else img
    return image.mode in ALPHA or (image.mode == "P" and "transparency" in image.info)


def crop_of(img, kind: str, image_size: int, crop_size: int) -> np.ndarray:
    """The CPU path's uint8 crop of an item's picture: letterboxed with a margin for whole objects (a loose file
    that is a cut-out too), else CLIP's geometry."""
    if kind in LETTERBOXED or (kind == "image" and is_cut_out(img)):
        return letterbox(img, crop_size, OBJECT_MARGIN)
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


_main_lock = threading.Lock()


@contextlib.contextmanager
def _without_the_main_module():
    """Processes started in this block do not run the program's main module. Python's process pools import it
    again in each process they start (and in the forkserver), so a script that labels at its top level, with no
    ``if __name__ == "__main__":``, would label again in every decoding process; the tasks here need nothing
    from it. Python skips that import for a main module named ``__main__``, which this block says it is."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is None or getattr(main, "__file__", None) is None or (spec is not None and spec.name.endswith("__main__")):
        yield  # interactive, or run as ``python -m package``: never imported again
        return
    with _main_lock:
        saved = main.__spec__
        main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
        try:
            yield
        finally:
            main.__spec__ = saved


class DecodingProcesses(ProcessPoolExecutor):
    """A pool of decoding processes that never run the program's main module (``_without_the_main_module``):
    Python starts them when work is submitted, so each submission is made inside that block."""

    def submit(self, fn, /, *args, **kwargs):
        with _without_the_main_module():
            return super().submit(fn, *args, **kwargs)


def decode_pool(workers: int, processes: bool = True) -> Executor:
    """``workers`` processes started by forkserver, or threads where ``processes`` is False or processes
    cannot be made here."""
    if processes:
        try:
            return DecodingProcesses(workers, mp_context=multiprocessing.get_context("forkserver"),
                                     initializer=_decoding_process, initargs=(os.getpid(), False))
        except (OSError, ValueError, NotImplementedError) as exc:
            log.warning("decoding with threads: no process pool here (%s)", exc)
    return ThreadPoolExecutor(workers, thread_name_prefix="decode-job")


class _SourceOnce:
    """A job's source, decoded at full size (masks need every pixel) by the first loader that asks, once;
    or the reason it cannot be, raised for every mask."""

    def __init__(self, job, path: str | None):
        self.job, self.path = job, path
        self._lock = threading.Lock()  # masks are decoded by several threads; the source is read once
        self._value: Picture | str | None = None

    def get(self) -> Picture:
        with self._lock:
            if self._value is None:
                try:
                    if self.path is None:
                        raise ImageSkipped("the job has no source.png to cut the mask from")
                    self._value = load_item(self.job, self.path, lambda fh: load_picture(fh, reduced=False))[0]
                except ImageSkipped as exc:
                    self._value = f"source.png unreadable ({exc})"
            value = self._value
        if isinstance(value, str):
            raise ImageSkipped(value)
        return value


_WORKER_SOURCE: dict[str, _SourceOnce] = {}  # in a decoding process: the source of the job it decodes now
_worker_lock = threading.Lock()
_worker_last_use = [0.0]  # when the last task ended (0: none has started)
_worker_busy = [0]  # tasks running (one at a time in a decoding process)
SOURCE_IDLE_S = 2.0  # a decoding process lets a job's source go once it has had no task for this long


def _worker_source(job, path: str | None, token: str) -> _SourceOnce:
    """The source of the job ``token`` names, in a decoding process: one at a time, replaced by the next job's,
    and let go when the process has been idle ``SOURCE_IDLE_S`` (a decoded source can be hundreds of MB)."""
    with _worker_lock:
        if token not in _WORKER_SOURCE:
            _WORKER_SOURCE.clear()
            _WORKER_SOURCE[token] = _SourceOnce(job, path)
        return _WORKER_SOURCE[token]


@contextlib.contextmanager
def _task():
    """A decoding process's task: while none runs for ``SOURCE_IDLE_S``, the job's source it keeps is let go."""
    with _worker_lock:
        if _worker_last_use[0] == 0.0:
            threading.Thread(target=_forget_idle_source, name="forget-source", daemon=True).start()
        _worker_busy[0] += 1
    try:
        yield
    finally:
        with _worker_lock:
            _worker_busy[0] -= 1
            _worker_last_use[0] = time.monotonic()


def _forget_idle_source() -> None:
    while True:
        time.sleep(SOURCE_IDLE_S / 4)
        with _worker_lock:
            if _WORKER_SOURCE and not _worker_busy[0] and time.monotonic() - _worker_last_use[0] > SOURCE_IDLE_S:
                _WORKER_SOURCE.clear()


class JobItemLoader:
    """Decodes one item of a job: a mask as the source region under it, anything else as itself.

    Callable in the process that made it (the job's source shared by its loaders), and picklable for a decoding
    process, where the loaders of one job (``token``) share that process's own decode of the source."""

    __slots__ = ("job", "path", "kind", "source", "token")

    def __init__(self, job, path: str, kind: str, source: _SourceOnce, token: str):
        self.job, self.path, self.kind, self.source, self.token = job, path, kind, source, token

    def __call__(self) -> tuple[Picture, int] | tuple[Image.Image, int]:
        if self.kind == "mask":
            return load_item(self.job, self.path, lambda fh: crop_source_under_mask(self.source.get(), fh))
        return load_item(self.job, self.path, load_picture)

    def __reduce__(self):
        return _loader_in_worker, (self.job, self.path, self.kind, self.source.path, self.token)


def _loader_in_worker(job, path: str, kind: str, source_path: str | None, token: str) -> JobItemLoader:
    return JobItemLoader(job, path, kind, _worker_source(job, source_path, token), token)


def job_item_loaders(manifest) -> list[JobItemLoader]:
    """A loader for every item of ``manifest`` (``JobItems``), in its order."""
    source = _SourceOnce(manifest.job, manifest.source.path if manifest.source else None)
    token = uuid.uuid4().hex
    return [JobItemLoader(manifest.job, item.path, item.kind, source, token) for item in manifest.items]


def crop_item(loader: Callable, path: str, kind: str, image_size: int, crop_size: int
              ) -> tuple[np.ndarray | None, int, str | None]:
    """``(uint8 crop, area, None)`` of the item ``loader`` decodes, or ``(None, 0, reason)`` when it is skipped
    (logged)."""
    try:
        img, area = loader()
        return crop_of(img, kind, image_size, crop_size), area, None
    except Exception as exc:  # noqa: BLE001 - whatever one item raises is that item's: a skip, never the job's end
        return None, 0, skip_reason(path, exc)


@dataclass(frozen=True)
class Skip:
    """An item a background process skipped: the reason, and whether it was unexpected (logged as a warning
    by the process that reads the result; a decoding process's own log goes nowhere)."""

    reason: str
    unexpected: bool

    def log(self, path: str) -> str:
        if self.unexpected:
            log.warning("skipped %s: %s", path, self.reason)
        else:
            log.info("skipped %s: %s", path, self.reason)
        return self.reason


@dataclass(frozen=True)
class PathLoader:
    """Decodes a loose image file (``cliplabel classify``); picklable for a decoding process."""

    path: str
    kind: str = "image"

    def __call__(self) -> tuple[Picture, int]:
        return load_picture(self.path)


@dataclass(frozen=True)
class BytesLoader:
    """Decodes an upload held in memory (the HTTP service); picklable for a decoding process."""

    data: bytes
    path: str
    kind: str = "image"

    def __call__(self) -> tuple[Picture, int]:
        return load_picture(io.BytesIO(self.data))


PORTABLE_LOADERS = (JobItemLoader, PathLoader, BytesLoader)  # loaders a decoding process can run


def crop_items(loaders: list, image_size: int, crop_size: int) -> list[tuple[np.ndarray, int] | Skip]:
    """For each of ``loaders`` (``PORTABLE_LOADERS``): ``(uint8 crop, area)``, or the ``Skip``; a task of a
    background decoding process, which logs nothing itself."""
    out: list[tuple[np.ndarray, int] | Skip] = []
    with _task():
        for loader in loaders:
            try:
                img, area = loader()
                out.append((crop_of(img, loader.kind, image_size, crop_size), area))
            except ImageSkipped as exc:
                out.append(Skip(str(exc), False))
            except Exception as exc:  # noqa: BLE001 - that item's skip, as skip_reason words it
                out.append(Skip(_unexpected(exc), True))
    return out


PARENT_CHECK_S = 0.5  # how often a decoding process looks for the process it decodes for


def _decoding_process(parent: int, below_the_model: bool) -> None:
    """A decoding process's start: with ``below_the_model`` (background decoding on the CPU), at the lowest
    priority, on what the model's threads leave; always deaf to Ctrl-C
    (the terminal sends it to the whole process group: the labelling process says it was interrupted, and its
    decoding processes end with it, with no traceback of their own); and gone within ``PARENT_CHECK_S`` of the
    process it decodes for, however that one ended (Python's pool only notices an orderly exit: after a kill the
    decoding processes and the forkserver, which each keep the other's pipes open, ran on forever)."""
    if below_the_model:
        try:
            os.nice(19)
        except (AttributeError, OSError) as exc:  # no nice() here: the same work, at the same priority
            log.debug("background decoding at normal priority (%s)", exc)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watched = psutil.Process(parent)
    except psutil.NoSuchProcess:
        os._exit(0)
    threading.Thread(target=_end_with, args=(watched,), name="end-with-parent", daemon=True).start()


def _end_with(parent: psutil.Process) -> None:
    while parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE:  # is_running: not a reused pid
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


_background: Executor | None = None
_background_lock = threading.Lock()


def background_pool(workers: int, start: bool = True) -> Executor | None:
    """This process's pool of ``workers`` decoding processes below the model's priority, started once and kept
    (a later call with another count gets the same pool); None where processes cannot be started here, or
    not started yet when ``start`` is False."""
    global _background
    try:  # asked every time: what the platform offers decides, not what an earlier call found
        context = multiprocessing.get_context("forkserver")
    except ValueError as exc:  # Windows: no forkserver; decoding takes turns with the model
        log.debug("no background decoding here (%s)", exc)
        return None
    with _background_lock:
        if _background is None and start:
            _background = DecodingProcesses(workers, mp_context=context, initializer=_decoding_process,
                                             initargs=(os.getpid(), True))
        return _background


def drop_background_pool(pool: Executor) -> None:
    """Forget ``pool`` (broken: a process died), so the next job starts a new one."""
    global _background
    with _background_lock:
        if _background is pool:
            _background = None
    pool.shutdown(wait=False, cancel_futures=True)


def as_decoded(item: EmbeddedItem, result: tuple[np.ndarray, int] | Skip) -> tuple:
    """A background task's result for ``item`` as ``decode_item`` gives it: ``(item with area, crop, None)``, or
    ``(item, None, reason)`` for a skip (logged here, by the process that reads it)."""
    if isinstance(result, Skip):
        return item, None, result.log(item.path)
    pixels, area = result
    return EmbeddedItem(item.path, item.kind, area), pixels, None


def give_up(pool: Executor | None, exc: Exception) -> None:
    """After ``pool`` failed a task as a whole: say so once, and drop it (the caller decodes in-process)."""
    if pool is not None:
        log.warning("background decoding failed (%s: %s); decoding in this process from now on",
                    type(exc).__name__, exc)
        drop_background_pool(pool)
