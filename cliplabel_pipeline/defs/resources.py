"""Dagster resources: the shared CLIP model, the results root, and the DuckDB file.

``definitions.py`` binds each path and model id to its ``CLIPLABEL_*`` variable (``bound_to_env``), so the UI
shows where it comes from; a variable left unset reads as "" and the resource takes the core ``Settings``
default for it (as ``Settings`` itself reads an empty variable).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from cliplabel_pipeline.core.job_folder import JobFolder, is_real_folder
from cliplabel_pipeline.core.settings import ENV_VARS, Settings, Waits
from cliplabel_pipeline.core.values import BankSpec

DEFAULTS = Settings()


def bound_to_env(field: str) -> dg.EnvVar:
    """The ``EnvVar`` of the setting ``field``. A variable not set is set to "" in this process (and so in the
    run workers it starts), which the resources read as "the default": Dagster refuses an ``EnvVar`` that is not
    set at all, and a default restated here would be a second one."""
    var = ENV_VARS[field]
    os.environ.setdefault(var, "")
    return dg.EnvVar(var)


class ClipModelResource(dg.ConfigurableResource):
    """CLIP, with the bank it labels against (the bundled bank unless ``labels``/``labels_file``/
    ``templates_file`` are set). Empty fields take the ``Settings`` defaults.

    The model is the resource's own state (``_labeller``), set in ``setup_for_execution`` and loaded on first use:
    the sensors, the checks and the steps that score stored embeddings never pay for it. Dagster sets a resource
    up once per run in the in-process executor, but once per *step* on a Celery worker, whose process runs step
    after step; so a process keeps the model it loaded (``_ProcessModel``) and the next step's setup takes it
    from there: a worker loads the model once, not once per step."""

    model: str = DEFAULTS.model
    device: str = DEFAULTS.device
    precision: str = DEFAULTS.precision
    cache_dir: str | None = None
    labels: list[str] = []
    labels_file: str | None = None
    templates_file: str | None = None
    _settings: Settings | None = PrivateAttr(default=None)
    _labeller = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = self._resolved()
        self._labeller = PROCESS_MODEL.kept(self._settings)  # None until a step of this process needs the model

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._labeller = None  # the process keeps it for its next step; this resource is done with it

    def _resolved(self) -> Settings:
        return Settings.from_env(model=self.model or None, device=self.device or None,
                                 precision=self.precision or None,
                                 cache_dir=Path(self.cache_dir) if self.cache_dir else None,
                                 labels=tuple(self.labels), labels_file=Path(self.labels_file) if self.labels_file else None,
                                 templates_file=Path(self.templates_file) if self.templates_file else None)

    @property
    def settings(self) -> Settings:
        """The settings this resource labels with (resolved once, when it is set up)."""
        if self._settings is None:  # used outside a run (a schedule tick, a test)
            self._settings = self._resolved()
        return self._settings

    @property
    def bank_spec(self) -> BankSpec:
        return BankSpec.from_settings(self.settings)

    def labeller(self, bank: BankSpec | None = None):
        """The loaded encoder with the index of ``bank`` (the resource's own bank when None)."""
        if self._labeller is None:
            self._labeller = PROCESS_MODEL.load(self.settings)
        return self._labeller.with_bank(bank) if bank is not None else self._labeller

    def concept_index(self, bank: BankSpec | None = None):
        """The index of ``bank``: from the on-disk cache without loading the model, else built with it."""
        cached = self.cached_index(bank) if self._labeller is None else None
        return cached if cached is not None else self.labeller(bank if bank is not None else self.bank_spec).index

    def cached_index(self, bank: BankSpec | None = None):
        """The index of ``bank`` (the resource's own when None) from the on-disk cache; None when not there."""
        from cliplabel_pipeline.core.encoding.devices import resolve_device, resolve_precision
        from cliplabel_pipeline.core.labelling.index import cached_concept_index

        settings = self.settings
        precision = resolve_precision(settings.precision, resolve_device(settings.device))
        return cached_concept_index(settings.cache_dir, settings.model, precision,
                                    bank if bank is not None else self.bank_spec)


class _ProcessModel:
    """The model this process last loaded, and the settings it was loaded with: at most one at a time."""

    def __init__(self):
        self._settings: Settings | None = None
        self._labeller = None

    def kept(self, settings: Settings):
        """The model already loaded with ``settings``, else None."""
        return self._labeller if settings == self._settings else None

    def load(self, settings: Settings):
        """The model loaded with ``settings``: the one kept, else loaded now (and kept in its place)."""
        from cliplabel_pipeline.core.labeller import Labeller

        if settings != self._settings:
            self._settings, self._labeller = None, None  # one model in memory, never two
            self._labeller, self._settings = Labeller.load(settings), settings
        return self._labeller


PROCESS_MODEL = _ProcessModel()


class ResultsRootResource(dg.ConfigurableResource):
    """The folder holding one sub-folder per job (empty: the ``Settings`` default); how long a job must be
    unchanged to count as finished; how long work on a job waits for another process holding the job or the
    DuckDB file (the jobs it opens carry these waits)."""

    path: str = str(DEFAULTS.results_root)
    settle_seconds: float = DEFAULTS.settle_s
    completion_marker: str | None = None  # e.g. "_SUCCESS": ready as soon as the segmentation writes it
    job_wait_seconds: float = DEFAULTS.job_wait_s
    db_wait_seconds: float = DEFAULTS.db_wait_s

    @property
    def root(self) -> Path:
        return Path(self.path) if self.path else Path(DEFAULTS.results_root)

    def job(self, job_id: str) -> JobFolder:
        return JobFolder.open(self.root, job_id, Waits(self.job_wait_seconds, self.db_wait_seconds))

    def job_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_real_folder(p)
                      and not p.name.startswith((".", "_")))


class DuckDBResource(dg.ConfigurableResource):
    """The lineage database; ``None`` or empty means ``cliplabel.duckdb`` beside the results root. ``spool_rows``
    (Celery deployments): the labelling step writes the job's rows beside its outputs and ``job_lineage_rows``
    ingests them on the one writer's host."""

    path: str | None = None
    spool_rows: bool = False

    def db_path(self, results_root: Path) -> Path:
        return Settings(results_root=Path(results_root), db=Path(self.path) if self.path else None).db_path
