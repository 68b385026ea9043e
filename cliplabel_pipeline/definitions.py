"""The Dagster code location (``dg dev``, ``dg check defs``, ``dg launch``; ``workspace.yaml`` for the daemon
and the webserver): assets, checks, jobs, sensors, schedule, resources and IO managers, and the executor.

The design card's assets: the concept bank's text embeddings, then per job (one dynamic partition each) the
image embeddings, the label assignments (with people's reviews laid over them), the confidence-filtered sets,
the KMeans groups, the exports and the metrics report.
"""

import dagster as dg

from cliplabel_pipeline.core.settings import offline_hub
from cliplabel_pipeline.defs.assets.embeddings import concept_text_embeddings, job_image_embeddings
from cliplabel_pipeline.defs.assets.filtered import job_confidence_filtered_sets
from cliplabel_pipeline.defs.assets.labels import job_label_assignments
from cliplabel_pipeline.defs.assets.lineage import job_lineage_rows
from cliplabel_pipeline.defs.assets.reports import job_exports, job_groups, job_metrics_report
from cliplabel_pipeline.defs.assets.reviews import job_reviews
from cliplabel_pipeline.defs.cluster import executor_for
from cliplabel_pipeline.defs.io_managers import concept_index_io_manager, job_folder_io_manager
from cliplabel_pipeline.defs.jobs import apply_reviews_job, cleanup_job, label_jobs_job, restore_job
from cliplabel_pipeline.defs.loading import definitions_settings
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource, bound_to_env
from cliplabel_pipeline.defs.schedules import label_backfill_schedule_at
from cliplabel_pipeline.defs.sensors import job_reviews_sensor_every, new_jobs_sensor_every

SETTINGS = definitions_settings()  # a bad variable: the load fails with its one line
offline_hub()  # the model is read from the cache, never downloaded at run time: `cliplabel model pull` does that

clip = ClipModelResource(model=bound_to_env("model"), device=bound_to_env("device"),
                         precision=bound_to_env("precision"), cache_dir=bound_to_env("cache_dir"),
                         labels_file=bound_to_env("labels_file"), templates_file=bound_to_env("templates_file"))
results_root = ResultsRootResource(path=bound_to_env("results_root"), settle_seconds=SETTINGS.settle_s,
                                   job_wait_seconds=SETTINGS.job_wait_s, db_wait_seconds=SETTINGS.db_wait_s)

defs = dg.Definitions(
    assets=[concept_text_embeddings, job_image_embeddings, job_reviews, job_label_assignments,
            job_confidence_filtered_sets, job_groups, job_exports, job_metrics_report,
            *([job_lineage_rows] if SETTINGS.spools_lineage else [])],
    jobs=[label_jobs_job, apply_reviews_job, cleanup_job, restore_job],
    sensors=[new_jobs_sensor_every(SETTINGS.sensor_interval_s), job_reviews_sensor_every(SETTINGS.sensor_interval_s)],
    schedules=[label_backfill_schedule_at(SETTINGS.backfill_cron)],
    resources={
        "clip": clip,
        "results_root": results_root,
        "duckdb": DuckDBResource(path=bound_to_env("db"), spool_rows=SETTINGS.spools_lineage),
        "job_folder_io": job_folder_io_manager,
        "concept_index_io": concept_index_io_manager,
    },
    # One process per run: the CLIP model loads once and every step of the run shares it. Or, with
    # CLIPLABEL_EXECUTOR=celery (deploy/), every step on a Celery worker, each worker loading the model once.
    executor=executor_for(SETTINGS),
)
