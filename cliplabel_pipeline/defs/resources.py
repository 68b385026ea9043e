"""Dagster resources: the shared CLIP model, the results root, and the DuckDB file.

Every default comes from the core's ``Settings``; ``definitions.py`` binds the environment variables.
"""

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from cliplabel_pipeline.core.job_folder import JobFolder, is_real_folder
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import BankSpec

DEFAULTS = Settings()


class ClipModelResource(dg.ConfigurableResource):
    """CLIP loaded once per process (the run's in-process executor shares it across steps), with the bank
    it labels against (the bundled bank unless ``labels``/``labels_file``/``templates_file`` are set)."""

    model: str = DEFAULTS.model
    device: str = DEFAULTS.device
    precision: str = DEFAULTS.precision
    cache_dir: str | None = None
    labels: list[str] = []
    labels_file: str | None = None
    templates_file: str | None = None
    _labeller = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._labeller = None  # loaded on first use: sensors, checks and the label step never pay for it

    @property
    def settings(self) -> Settings:
        return Settings.from_env(model=self.model, device=self.device, precision=self.precision,
                                 cache_dir=Path(self.cache_dir) if self.cache_dir else None,
                                 labels=tuple(self.labels), labels_file=self.labels_file and Path(self.labels_file),
                                 templates_file=self.templates_file and Path(self.templates_file))

    @property
    def bank_spec(self) -> BankSpec:
        return BankSpec.from_settings(self.settings)

    def labeller(self, bank: BankSpec | None = None):
        """The loaded encoder with the index of ``bank`` (the resource's own bank when None)."""
        from cliplabel_pipeline.core.labeller import Labeller

        if self._labeller is None:
            self._labeller = _kept(self.settings, Labeller.load)
        return self._labeller.with_bank(bank) if bank is not None else self._labeller

    def concept_index(self, bank: BankSpec | None = None):
        """The index of ``bank``: from the on-disk cache without loading the model, else built with it."""
        from cliplabel_pipeline.core.encoding.devices import resolve_device, resolve_precision
        from cliplabel_pipeline.core.labelling.index import cached_concept_index

        spec, settings = bank if bank is not None else self.bank_spec, self.settings
        cached = None
        if self._labeller is None:
            precision = resolve_precision(settings.precision, resolve_device(settings.device))
            cached = cached_concept_index(settings.cache_dir, settings.model, precision, spec)
        return cached if cached is not None else self.labeller(spec).index


_KEPT: dict = {}  # the last model this process loaded, by its settings


def _kept(settings: Settings, load):
    """The model this process last loaded with ``settings``, else ``load(settings)`` (which replaces it): a
    Celery worker runs step after step in one process, and loads the model once, not once per step."""
    if settings not in _KEPT:
        _KEPT.clear()
        _KEPT[settings] = load(settings)
    return _KEPT[settings]


class ResultsRootResource(dg.ConfigurableResource):
    """The folder holding one sub-folder per job; how long a job must be unchanged to count as finished."""

    path: str = str(DEFAULTS.results_root)
    settle_seconds: float = DEFAULTS.settle_s
    completion_marker: str | None = None  # e.g. "_SUCCESS": ready as soon as the segmentation writes it

    @property
    def root(self) -> Path:
        return Path(self.path)

    def job(self, job_id: str) -> JobFolder:
        return JobFolder.open(self.root, job_id)

    def job_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_real_folder(p)
                      and not p.name.startswith((".", "_")))


class DuckDBResource(dg.ConfigurableResource):
    """The lineage database; ``None`` means ``cliplabel.duckdb`` beside the results root. ``spool_rows`` (Celery
    deployments): the labelling step writes the job's rows beside its outputs and ``job_lineage_rows``
    ingests them on the one writer's host."""

    path: str | None = None
    spool_rows: bool = False

    def db_path(self, results_root: Path) -> Path:
        return Settings(results_root=Path(results_root), db=Path(self.path) if self.path else None).db_path
