"""Labelling uploaded images with one warm ``Labeller``: decode, encode in shared batches, score.

The steps are apart so that a server can run each where it belongs: ``decode`` (CPU-bound, on a worker
thread), ``encode`` (a future from the one ``ImageBatcher``), ``score`` (cheap). A request's own labels
build a small concept index once; the last few are kept.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from cliplabel_pipeline.core.encoding.batcher import ImageBatcher
from cliplabel_pipeline.core.encoding.embedding import decode_item
from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.core.labelling.labels import assign_labels
from cliplabel_pipeline.core.reading.images import load_picture
from cliplabel_pipeline.core.reading.uploads import Upload, UploadLimits, check_uploads
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import BankSpec, Embedded, EmbeddedItem, LabelRecord, LabelSettings, SkippedItem

BANKS_KEPT = 8  # request-specific label sets whose index stays built


@dataclass
class Decoded:
    """The uploads that decoded (their crops, in order) and those that did not (with reasons)."""

    items: list[EmbeddedItem]
    crops: np.ndarray
    skipped: list[SkippedItem]


class UploadClassifier:
    """A loaded ``Labeller`` serving concurrent callers; ``close()`` stops its encoding thread."""

    def __init__(self, labeller: Labeller, settings: Settings):
        self.labeller = labeller
        self.limits = UploadLimits(settings.max_upload_bytes, settings.max_upload_pixels, settings.max_upload_files)
        self.batcher = ImageBatcher(labeller.encoder, settings.batch_size, settings.batch_wait_ms / 1000)
        self._banks: OrderedDict[BankSpec, Labeller] = OrderedDict()
        self._banks_lock = threading.Lock()

    def close(self) -> None:
        self.batcher.close()

    def check(self, uploads: list[Upload]) -> None:
        """Refuse (``UploadTooLarge``, ``UnsupportedUpload``) before anything is decoded."""
        check_uploads(uploads, self.limits)

    def decode(self, uploads: list[Upload]) -> Decoded:
        """Every upload decoded and preprocessed exactly as ``cliplabel classify`` does a file."""
        items, crops, skipped = [], [], []
        for up in uploads:
            item = EmbeddedItem(up.filename, "image")
            meta, pixels, reason = decode_item(self.labeller.encoder,
                                               (item, lambda data=up.data: load_picture(io.BytesIO(data))))
            if reason is not None:
                skipped.append(SkippedItem(up.filename, "image", reason))
            else:
                items.append(meta)
                crops.append(pixels)
        size = self.labeller.encoder.crop_size
        stacked = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        return Decoded(items, stacked, skipped)

    def encode(self, decoded: Decoded) -> Future:
        """A future of the embeddings of ``decoded``, encoded together with other callers' images."""
        return self.batcher.submit(decoded.crops)

    def labeller_for(self, labels: tuple[str, ...] = ()) -> Labeller:
        """The bank's labeller, or one whose concepts are ``labels`` (built once, then kept)."""
        if not labels:
            return self.labeller
        spec = replace(self.labeller.bank_spec, labels=tuple(labels), labels_file=None)
        with self._banks_lock:
            if spec in self._banks:
                self._banks.move_to_end(spec)
                return self._banks[spec]
            built = self.labeller.with_bank(spec)
            self._banks[spec] = built
            while len(self._banks) > BANKS_KEPT:
                self._banks.popitem(last=False)
            return built

    def score(self, decoded: Decoded, embeddings: np.ndarray, labeller: Labeller,
              settings: LabelSettings) -> list[LabelRecord]:
        """One record per decoded upload, as ``cliplabel classify`` writes it."""
        embedded = Embedded(decoded.items, embeddings, decoded.skipped, labeller.encoder.info)
        return assign_labels(embedded, labeller.index, settings)
