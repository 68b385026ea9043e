"""Jobs launched on the Dagster instance (``DAGSTER_HOME``), so that lineage stays in one place.

Submitting registers the job's partition and launches ``label_jobs_job`` for it with the instance's run
launcher (``dagster job launch``, in a child process: the service never imports the Dagster definitions).
The run id is chosen here, so the status is read straight from the instance's run record.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.serving.runner import JobBusy, JobHolds, JobRequest, JobStatus, folder_status
from cliplabel_pipeline.core.settings import ENV_VARS, Settings
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.storage.clock import now

LAUNCH_TIMEOUT_S = 300

_STATES = {
    DagsterRunStatus.QUEUED: "queued", DagsterRunStatus.NOT_STARTED: "queued", DagsterRunStatus.STARTING: "queued",
    DagsterRunStatus.MANAGED: "queued", DagsterRunStatus.STARTED: "running", DagsterRunStatus.CANCELING: "running",
    DagsterRunStatus.SUCCESS: "done", DagsterRunStatus.FAILURE: "failed", DagsterRunStatus.CANCELED: "failed",
}


def _stamp() -> str:
    return now().isoformat(timespec="seconds")


class DagsterJobRunner:
    """The same face as ``LocalJobRunner`` (submit, status, busy, hold), with the runs on the instance."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.instance = DagsterInstance.get()
        self._pending: dict[str, JobStatus] = {}  # jobs whose launch this process started, by job id
        self._lock = threading.RLock()
        self._holds = JobHolds(self._lock)
        self.tally = None  # the runs are Dagster's: its UI and the runs' metadata count their items

    def close(self) -> None:
        self.instance.dispose()

    def hold(self, job_id: str):
        return self._holds.hold(job_id, self.busy)

    def busy(self, job_id: str) -> bool:
        return self._known(job_id).active if self._has_run(job_id) else False

    def held(self, job_id: str) -> bool:
        return self._holds.held(job_id)

    def submit(self, job: JobFolder, request: JobRequest) -> tuple[JobStatus, bool]:
        with self._lock:
            if self._holds.held(job.id):
                raise JobBusy(f"job {shown(job.id)!r} is being cleaned up or restored: submit it when that is done")
            current = self._known(job.id) if self._has_run(job.id) else None
            if current is not None and current.active:
                return current, False
            status = JobStatus(job.id, "queued", submitted=_stamp(), run_id=str(uuid.uuid4()))
            self._pending[job.id] = status
        threading.Thread(target=self._launch, args=(job, request, status), name=f"launch-{job.id}",
                         daemon=True).start()
        return status, True

    def status(self, job: JobFolder) -> JobStatus:
        return self._known(job.id) if self._has_run(job.id) else folder_status(job)

    def _has_run(self, job_id: str) -> bool:
        return job_id in self._pending or bool(self._latest_run(job_id))

    def _latest_run(self, job_id: str):
        runs = self.instance.get_runs(RunsFilter(job_name=names.LABEL_JOBS_JOB, tags={"dagster/partition": job_id}), limit=1)
        return runs[0] if runs else None

    def _known(self, job_id: str) -> JobStatus:
        pending = self._pending.get(job_id)
        run = self.instance.get_run_by_id(pending.run_id) if pending else self._latest_run(job_id)
        if run is None:  # launching, or the launch failed before the run was created
            return pending
        state = _STATES.get(run.status, "queued")
        status = JobStatus(job_id, state, run_id=run.run_id, submitted=pending.submitted if pending else None)
        if state == "done":
            done = folder_status(JobFolder(self.settings.results_root, job_id))
            status.counts, status.files = done.counts, done.files
        elif state == "failed":
            status.reason = self._failure(run.run_id) or f"the Dagster run {run.run_id} {run.status.value.lower()}"
        return status

    def _failure(self, run_id: str) -> str | None:
        for record in self.instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records:
            event = record.event_log_entry.dagster_event
            data = event.step_failure_data if event else None
            if data and data.user_failure_data and data.user_failure_data.description:
                return shown(data.user_failure_data.description)
            if data and data.error:
                return shown(" ".join(data.error.message.split()))[:300]
        return None

    def _launch(self, job: JobFolder, request: JobRequest, status: JobStatus) -> None:
        try:
            if not self.instance.has_dynamic_partition(names.JOBS_PARTITIONS, job.id):
                self.instance.add_dynamic_partitions(names.JOBS_PARTITIONS, [job.id])
            config = {"ops": {names.JOB_LABEL_ASSIGNMENTS: {"config": {"top_k": request.settings.top_k,
                                                      "min_confidence": request.settings.min_confidence,
                                                      "min_match": request.settings.min_match}}}}
            cmd = [sys.executable, "-m", "dagster", "job", "launch", "-w", str(_workspace_file()), "-j", names.LABEL_JOBS_JOB,
                   "--run-id", status.run_id, "--tags", json.dumps({"dagster/partition": job.id}),
                   "--config-json", json.dumps(config)]
            env = {**os.environ, ENV_VARS["results_root"]: str(self.settings.results_root.resolve()),
                   ENV_VARS["db"]: str(self.settings.db_path.resolve())}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0 and self.instance.get_run_by_id(status.run_id) is None:
                last = next((ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output")
                status.state, status.reason = "failed", f"dagster job launch failed: {shown(last)[:300]}"
        except (OSError, subprocess.SubprocessError) as exc:
            status.state, status.reason = "failed", f"dagster job launch failed: {shown(exc)[:300]}"


@functools.cache
def _workspace_file() -> Path:
    """A workspace of the one code location under its own name (``-m`` alone would name it after the module,
    and the daemon, which knows it as ``cliplabel``, would not find the runs launched here); written once."""
    path = Path(tempfile.mkdtemp(prefix="cliplabel-workspace-")) / "workspace.yaml"
    path.write_text(json.dumps({"load_from": [{"python_module": {  # JSON is YAML
        "module_name": names.DEFINITIONS_MODULE, "location_name": names.LOCATION, "working_directory": os.getcwd()}}]}))
    return path
