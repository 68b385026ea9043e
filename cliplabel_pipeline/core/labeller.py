"""What is expensive to load, loaded once: the image/text encoder and the concept index.

Per-call settings (top-k, threshold, batch size) are passed to each call, never stored here, so one loaded
``Labeller`` serves every job and every ``classify`` call of a process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliplabel_pipeline.core.encoding.embedding import embed_images, path_loaders
from cliplabel_pipeline.core.encoding.model import ClipHandle, load_clip
from cliplabel_pipeline.core.labelling.concepts import bank_for, reference_bank_for
from cliplabel_pipeline.core.labelling.index import ConceptIndex, build_concept_index
from cliplabel_pipeline.core.labelling.labels import assign_labels
from cliplabel_pipeline.core.progress import Progress, counter, step
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import BankSpec, LabelRecord, LabelSettings, SkippedItem


@dataclass(frozen=True)
class Labeller:
    """A loaded CLIP encoder and the concept index of one bank."""

    encoder: ClipHandle
    index: ConceptIndex
    bank_spec: BankSpec
    cache_dir: Path
    cache_max_bytes: int | None = None  # the text-embedding cache's budget

    @classmethod
    def load(cls, settings: Settings, progress: Progress | None = None) -> "Labeller":
        """Load the model (once per process) and the bank's index (from the disk cache when there)."""
        with step(progress, f"loading {settings.model}"):
            encoder = load_clip(settings.model, settings.device, settings.precision, settings.cache_dir)
        return cls.for_encoder(encoder, BankSpec.from_settings(settings), settings.cache_dir, progress,
                               int(settings.cache_max_mb * 1e6))

    @classmethod
    def for_encoder(cls, encoder: ClipHandle, spec: BankSpec, cache_dir: Path, progress: Progress | None = None,
                    cache_max_bytes: int | None = None) -> "Labeller":
        index = build_concept_index(encoder, bank_for(spec, encoder.model_dir), cache_dir, progress,
                                    reference_bank_for(spec, encoder.model_dir), cache_max_bytes)
        return cls(encoder, index, spec, Path(cache_dir), cache_max_bytes)

    def with_bank(self, spec: BankSpec) -> "Labeller":
        """The same encoder with another bank (a job's own labels or templates)."""
        return self if spec == self.bank_spec else Labeller.for_encoder(self.encoder, spec, self.cache_dir,
                                                                        cache_max_bytes=self.cache_max_bytes)

    def classify_paths(self, paths: list[Path], settings: LabelSettings = LabelSettings(),
                       progress: Progress | None = None) -> tuple[list[LabelRecord], list[SkippedItem]]:
        """Label loose image files; returns ``(records, skipped)``."""
        embedded = embed_images(self.encoder, path_loaders(paths), settings.batch_size,
                                counter(progress, "encoding images", len(paths)))
        return assign_labels(embedded, self.index, settings), embedded.skipped
