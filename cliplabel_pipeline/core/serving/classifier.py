"""Labelling uploaded images with one warm ``Labeller``: check, encode in shared batches, score.

The steps are apart so that a server can run each where it belongs: ``check`` (headers only), ``encode``
(a future from the one ``ImageBatcher``, which decodes and encodes), ``score`` (cheap). A request's own
labels build a small concept index once; the last few are kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import replace

from threadpoolctl import threadpool_limits

from cliplabel_pipeline.core.encoding.batcher import ImageBatcher
from cliplabel_pipeline.core.encoding.decode_pool import BytesLoader
from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.core.labelling.labels import assign_labels
from cliplabel_pipeline.core.reading.uploads import Upload, UploadLimits, check_uploads
from cliplabel_pipeline.core.serving.tally import Tally
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import BankSpec, Embedded, EmbeddedItem, LabelRecord, LabelSettings

BANKS_KEPT = 8  # request-specific label sets whose index stays built


class UploadClassifier:
    """A loaded ``Labeller`` serving concurrent callers; ``close()`` stops its encoding thread."""

    def __init__(self, labeller: Labeller, settings: Settings):
        # Scoring a request is one small matrix product, but OpenBLAS's idle threads spin for a while after
        # each call and take the cores the model runs on: a lone request measured 100 ms with them, 37 ms
        # without. One BLAS thread for this (serving) process; the model keeps its own threads.
        threadpool_limits(1, user_api="blas")
        self.labeller = labeller
        self.limits = UploadLimits(settings.max_upload_bytes, settings.max_upload_pixels, settings.max_upload_files)
        self.batcher = ImageBatcher(labeller.encoder, settings.batch_size, settings.batch_wait_ms / 1000)
        self._banks: OrderedDict[BankSpec, Labeller] = OrderedDict()
        self.tally = Tally()  # uploads labelled since start: kept, flagged, by which rule
        self._banks_lock = threading.Lock()

    def close(self) -> None:
        self.batcher.close()

    def check(self, uploads: list[Upload]) -> None:
        """Refuse (``UploadTooLarge``, ``UnsupportedUpload``) before anything is decoded."""
        check_uploads(uploads, self.limits)

    def encode(self, uploads: list[Upload], arrival=None) -> Future:
        """A future of the ``Embedded`` of ``uploads``, decoded and preprocessed exactly as ``cliplabel
        classify`` does a file, and encoded together with other callers' images."""
        return self.batcher.submit([(EmbeddedItem(up.filename, "image"), BytesLoader(up.data, up.filename))
                                    for up in uploads], arrival)

    def labeller_for(self, labels: tuple[str, ...] = ()) -> Labeller:
        """The bank's labeller, or one whose concepts are ``labels`` (built once, then kept)."""
        if not labels:
            return self.labeller
        spec = replace(self.labeller.bank_spec, labels=tuple(labels), labels_file=None)
        with self._banks_lock:
            if spec in self._banks:
                self._banks.move_to_end(spec)
                return self._banks[spec]
        built = self.labeller.with_bank(spec)  # outside the lock: one caller's new labels never stall another's
        with self._banks_lock:
            self._banks[spec] = built
            while len(self._banks) > BANKS_KEPT:
                self._banks.popitem(last=False)
        return built

    def score(self, embedded: Embedded, labeller: Labeller, settings: LabelSettings) -> list[LabelRecord]:
        """One record per encoded upload, as ``cliplabel classify`` writes it."""
        records = assign_labels(embedded, labeller.index, settings)
        self.tally.add(records)
        return records
