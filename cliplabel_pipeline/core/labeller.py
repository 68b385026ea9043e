"""The labelling service: one model, one bank, reused for every job and every ``classify`` call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.concepts import ConceptBank, concept_text_embeddings, load_bank
from cliplabel_pipeline.core.embedding import Embedded, embed_images, job_loaders, path_loaders
from cliplabel_pipeline.core.jobs import Manifest, job_dir, list_job_items
from cliplabel_pipeline.core.labels import assign_labels
from cliplabel_pipeline.core.model import DEFAULT_MODEL, ClipHandle, load_clip
from cliplabel_pipeline.core.outputs import LABELS_FILE, SKIPPED_FILE, write_jsonl


@dataclass
class JobResult:
    """What labelling one job produced."""

    job_id: str
    records: list[dict]
    skipped: list[dict]
    embedded: Embedded
    labels_path: Path


@dataclass
class Labeller:
    """A loaded model with its bank's text embeddings, and the scoring settings."""

    handle: ClipHandle
    bank: ConceptBank
    text_emb: np.ndarray
    top_k: int = 3
    min_confidence: float = 0.25
    batch_size: int = 32
    text_cache_hit: bool = False

    @classmethod
    def create(cls, model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
               labels: list[str] | None = None, labels_file: Path | None = None,
               templates_file: Path | None = None, cache_dir: Path | None = None, **settings) -> "Labeller":
        """Load the model (once per process) and the bank's text embeddings (from the disk cache when there)."""
        handle = load_clip(model, device, precision)
        bank = load_bank(labels, labels_file, templates_file, **_bank_dir_for(handle, labels, labels_file))
        text_emb, hit = concept_text_embeddings(handle, bank, cache_dir)
        return cls(handle, bank, text_emb, text_cache_hit=hit, **settings)

    def _label(self, embedded: Embedded) -> list[dict]:
        return assign_labels(embedded, self.bank.names, self.text_emb, self.handle.logit_scale,
                             self.top_k, self.min_confidence)

    def classify_paths(self, paths: list[Path]) -> tuple[list[dict], list[dict]]:
        """Label loose image files; returns ``(records, skipped)``."""
        embedded = embed_images(self.handle, path_loaders(paths), self.batch_size)
        return self._label(embedded), embedded.skipped

    def embed_job(self, manifest: Manifest, progress=None) -> Embedded:
        embedded = embed_images(self.handle, job_loaders(manifest), self.batch_size, progress)
        embedded.skipped = manifest.skipped + embedded.skipped
        return embedded

    def label_job(self, results_root: Path, job_id: str, progress=None) -> JobResult:
        """Label every item of ``results_root/job_id`` and write ``labels.jsonl`` and ``skipped.jsonl``."""
        folder = job_dir(results_root, job_id)
        embedded = self.embed_job(list_job_items(folder, job_id), progress)
        records = self._label(embedded)
        path = write_jsonl(folder / LABELS_FILE, records)
        write_jsonl(folder / SKIPPED_FILE, embedded.skipped)
        return JobResult(job_id, records, embedded.skipped, embedded, path)


def _bank_dir_for(handle: ClipHandle, labels, labels_file) -> dict:
    """A model directory may ship its own concept list (the toy model does); it is then the default bank."""
    own = handle.model_dir / "concepts.txt"
    if labels or labels_file or not own.is_file():
        return {}
    return {"names_file": own}
