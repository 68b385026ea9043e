"""The Dagster code location: assets, checks, sensors, schedule, resources, IO managers and the executor."""

import os

from cliplabel_pipeline.core.settings import ENV_VARS, Settings, offline_hub

offline_hub()  # never download at run time; `cliplabel model pull` does that

import dagster as dg  # noqa: E402

from cliplabel_pipeline.defs.assets.embeddings import concept_text_embeddings, job_image_embeddings  # noqa: E402
from cliplabel_pipeline.defs.assets.labels import job_label_assignments  # noqa: E402
from cliplabel_pipeline.defs.assets.lineage import job_lineage_rows  # noqa: E402
from cliplabel_pipeline.defs.assets.reports import job_exports, job_groups, job_metrics_report  # noqa: E402
from cliplabel_pipeline.defs.assets.reviews import job_reviews  # noqa: E402
from cliplabel_pipeline.defs.checks import all_checks  # noqa: E402
from cliplabel_pipeline.defs.cluster import executor_for  # noqa: E402
from cliplabel_pipeline.defs.io_managers import ConceptIndexIOManager, JobFolderIOManager  # noqa: E402
from cliplabel_pipeline.defs.jobs import apply_reviews_job, cleanup_job, label_jobs_job, restore_job  # noqa: E402
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource  # noqa: E402
from cliplabel_pipeline.defs.schedules import label_backfill_schedule_at  # noqa: E402
from cliplabel_pipeline.defs.sensors import job_reviews_sensor_every, new_jobs_sensor_every  # noqa: E402

ENV = Settings.from_env()  # the one read of the CLIPLABEL_* variables where the definitions are built


def _bound(field: str, value):
    """An ``EnvVar`` where the setting's variable is set (the UI then shows where it came from), else the value."""
    return dg.EnvVar(ENV_VARS[field]) if ENV_VARS[field] in os.environ else value


clip = ClipModelResource(model=_bound("model", ENV.model), device=_bound("device", ENV.device),
                         precision=_bound("precision", ENV.precision),
                         labels_file=_bound("labels_file", None), templates_file=_bound("templates_file", None))
results_root = ResultsRootResource(path=_bound("results_root", str(ENV.results_root)), settle_seconds=ENV.settle_s)

defs = dg.Definitions(
    assets=[concept_text_embeddings, job_image_embeddings, job_reviews, job_label_assignments, job_groups, job_exports,
            job_metrics_report, *([job_lineage_rows] if ENV.spools_lineage else [])],
    asset_checks=all_checks,
    jobs=[label_jobs_job, apply_reviews_job, cleanup_job, restore_job],
    sensors=[new_jobs_sensor_every(ENV.sensor_interval_s), job_reviews_sensor_every(ENV.sensor_interval_s)],
    schedules=[label_backfill_schedule_at(ENV.backfill_cron)],
    resources={
        "clip": clip,
        "results_root": results_root,
        "duckdb": DuckDBResource(path=_bound("db", None), spool_rows=ENV.spools_lineage),
        "job_folder_io": JobFolderIOManager(results_root=results_root),
        "concept_index_io": ConceptIndexIOManager(clip=clip),
    },
    # One process per run: the CLIP model loads once and every step of the run shares it. Or, with
    # CLIPLABEL_EXECUTOR=celery (deploy/), every step on a Celery worker, each worker loading the model once.
    executor=executor_for(ENV),
)
