"""The Celery app a worker host runs, e.g. for a GPU host:

    celery -A cliplabel_pipeline.defs.celery_app worker -Q clip --concurrency 1

It takes the broker and redelivery settings from the same ``CLIPLABEL_*`` variables as the code location,
and each step it runs reconstructs the code location in this long-lived process, so the CLIP model loads once
per worker, not once per step.
"""

import os

from cliplabel_pipeline.core.settings import ENV_VARS, Settings, offline_hub

os.environ.setdefault(ENV_VARS["executor"], "celery")  # the steps a worker receives belong to Celery runs
offline_hub()

from dagster_celery.executor import CeleryExecutor  # noqa: E402
from dagster_celery.make_app import make_app  # noqa: E402

from cliplabel_pipeline.core.organising.grouping import import_clustering  # noqa: E402
from cliplabel_pipeline.defs.cluster import celery_app_config  # noqa: E402
from cliplabel_pipeline.defs.step_task import StepLease, create_step_task  # noqa: E402

app = make_app(CeleryExecutor.for_cli(**celery_app_config(Settings.from_env())).app_args())
app.steps["consumer"].add(StepLease)
execute_plan = create_step_task(app)
import_clustering()  # before the pool forks: no step process grows by scikit-learn mid-run
