"""Dynamic batching: concurrent callers' images merged into batches by one encoding thread.

Each caller submits its items (name and loader, as for a job) and gets a future of their ``Embedded``. The
encoding thread takes every request waiting (up to ``max_batch`` images); while callers have announced
requests that are not submitted yet (a server announces each upload as it starts to arrive), it waits for
them, ``max_wait_s`` at most. Nobody announced: the batch starts at once, so a lone request never waits,
and under load the requests that queue while a batch is encoded make the next one full. Then it decodes the whole batch on every core and encodes it in one forward pass, in turn, as ``cliplabel
job`` does: on a small CPU, decoding beside a running forward pass slows both, and callers that decode on
their own threads while the model runs arrive one by one, so batches stay small.

Batches are padded to a power of two, so the model sees at
most ``log2(max_batch) + 1`` shapes (oneDNN keeps a kernel plan per shape) and pads at most twice over.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from cliplabel_pipeline.core.encoding.embedding import Job, decode_item
from cliplabel_pipeline.core.encoding.encode import encode_images
from cliplabel_pipeline.core.encoding.model import ClipHandle
from cliplabel_pipeline.core.reading.images import normalise_batch
from cliplabel_pipeline.core.values import Embedded, SkippedItem

log = logging.getLogger(__name__)
POLL_S = 0.001  # how often the gathering looks for announced requests


@dataclass
class _Request:
    jobs: list[Job]
    future: Future = field(default_factory=Future)


class Arrival:
    """A request announced to the batcher before it is submitted; ``withdraw`` when it never will be."""

    def __init__(self, batcher: "ImageBatcher"):
        self._batcher, self._open = batcher, True
        with batcher._lock:
            batcher._announced += 1

    def withdraw(self) -> None:
        with self._batcher._lock:
            if self._open:
                self._open = False
                self._batcher._announced -= 1


@dataclass
class BatchStats:
    """What the encoding thread has done: for logs and the benchmark."""

    batches: int = 0
    images: int = 0
    decode_s: float = 0.0
    encode_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


def padded_size(n: int, max_batch: int) -> int:
    """The batch shape ``n`` crops are encoded at: the next power of two, at most ``max_batch``."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max(max_batch, n))


class ImageBatcher:
    """One encoding thread over ``encoder``; ``submit`` is safe from any thread. Use as a context manager."""

    def __init__(self, encoder: ClipHandle, max_batch: int = 32, max_wait_s: float = 0.005):
        self.encoder = encoder
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.stats = BatchStats()
        self._lock = threading.Lock()
        self._announced = 0
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._decoders = ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="decode-batch")
        self._handoff: queue.Queue[tuple | None] = queue.Queue(maxsize=1)  # one decoded batch waits at most
        self._gather_thread = threading.Thread(target=self._gather_loop, name="gather-batches", daemon=True)
        self._encode_thread = threading.Thread(target=self._encode_loop, name="encode-batches", daemon=True)
        self._gather_thread.start()
        self._encode_thread.start()

    def announce(self) -> Arrival:
        """Say that a request is on its way (its body is arriving), so the next batch waits for it."""
        return Arrival(self)

    def submit(self, jobs: list[Job], arrival: Arrival | None = None) -> Future:
        """A future of the ``Embedded`` of ``jobs`` (items that could not be decoded are in its ``skipped``)."""
        request = _Request(list(jobs))
        if arrival is not None:
            arrival.withdraw()
        if not request.jobs:
            request.future.set_result(self._embedded([], [], []))
        else:
            self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Finish what was submitted, then stop the threads."""
        self._queue.put(None)
        self._gather_thread.join()
        self._encode_thread.join()
        self._decoders.shutdown()

    def __enter__(self) -> "ImageBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _gather_loop(self) -> None:
        """Gather and decode batches, one ahead of the encoding thread (which the hand-off's size bounds)."""
        carry: _Request | None = None  # a request that did not fit in the previous batch
        closing = False
        while True:
            first = carry if carry is not None else (None if closing else self._queue.get())
            if first is None:
                self._handoff.put(None)
                return
            batch, carry, closed = self._gather(first)
            closing = closing or closed
            try:
                decoded = self._decode(batch)
            except Exception as exc:  # each item's own failure is a skip; this is a broken request
                log.exception("decoding a batch of %d requests failed", len(batch))
                for req in batch:
                    req.future.set_exception(exc)
                continue
            self._handoff.put(decoded)

    def _encode_loop(self) -> None:
        while (decoded := self._handoff.get()) is not None:
            self._deliver(*decoded)

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | None, bool]:
        """The requests of one batch, a request left for the next, and whether ``close`` was called."""
        batch, count = [first], len(first.jobs)
        deadline = time.perf_counter() + self.max_wait_s
        while count < self.max_batch:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                if self._announced <= 0 or time.perf_counter() >= deadline:
                    break
                try:
                    req = self._queue.get(timeout=POLL_S)
                except queue.Empty:
                    continue
            if req is None:
                return batch, None, True
            if count + len(req.jobs) > self.max_batch:
                return batch, req, False
            batch.append(req)
            count += len(req.jobs)
        return batch, None, False

    def _decode(self, batch: list[_Request]) -> tuple[list[_Request], list[tuple], float]:
        t0 = time.perf_counter()
        jobs = [job for req in batch for job in req.jobs]
        decoded = list(self._decoders.map(functools.partial(decode_item, self.encoder), jobs))
        return batch, decoded, time.perf_counter() - t0

    def _deliver(self, batch: list[_Request], decoded: list[tuple], decode_s: float) -> None:
        """Encode the decoded crops in one forward pass and hand every caller its own rows."""
        t0 = time.perf_counter()
        crops = [pixels for _, pixels, reason in decoded if reason is None]
        try:
            emb = self._encode(crops)
        except Exception as exc:  # the callers of this batch get the error; the loop serves the next one
            log.exception("encoding a batch of %d requests failed", len(batch))
            for req in batch:
                req.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.images += len(crops)
        self.stats.decode_s += decode_s
        self.stats.encode_s += time.perf_counter() - t0
        start, row = 0, 0
        for req in batch:
            mine = decoded[start:start + len(req.jobs)]
            start += len(req.jobs)
            items, rows, skipped = [], [], []
            for item, pixels, reason in mine:
                if reason is None:
                    items.append(item)
                    rows.append(emb[row])
                    row += 1
                else:
                    skipped.append(SkippedItem(item.path, item.kind, reason))
            req.future.set_result(self._embedded(items, rows, skipped))

    def _encode(self, crops: list[np.ndarray]) -> np.ndarray:
        dim = self.encoder.model.config.projection_dim
        out = np.empty((len(crops), dim), np.float32)
        for i in range(0, len(crops), self.max_batch):  # a request larger than a batch: several passes
            chunk = np.stack(crops[i:i + self.max_batch])
            pixels = normalise_batch(chunk, self.encoder.mean, self.encoder.std)
            out[i:i + len(chunk)] = encode_images(self.encoder, pixels, padded_size(len(chunk), self.max_batch))
        return out

    def _embedded(self, items, rows, skipped) -> Embedded:
        dim = self.encoder.model.config.projection_dim
        emb = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
        return Embedded(items, emb, skipped, self.encoder.info)
