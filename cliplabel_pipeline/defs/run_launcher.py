"""Run monitoring for run workers on the daemon's host (``deploy/dagster.yaml``).

Dagster's ``DefaultRunLauncher`` starts each run worker as a process of the code server beside the daemon, and
cannot tell the run monitor whether that process still lives: a run whose run worker died with the daemon's
host (or with the daemon and its code server) stays STARTED for ever. This launcher answers the run monitor
from the process table: the run worker's id is in the run's "Started process for run" event, written by the
run worker itself, and the run is alive while a process with that id, started before that event, runs here.
A dead run worker's run is then marked failed within ``run_monitoring.poll_interval_seconds``, and retried.
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers the run monitor can check (the daemon's host only)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        started = [r.event_log_entry for r in self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records
            if "pid" in (r.event_log_entry.dagster_event.engine_event_data.metadata or {})]
        if not started:  # not yet written: too early to say
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not started yet")
        entry = started[-1]
        pid = int(entry.dagster_event.engine_event_data.metadata["pid"].value)
        try:
            alive = psutil.Process(pid).create_time() <= entry.timestamp + 1  # not a later process with its id
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone", run_worker_id=str(pid))
