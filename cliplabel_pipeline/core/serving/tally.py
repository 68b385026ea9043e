"""What a serving process has labelled since it started: items kept and flagged, and by which rule."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cliplabel_pipeline.core.labelling.filtered import FlagCounts, count_flags
from cliplabel_pipeline.core.values import LabelRecord


class Tally:
    """Thread-safe counts of labelled items, summed from ``count_flags`` of each batch: kept, flagged, and
    flagged by each rule (an item flagged by two rules counts for both, and once in ``flagged_by_several``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = FlagCounts()

    def add(self, records: Iterable[LabelRecord]) -> None:
        counts = count_flags(records)
        with self._lock:
            self._counts += counts

    @property
    def counts(self) -> FlagCounts:
        with self._lock:
            return self._counts
