"""Dagster resources: the shared CLIP model, the results root, and the DuckDB file."""


from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.core.model import DEFAULT_MODEL
from cliplabel_pipeline.core.store import default_db_path


class ClipModelResource(dg.ConfigurableResource):
    """CLIP loaded once per process (the run's in-process executor shares it across steps)."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    cache_dir: str | None = None
    _labeller: Labeller | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._labeller = None  # loaded on first use: sensors and checks never pay for the model

    def labeller(self, top_k: int = 3, min_confidence: float = 0.25, batch_size: int | None = None) -> Labeller:
        if self._labeller is None:
            cache = Path(self.cache_dir) if self.cache_dir else None
            self._labeller = Labeller.create(self.model, self.device, self.precision, cache_dir=cache)
        base = self._labeller
        return Labeller(base.handle, base.bank, base.text_emb, top_k=top_k, min_confidence=min_confidence,
                        batch_size=batch_size or self.batch_size, text_cache_hit=base.text_cache_hit)


class ResultsRootResource(dg.ConfigurableResource):
    """The folder holding one sub-folder per job; how long a job must be unchanged to count as finished."""

    path: str
    settle_seconds: float = 10.0
    completion_marker: str | None = None  # e.g. "_SUCCESS": ready as soon as the segmentation writes it

    @property
    def root(self) -> Path:
        return Path(self.path)

    def job_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()
                      and not p.name.startswith((".", "_")))


class DuckDBResource(dg.ConfigurableResource):
    """The lineage database; ``None`` means ``cliplabel.duckdb`` beside the results root."""

    path: str | None = None

    def db_path(self, results_root: Path) -> Path:
        return Path(self.path) if self.path else default_db_path(results_root)
