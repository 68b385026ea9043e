"""The work behind cleanup, restore and export: core calls under the job's hold, run on a worker thread."""

from __future__ import annotations

import os
import tempfile

from cliplabel_pipeline.core import upkeep
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.organising.cleanup import plan_cleanup
from cliplabel_pipeline.core.organising.export import FOLDER_FORMATS
from cliplabel_pipeline.core.pipeline import export_format, write_export
from cliplabel_pipeline.core.reviewing import import_reviews
from cliplabel_pipeline.service.errors import ApiError
from cliplabel_pipeline.service.schemas import CleanupAnswer, CleanupItem, RestoreAnswer, ReviewsAnswer, reviews_answer
from cliplabel_pipeline.service.state import ServiceState


def _outputs(done: upkeep.Upkeep) -> str:
    return f"stale: {done.stale}" if done.stale else "rebuilt"


def cleanup_job(state: ServiceState, job: JobFolder, min_confidence: float, min_match: float, apply: bool,
                purge: bool) -> CleanupAnswer:
    """The items below either threshold; with ``apply`` quarantined (or purged) and the outputs rebuilt."""
    db = state.settings.db_path
    with state.runner.hold(job.id):
        upkeep.recover(job, db, state.settings)
        plan = plan_cleanup(job, min_confidence, min_match)
        answer = CleanupAnswer(job_id=job.id, min_confidence=min_confidence, min_match=min_match, dry_run=not apply,
                               count=len(plan), items=[CleanupItem(**{k: getattr(r, k) for k in CleanupItem.model_fields})
                                                       for r in plan])
        if apply and plan:
            done = upkeep.cleanup(job, plan, db, purge=purge, settings=state.settings)
            answer.action, answer.outputs = "purged" if purge else "quarantined", _outputs(done)
    return answer


def review_job(state: ServiceState, job: JobFolder, name: str, data: bytes, reviewer: str | None) -> ReviewsAnswer:
    """What ``cliplabel review`` does, for a file sent over HTTP."""
    if not job.has_labels():
        raise ApiError(409, f"job {job.id!r} has no labels yet: POST /classify/job/{job.id} first")
    with state.runner.hold(job.id):
        return reviews_answer(import_reviews(job, name, data, state.settings.db_path, reviewer, state.settings))


def restore_job(state: ServiceState, job: JobFolder) -> RestoreAnswer:
    with state.runner.hold(job.id):
        done = upkeep.restore(job, state.settings.db_path, state.settings)
    return RestoreAnswer(job_id=job.id, restored=len(done.paths), items=done.paths, outputs=_outputs(done))


def export_file(state: ServiceState, job: JobFolder, fmt: str, only: str = "all", image_root: str | None = None):
    """``(open file, size)`` of the job's ``fmt`` export: the ZIP every run makes, or one written now (a folder
    export, or the review queue, as a ZIP in a temporary file that goes when it is closed)."""
    if state.runner.busy(job.id) or state.runner.held(job.id):
        raise ApiError(409, f"job {job.id!r} is being labelled, cleaned up or restored: download its export "
                            "when that is done")
    if not job.has_labels():
        raise ApiError(409, f"job {job.id!r} has no labels yet: POST /classify/job/{job.id} first")
    stale = job.stale_reason()
    if fmt == "zip" and stale:
        raise ApiError(409, f"the groups of job {job.id!r} are stale ({stale}): label the job again, then export")
    if fmt in FOLDER_FORMATS or only != "all":
        fh = tempfile.TemporaryFile()
        try:
            write_export(job, fmt, fh, only, image_root)
        except BaseException:
            fh.close()
            raise
        fh.seek(0)
        return fh, os.fstat(fh.fileno()).st_size
    path = job.export_file(fmt)
    if fmt != "zip" or not job.is_file(path):
        export_format(job, fmt)
    fh = job.open_item(job.rel(path))
    return fh, os.fstat(fh.fileno()).st_size
