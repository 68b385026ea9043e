"""The Dagster code location: assets, checks, sensor, schedule, resources and the executor, in one place."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time; `cliplabel model pull` does that

import dagster as dg  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from cliplabel_pipeline.assets.embeddings import concept_text_embeddings, job_image_embeddings  # noqa: E402
from cliplabel_pipeline.assets.labels import job_confident_labels, job_label_assignments  # noqa: E402
from cliplabel_pipeline.assets.reports import job_exports, job_groups, job_metrics_report  # noqa: E402
from cliplabel_pipeline.checks import all_checks  # noqa: E402
from cliplabel_pipeline.core.model import DEFAULT_MODEL  # noqa: E402
from cliplabel_pipeline.jobs import cleanup_job, label_jobs_job  # noqa: E402
from cliplabel_pipeline.resources import ClipModelResource, DuckDBResource, ResultsRootResource  # noqa: E402
from cliplabel_pipeline.schedules import label_backfill_schedule  # noqa: E402
from cliplabel_pipeline.sensors import new_jobs_sensor  # noqa: E402

hf_logging.disable_progress_bar()  # run logs carry heartbeats, not progress bars


def _env(name: str, default: str | None):
    """An ``EnvVar`` where the variable is set (so the UI shows where the value came from), else ``default``."""
    return dg.EnvVar(name) if os.environ.get(name) else default


defs = dg.Definitions(
    assets=[concept_text_embeddings, job_image_embeddings, job_label_assignments, job_confident_labels,
            job_groups, job_exports, job_metrics_report],
    asset_checks=all_checks,
    jobs=[label_jobs_job, cleanup_job],
    sensors=[new_jobs_sensor],
    schedules=[label_backfill_schedule],
    resources={
        "clip": ClipModelResource(model=_env("CLIPLABEL_MODEL", DEFAULT_MODEL),
                                  device=_env("CLIPLABEL_DEVICE", "auto"),
                                  precision=_env("CLIPLABEL_PRECISION", "auto")),
        "results_root": ResultsRootResource(path=_env("CLIPLABEL_RESULTS_ROOT", "results"),
                                            settle_seconds=float(os.environ.get("CLIPLABEL_SETTLE_S", "10"))),
        "duckdb": DuckDBResource(path=_env("CLIPLABEL_DB", None)),
    },
    # One process per run: the CLIP model loads once and every step of the run shares it.
    executor=dg.in_process_executor,
)
