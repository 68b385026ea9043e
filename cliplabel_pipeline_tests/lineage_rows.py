"""Synthetic labelled jobs for storage tests: rows of a known shape, no model involved."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.pipeline import Labelled
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import (
    BankSpec, Embedded, EmbeddedItem, EncoderInfo, LabelRecord, Provenance, ScoredLabel,
)


def synthetic_labelled(results_root: Path, job_id: str, n: int) -> Labelled:
    """A ``Labelled`` of ``n`` objects all labelled "red star" at 0.9 (the files need not exist)."""
    items = [EmbeddedItem(f"objects/{i}.png", "object", 1) for i in range(n)]
    records = [LabelRecord(i.path, i.kind, [ScoredLabel("red star", 0.9)], "red star", 0.9, 0.3, 0.8, False)
               for i in items]
    encoder = EncoderInfo("toy", "x", "fp32", "cpu")
    provenance = Provenance("toy", "x", "fp32", "cpu", "v", "t", ("a photo of {}.",), BankSpec(), 3, 0.25)
    embedded = Embedded(items, np.zeros((n, 4), np.float32), [], encoder, [1.0], 1.0)
    job = JobFolder(results_root, job_id, Settings.from_env().waits)  # the waits as a face reads them
    return Labelled(job, records, [], provenance, embedded)
