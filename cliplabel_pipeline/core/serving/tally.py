"""What a serving process has labelled since it started: items kept and flagged, and by which rule."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cliplabel_pipeline.core.values import LabelRecord


class Tally:
    """Thread-safe counts of labelled items: kept, flagged, and flagged by each rule (an item flagged by both
    rules counts for both)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items = self.kept = self.flagged = 0
        self.flagged_by = {"confidence": 0, "match": 0}

    def add(self, records: Iterable[LabelRecord]) -> None:
        records = list(records)
        with self._lock:
            self.items += len(records)
            for r in records:
                if r.low_confidence:
                    self.flagged += 1
                    for rule in r.flagged_by or ["confidence"]:  # records from before match: confidence alone
                        self.flagged_by[rule] = self.flagged_by.get(rule, 0) + 1
                else:
                    self.kept += 1

    def to_json(self) -> dict:
        with self._lock:
            return {"items": self.items, "kept": self.kept, "flagged": self.flagged,
                    "flagged_by": dict(self.flagged_by)}
