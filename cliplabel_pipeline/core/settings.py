"""Every setting of cliplabel with its one default and its environment variable.

The CLI, the Dagster resources and the HTTP service all read their defaults from ``Settings``; nothing else
reads ``CLIPLABEL_*`` variables or restates a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DB_FILE = "cliplabel.duckdb"

# field name -> environment variable
ENV_VARS = {
    "model": "CLIPLABEL_MODEL",
    "device": "CLIPLABEL_DEVICE",
    "precision": "CLIPLABEL_PRECISION",
    "batch_size": "CLIPLABEL_BATCH_SIZE",
    "top_k": "CLIPLABEL_TOP_K",
    "min_confidence": "CLIPLABEL_MIN_CONFIDENCE",
    "min_match": "CLIPLABEL_MIN_MATCH",
    "labels_file": "CLIPLABEL_LABELS_FILE",
    "templates_file": "CLIPLABEL_TEMPLATES_FILE",
    "results_root": "CLIPLABEL_RESULTS_ROOT",
    "db": "CLIPLABEL_DB",
    "db_wait_s": "CLIPLABEL_DB_WAIT_S",
    "job_wait_s": "CLIPLABEL_JOB_WAIT_S",
    "cache_dir": "CLIPLABEL_CACHE",
    "cache_max_mb": "CLIPLABEL_CACHE_MAX_MB",
    "settle_s": "CLIPLABEL_SETTLE_S",
    "sensor_interval_s": "CLIPLABEL_SENSOR_INTERVAL_S",
    "heartbeat_s": "CLIPLABEL_HEARTBEAT_S",
    "backfill_cron": "CLIPLABEL_BACKFILL_CRON",
    "api_token": "CLIPLABEL_API_TOKEN",
    "public_url": "CLIPLABEL_PUBLIC_URL",
    "batch_wait_ms": "CLIPLABEL_BATCH_WAIT_MS",
    "max_upload_bytes": "CLIPLABEL_MAX_UPLOAD_BYTES",
    "max_upload_pixels": "CLIPLABEL_MAX_UPLOAD_PIXELS",
    "max_upload_files": "CLIPLABEL_MAX_UPLOAD_FILES",
    "service_runs": "CLIPLABEL_SERVICE_RUNS",
    "executor": "CLIPLABEL_EXECUTOR",
    "broker": "CLIPLABEL_BROKER",
    "result_backend": "CLIPLABEL_RESULT_BACKEND",
    "redeliver_s": "CLIPLABEL_REDELIVER_S",
}
EXECUTORS = ("in_process", "celery")


def offline_hub() -> None:
    """Keep the Hugging Face libraries offline: only ``cliplabel model pull`` may download."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "cliplabel"


@dataclass(frozen=True)
class Settings:
    """What a labelling run uses; ``Settings.from_env()`` applies the ``CLIPLABEL_*`` variables."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    top_k: int = 3
    min_confidence: float = 0.25  # softmax confidence below it: flagged (the best candidate is not clear)
    min_match: float = 0.5  # open-set match below it: flagged (no better than 95% of pictures of nothing)
    labels: tuple[str, ...] = ()
    labels_file: Path | None = None
    templates_file: Path | None = None
    results_root: Path = Path("results")
    db: Path | None = None
    db_wait_s: float = 30.0  # how long a write waits for another process that holds the DuckDB file
    job_wait_s: float = 600.0  # how long labelling, cleanup or restore waits for another process on the same job
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_max_mb: float = 512.0  # text-embedding cache files beyond this are evicted, least recently used first
    settle_s: float = 10.0
    sensor_interval_s: int = 30
    heartbeat_s: float = 30.0
    backfill_cron: str = "0 3 * * *"
    # the HTTP service
    api_token: str | None = field(default=None, repr=False)  # when set, every endpoint but the health checks needs it
    public_url: str | None = None  # e.g. https://labels.example.org: status URLs built on it (else paths)
    batch_wait_ms: float = 50.0  # the longest a batch waits for uploads still arriving or decoding (none: no wait)
    max_upload_bytes: int = 20_000_000  # per uploaded file
    max_upload_pixels: int = 40_000_000  # per uploaded image
    max_upload_files: int = 256  # per request
    service_runs: str = "auto"  # where POST /classify/job runs: "dagster", "local", or "auto" (dagster when DAGSTER_HOME is set)
    # beyond one machine (deploy/): where a Dagster run's steps execute
    executor: str = "in_process"  # "in_process": one process per run; "celery": every step on a Celery worker
    broker: str = "redis://127.0.0.1:6379/0"  # the Celery broker, and its result backend unless result_backend
    result_backend: str | None = None
    redeliver_s: float = 30.0  # a step whose worker stopped renewing its lease (died) goes to another worker after this

    @property
    def spools_lineage(self) -> bool:
        """True when steps run on other hosts: the labelling step writes the job's rows beside its outputs and
        one writer ingests them, so no two hosts ever write the DuckDB file."""
        return self.executor == "celery"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then the environment (empty variables ignored), then ``overrides`` that are not None."""
        env = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for name, var in ENV_VARS.items():
            if env.get(var):
                values[name] = _convert(types[name], env[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def db_path(self) -> Path:
        """``CLIPLABEL_DB``, else ``cliplabel.duckdb`` beside the results root (not inside it: it is no job)."""
        return Path(self.db) if self.db else Path(self.results_root).resolve().parent / DB_FILE

    def with_(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _convert(kind: str, text: str):
    if "int" in kind:
        return int(text)
    if "float" in kind:
        return float(text)
    if "Path" in kind:
        return Path(text).expanduser()
    return text
