"""Beyond one machine: the Celery executor, chosen by ``CLIPLABEL_EXECUTOR=celery``, and where its steps go.

    clip      CLIP encoding (the GPU hosts:            celery -A cliplabel_pipeline.defs.celery_app worker -Q clip)
    dagster   every light step (dagster-celery's default queue)
    lineage   the DuckDB writes: one worker on one host, so no two hosts ever write the file

The run workers that send steps and the Celery workers that run them read the same ``CLIPLABEL_*`` settings
through ``celery_app_config``, so both ends agree on the broker and on redelivery.
"""

from __future__ import annotations

import dagster as dg

from cliplabel_pipeline.core.settings import EXECUTORS, Settings

CLIP_QUEUE, DEFAULT_QUEUE, LINEAGE_QUEUE = "clip", "dagster", "lineage"
QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG (dagster-celery is optional)


def on_queue(queue: str) -> dict[str, str]:
    """Op tags that send a step to ``queue`` under the Celery executor (and mean nothing in process)."""
    return {QUEUE_TAG: queue}


def celery_app_config(settings: Settings) -> dict:
    """The Celery executor's config. A step is acknowledged only when it has finished, and its worker renews a
    lease on it while it runs (``step_task.StepLease``): when the worker dies (SIGKILL, a host lost) the broker
    gives the step to another worker ``redeliver_s`` after the last renewal, however long the step. The step's
    writes are atomic and its rows replace the job's, so running it again changes nothing but the time it took.

    The broker away (restarted, or gone for minutes) fails nothing: sending a step, reading its result and a
    worker's connection are retried for about three minutes, so runs wait for it instead of failing."""
    return {
        "broker": settings.broker,
        "backend": settings.result_backend or settings.broker,
        "config_source": {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,  # a worker holds only the step it runs; the rest stay for others
            "broker_transport_options": {
                "visibility_timeout": settings.redeliver_s,
                "unacked_restore_interval": 5, "unacked_restore_throttle": 1,  # look for abandoned steps every 5 s
                "socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 10},
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,  # a worker waits for the broker as long as it takes
            "task_publish_retry_policy": {"max_retries": 60, "interval_start": 0, "interval_step": 1,
                                          "interval_max": 3},  # a step sent while the broker is away: ~3 min
            "result_backend_always_retry": True,  # a run reading its steps' results while the broker is away
            "result_backend_max_retries": 60, "result_backend_max_sleep_between_retries_ms": 3000,
            "result_backend_transport_options": {"socket_timeout": 30, "socket_connect_timeout": 5,
                                                 "health_check_interval": 10},
            "result_expires": 86400,
            "worker_redirect_stdouts_level": "INFO",  # a step's log lines (heartbeats) as INFO in the worker's log
        },
    }


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """In process (one process per run: the model loads once per run), or every step on a Celery worker."""
    if settings.executor not in EXECUTORS:
        raise dg.DagsterInvariantViolationError(
            f"unknown CLIPLABEL_EXECUTOR {settings.executor!r}: use {' or '.join(EXECUTORS)}")
    if settings.executor == "in_process":
        return dg.in_process_executor
    from dagster_celery import celery_executor  # the `cluster` extra

    return celery_executor.configured(celery_app_config(settings), name="celery")
