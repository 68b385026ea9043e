"""What a Celery worker host does with a step: run it (dagster-celery's ``execute_plan`` task, with one Dagster
instance per worker process rather than one per step), and keep a lease on it while it lives.

**Leases.** Steps are acknowledged only when they end (``task_acks_late``). Redis holds a received but
unacknowledged step in kombu's ``unacked`` hash, stamped in ``unacked_index`` with the time it was received, and
hands it to another worker once that stamp is older than the visibility timeout (``CLIPLABEL_REDELIVER_S``).
A fixed timeout has to outlast the longest step, so a lost host held its step for an hour. Instead each worker
re-stamps the steps it holds every third of that timeout: a living worker's step, however long, is never given
away, and a dead worker's is given to another within the timeout (plus kombu's 5-second sweep).

**One instance per process.** dagster-celery opens a Dagster instance for every step. On PostgreSQL each one
builds three SQLAlchemy engines and reads the table names through each, and SQLAlchemy's PostgreSQL dialect
memoises its catalogue queries per dialect (``functools.lru_cache``, 128 entries a query), so every step left
its dialects, their statement caches and compiled queries behind: 100-200 KB a step, for the first hundreds of
steps of a worker process. The task keeps the instance its process opened, for as long as the process lives
(no connection is held between steps: the storages use no pool), and closes it when the process ends.
"""

from __future__ import annotations

import logging
import time

from celery import Task, bootsteps, signals
from celery.worker import state as worker_state
from dagster import DagsterInstance
from dagster import _check as check
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.events import EngineEventData
from dagster._core.execution.api import create_execution_plan, execute_plan_iterator
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import serialize_value, unpack_value
from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.core_execution_loop import DELEGATE_MARKER
from dagster_celery.executor import CeleryExecutor

log = logging.getLogger(__name__)


class StepLease(bootsteps.StartStopStep):
    """Re-stamps, every ``visibility_timeout / 3`` seconds, the steps this worker has received and not yet
    acknowledged, so that only a worker's death (no more stamps) lets the broker give them to another."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, c):
        channel = c.task_consumer.channel
        every = max(1.0, float(getattr(channel, "visibility_timeout", 3600)) / 3)
        self.tref = c.timer.call_repeatedly(every, self.renew, (c,), priority=10)

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def renew(self, c) -> None:
        tags = [r.message.delivery_tag for r in list(worker_state.reserved_requests) if r.message is not None]
        channel = getattr(c.task_consumer, "channel", None)
        if not tags or channel is None or not hasattr(channel, "unacked_index_key"):
            return
        try:
            with channel.conn_or_acquire() as client:  # xx: only steps still held (an acknowledged one is gone)
                client.zadd(channel.unacked_index_key, {tag: time.time() for tag in tags}, xx=True)
        except channel.connection_errors as exc:  # the broker away: the stamps wait for it, as the steps do
            log.warning("could not renew the lease of %d step(s): %s", len(tags), exc)


class StepTask(Task):
    """The step task of a worker process (Celery makes one task object per process): it holds the Dagster
    instance of the steps' instance reference, opened on the first step and kept."""

    _instance: DagsterInstance | None = None
    _instance_key: str | None = None

    def instance_for(self, ref) -> DagsterInstance:
        key = serialize_value(ref)
        if self._instance_key != key:  # another deployment's steps: not on one worker, but never mixed up
            self.close_instance()
            self._instance, self._instance_key = DagsterInstance.from_ref(ref), key
        return self._instance

    def close_instance(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = self._instance_key = None


def create_step_task(app):
    """dagster-celery's ``execute_plan`` task (same name, same arguments, same result), with two changes: the
    worker process keeps one Dagster instance for all its steps (``StepTask``), and a step of a run that has
    already ended (failed, cancelled, or retried by a newer run) is not run again when it is redelivered."""

    @app.task(bind=True, base=StepTask, name=TASK_EXECUTE_PLAN_NAME)
    def execute_plan(self, execute_step_args_packed, executable_dict):
        args = unpack_value(check.dict_param(execute_step_args_packed, "execute_step_args_packed"),
                            as_type=ExecuteStepArgs)
        instance = self.instance_for(args.instance_ref)
        recon_job = ReconstructableJob.from_dict(check.dict_param(executable_dict, "executable_dict"))
        run = instance.get_run_by_id(args.run_id)
        check.invariant(run, f"Could not load run {args.run_id}")
        keys = ", ".join(args.step_keys_to_execute or [])
        if run.is_finished:
            log.warning("not running steps %s of run %s: the run has ended (%s)", keys, run.run_id,
                        run.status.value)
            return []
        plan = create_execution_plan(recon_job, run.run_config, step_keys_to_execute=args.step_keys_to_execute,
                                     known_state=args.known_state)
        events = [instance.report_engine_event(
            f"Executing steps {keys} in celery worker", run,
            EngineEventData({"step_keys": keys, "Celery worker": self.request.hostname},
                            marker_end=DELEGATE_MARKER),
            CeleryExecutor, step_key=plan.step_handle_for_single_step_plans().to_key())]
        events += execute_plan_iterator(execution_plan=plan, job=recon_job, dagster_run=run, instance=instance,
                                        retry_mode=args.retry_mode, run_config=run.run_config)
        return [serialize_value(event) for event in events]

    signals.worker_process_shutdown.connect(lambda **_: execute_plan.close_instance(), weak=False)
    return execute_plan
