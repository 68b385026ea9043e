"""The names of the Dagster definitions, each spelled once, here: the definitions take their names from this
module, and the HTTP service launches runs and reads their status by them without importing the definitions.
Plain text, no Dagster import: every face may read it, the core never needs to. A test checks that no other
module of the package spells one of these names as a string, and that the definitions are named as here.

The asset checks are named by the functions that make them (``defs/checks.py``).
"""

LOCATION = "cliplabel"  # the code location, wherever it is served (workspace.yaml, `dg dev`, the Helm chart)
DEFINITIONS_MODULE = "cliplabel_pipeline.definitions"
JOBS_PARTITIONS = "jobs"  # one dynamic partition per job folder, keyed by its name

# The assets, in the order the data flows (the design card's seven, the reviews laid over the labels, and the
# rows one writer ingests on a cluster).
CONCEPT_TEXT_EMBEDDINGS = "concept_text_embeddings"
JOB_IMAGE_EMBEDDINGS = "job_image_embeddings"
JOB_REVIEWS = "job_reviews"
JOB_LABEL_ASSIGNMENTS = "job_label_assignments"
JOB_CONFIDENCE_FILTERED_SETS = "job_confidence_filtered_sets"
JOB_GROUPS = "job_groups"
JOB_EXPORTS = "job_exports"
JOB_METRICS_REPORT = "job_metrics_report"
JOB_LINEAGE_ROWS = "job_lineage_rows"
ASSETS = (CONCEPT_TEXT_EMBEDDINGS, JOB_IMAGE_EMBEDDINGS, JOB_REVIEWS, JOB_LABEL_ASSIGNMENTS,
          JOB_CONFIDENCE_FILTERED_SETS, JOB_GROUPS, JOB_EXPORTS, JOB_METRICS_REPORT, JOB_LINEAGE_ROWS)

# What runs them.
LABEL_JOBS_JOB = "label_jobs_job"
APPLY_REVIEWS_JOB = "apply_reviews_job"
CLEANUP_JOB = "cleanup_job"
RESTORE_JOB = "restore_job"
NEW_JOBS_SENSOR = "new_jobs_sensor"
JOB_REVIEWS_SENSOR = "job_reviews_sensor"
LABEL_BACKFILL_SCHEDULE = "label_backfill_schedule"
JOBS = (LABEL_JOBS_JOB, APPLY_REVIEWS_JOB, CLEANUP_JOB, RESTORE_JOB)
SENSORS = (NEW_JOBS_SENSOR, JOB_REVIEWS_SENSOR)
SCHEDULES = (LABEL_BACKFILL_SCHEDULE,)
