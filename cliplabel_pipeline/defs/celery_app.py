"""The Celery app a worker host runs, e.g. for a GPU host:

    celery -A cliplabel_pipeline.defs.celery_app worker -Q clip --concurrency 1

It takes the broker and redelivery settings from the same ``CLIPLABEL_*`` variables as the code location,
and each step it runs reconstructs the code location in this long-lived process, so the CLIP model loads once
per worker, not once per step.
"""

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app

from cliplabel_pipeline.core.organising.grouping import import_clustering
from cliplabel_pipeline.core.settings import ENV_VARS, Settings, offline_hub
from cliplabel_pipeline.defs.cluster import celery_app_config
from cliplabel_pipeline.defs.step_task import StepLease, create_step_task

# The steps a worker receives belong to Celery runs: the code location each step reconstructs here says so
# (it is imported by the first step, after this line).
os.environ.setdefault(ENV_VARS["executor"], "celery")
offline_hub()

app = make_app(CeleryExecutor.for_cli(**celery_app_config(Settings.from_env())).app_args())
app.steps["consumer"].add(StepLease)
execute_plan = create_step_task(app)
import_clustering()  # before the pool forks: no step process grows by scikit-learn mid-run
