"""Jobs labelled in the background by a process that keeps its model warm, one job at a time.

A job is never labelled twice at once: submitting a job that is queued or running returns its status
instead of queueing it again. A job this process has not run is reported from its folder (labelled or not).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.core.labelling.filtered import count_flags
from cliplabel_pipeline.core.pipeline import JobResult, export_format, process_job
from cliplabel_pipeline.core.serving.files import JobFile, job_files
from cliplabel_pipeline.core.serving.tally import Tally
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.clock import now
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.values import JsonForm, LabelSettings

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class JobRequest:
    """What a caller asked of one job: label settings and the extra export formats to write."""

    settings: LabelSettings = LabelSettings()
    exports: tuple[str, ...] = ()


@dataclass
class JobStatus(JsonForm):
    """Where a job stands: ``queued``, ``running``, ``done``, ``failed`` (with the reason) or ``unlabelled``; the
    times as ISO 8601 text, counts and files once it is done."""

    job_id: str
    state: str
    reason: str | None = None
    submitted: str | None = None
    started: str | None = None
    finished: str | None = None
    counts: dict[str, int] | None = None
    files: list[JobFile] | None = None
    run_id: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def folder_status(job: JobFolder) -> JobStatus:
    """A job's status from its folder alone: ``done`` with counts when it has labels, else ``unlabelled``."""
    if not job.has_labels():
        return JobStatus(job.id, "unlabelled")
    records, skipped = job.read_labels(), job.read_skipped()
    counts = {"labelled": len(records), "low_confidence": count_flags(records).flagged,
              "skipped": len(skipped)}
    return JobStatus(job.id, "done", counts=counts, files=job_files(job))


class JobBusy(CliplabelError):
    """The job is being labelled, cleaned up or restored right now; try again when that is done."""


class JobHolds:
    """Jobs an action (cleanup, restore) holds: no labelling starts on them meanwhile, nor a second action.
    ``lock`` is the runner's own (re-entrant), so a hold and a submit can never both see the job free."""

    def __init__(self, lock: threading.RLock):
        self._held: set[str] = set()
        self._lock = lock

    @contextmanager
    def hold(self, job_id: str, busy: Callable[[str], bool]) -> Iterator[None]:
        with self._lock:
            if job_id in self._held or busy(job_id):
                raise JobBusy(f"job {shown(job_id)!r} is busy (being labelled, cleaned up or restored): "
                              "try again when it is done")
            self._held.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def held(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._held


def _stamp() -> str:
    return now().isoformat(timespec="seconds")


class LocalJobRunner:
    """Labels submitted jobs on one worker thread with ``labeller``, recording rows in ``settings.db_path``."""

    def __init__(self, labeller: Labeller, settings: Settings):
        self.labeller = labeller
        self.settings = settings
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="label-jobs")
        self._status: dict[str, JobStatus] = {}
        self._lock = threading.RLock()
        self._holds = JobHolds(self._lock)
        self.tally = Tally()  # items of the jobs labelled here since start: kept, flagged, by which rule

    def hold(self, job_id: str):
        """``with runner.hold(job_id):`` an action on the job; ``JobBusy`` while it is queued or running."""
        return self._holds.hold(job_id, self.busy)

    def submit(self, job: JobFolder, request: JobRequest) -> tuple[JobStatus, bool]:
        """Queue ``job``; returns its status and True, or the status of the run already queued and False."""
        with self._lock:
            if self._holds.held(job.id):
                raise JobBusy(f"job {shown(job.id)!r} is being cleaned up or restored: submit it when that is done")
            current = self._status.get(job.id)
            if current is not None and current.active:
                return current, False
            status = JobStatus(job.id, "queued", submitted=_stamp())
            self._status[job.id] = status
        self._pool.submit(self._run, job, request, status)
        return status, True

    def status(self, job: JobFolder) -> JobStatus:
        with self._lock:
            current = self._status.get(job.id)
        return current if current is not None and current.state != "done" else folder_status(job)

    def busy(self, job_id: str) -> bool:
        """Queued or running here (an action's hold aside: see ``held``)."""
        with self._lock:
            current = self._status.get(job_id)
            return current is not None and current.active

    def held(self, job_id: str) -> bool:
        return self._holds.held(job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: JobFolder, request: JobRequest, status: JobStatus) -> None:
        status.started, status.state = _stamp(), "running"
        try:
            done = process_job(self.labeller, job, request.settings, self.settings.db_path)
            for fmt in request.exports:
                if fmt != "zip":  # the job's ZIP is part of every run
                    export_format(job, fmt)
        except CliplabelError as exc:
            status.reason = shown(exc)
        except Exception as exc:  # noqa: BLE001 - a failed job is reported on its status URL, the worker goes on
            log.exception("labelling job %s failed", shown(job.id))
            status.reason = f"internal error: {type(exc).__name__}: {shown(exc)[:200]}"
        else:
            status.counts = _counts(done)
            self.tally.add(done.labelled.records)
        status.finished = _stamp()
        status.state = "failed" if status.reason else "done"


def _counts(done: JobResult) -> dict[str, int]:
    records = done.labelled.records
    return {"labelled": len(records), "low_confidence": count_flags(records).flagged,
            "skipped": len(done.labelled.skipped)}
