"""The labelling service: one model, one bank, reused for every job and every ``classify`` call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.concepts import ConceptBank, concept_text_embeddings, load_bank
from cliplabel_pipeline.core.embedding import Embedded, embed_images, job_loaders, path_loaders
from cliplabel_pipeline.core.jobs import Manifest
from cliplabel_pipeline.core.labels import assign_labels
from cliplabel_pipeline.core.model import DEFAULT_MODEL, ClipHandle, load_clip, model_identity, resolve_model_dir


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
        handle = load_clip(model, device, precision, cache_dir)
        bank = bank_for_model(handle.model_dir, labels, labels_file, templates_file)
        text_emb, hit = concept_text_embeddings(handle, bank, cache_dir)
        return cls(handle, bank, text_emb, text_cache_hit=hit, **settings)

    def label_embedded(self, embedded: Embedded) -> list[dict]:
        return assign_labels(embedded, self.bank.names, self.text_emb, self.handle.logit_scale,
                             self.top_k, self.min_confidence)

    def classify_paths(self, paths: list[Path]) -> tuple[list[dict], list[dict]]:
        """Label loose image files; returns ``(records, skipped)``."""
        embedded = embed_images(self.handle, path_loaders(paths), self.batch_size)
        return self.label_embedded(embedded), embedded.skipped

    def embed_job(self, manifest: Manifest, progress=None) -> Embedded:
        embedded = embed_images(self.handle, job_loaders(manifest), self.batch_size, progress)
        embedded.skipped = manifest.skipped + embedded.skipped
        return embedded


def bank_for_model(model_dir: Path, labels=None, labels_file=None, templates_file=None) -> ConceptBank:
    """The bank to use: the user's labels, else the model directory's own ``concepts.txt`` (the toy model
    ships one), else the bundled bank."""
    own = Path(model_dir) / "concepts.txt"
    names_file = own if own.is_file() and not (labels or labels_file) else None
    return load_bank(labels, labels_file, templates_file, names_file=names_file)


def current_provenance(model: str, top_k: int, min_confidence: float) -> dict:
    """What labels made now would be made with, without loading the model (for staleness checks)."""
    model_dir = resolve_model_dir(model)
    bank = bank_for_model(model_dir)
    return {"model_identity": model_identity(model_dir), "bank_version": bank.version,
            "templates_hash": bank.templates_hash, "top_k": top_k, "min_confidence": min_confidence}
