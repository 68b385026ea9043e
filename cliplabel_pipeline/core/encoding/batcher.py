"""Dynamic batching: concurrent callers' crops merged into batches by one encoding thread.

Each caller submits the uint8 crops of its request and gets a future of their embeddings. The encoding
thread takes the first waiting crop, gathers whatever else arrives within ``max_wait_s`` (or until
``max_batch`` crops), encodes them in one forward pass and hands every caller its rows. A lone request
waits ``max_wait_s`` at most; under load the queue fills while a batch is encoded, so batches are full and
the model runs as it does on a job. Batches are padded to a power of two, so the model sees at most
``log2(max_batch) + 1`` shapes (oneDNN keeps a kernel plan per shape) and pads at most twice over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.encoding.model import ClipHandle
from cliplabel_pipeline.core.reading.images import normalise_batch

log = logging.getLogger(__name__)


@dataclass
class _Request:
    crops: np.ndarray  # [n, H, W, 3] uint8
    future: Future = field(default_factory=Future)
    rows: list[np.ndarray] = field(default_factory=list)
    taken: int = 0  # crops already put in a batch


@dataclass
class BatchStats:
    """What the encoding thread has done: for logs, readiness and the benchmark."""

    batches: int = 0
    images: int = 0
    busy_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


def padded_size(n: int, max_batch: int) -> int:
    """The batch shape ``n`` crops are encoded at: the next power of two, at most ``max_batch``."""
    size = 1
    while size < n:
        size *= 2
    return min(max(size, n), max(max_batch, n))


class ImageBatcher:
    """One encoding thread over ``encoder``; ``submit`` is safe from any thread. Use as a context manager."""

    def __init__(self, encoder: ClipHandle, max_batch: int = 32, max_wait_s: float = 0.005):
        self.encoder = encoder
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="encode-batches", daemon=True)
        self._thread.start()

    def submit(self, crops: np.ndarray) -> Future:
        """A future of the unit-norm embeddings ``[n, d]`` of ``crops`` ``[n, H, W, 3]`` (uint8)."""
        request = _Request(np.asarray(crops, np.uint8))
        if len(request.crops) == 0:
            request.future.set_result(np.zeros((0, self.encoder.model.config.projection_dim), np.float32))
        else:
            self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Finish what was submitted, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> "ImageBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        carry: _Request | None = None  # a request the previous batch could only take part of
        closing = False
        while True:
            req = carry if carry is not None else (None if closing else self._queue.get())
            if req is None:
                return
            parts, count, carry = [], 0, None
            deadline = time.perf_counter() + self.max_wait_s
            while True:
                take = min(len(req.crops) - req.taken, self.max_batch - count)
                parts.append((req, req.taken, req.taken + take))
                req.taken += take
                count += take
                if req.taken < len(req.crops):
                    carry = req  # the rest goes first into the next batch
                    break
                if count >= self.max_batch:
                    break
                remaining = deadline - time.perf_counter()
                try:
                    req = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if req is None:
                    closing = True
                    break
            self._encode(parts)

    def _encode(self, parts: list[tuple[_Request, int, int]]) -> None:
        t0 = time.perf_counter()
        crops = np.concatenate([req.crops[start:stop] for req, start, stop in parts])
        try:
            pixels = normalise_batch(crops, self.encoder.mean, self.encoder.std)
            emb = encode_images(self.encoder, pixels, padded_size(len(crops), self.max_batch))
        except Exception as exc:  # the callers of this batch get the error; the loop serves the next one
            log.exception("encoding a batch of %d failed", len(crops))
            for req, _, _ in parts:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.images += len(crops)
        self.stats.busy_s += time.perf_counter() - t0
        offset = 0
        for req, start, stop in parts:
            req.rows.append(emb[offset:offset + stop - start])
            offset += stop - start
            if stop == len(req.crops) and not req.future.done():
                req.future.set_result(np.concatenate(req.rows))
