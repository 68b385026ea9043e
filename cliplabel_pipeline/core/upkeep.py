"""Cleanup and restore of a labelled job, with every output derived from ``labels.jsonl`` rebuilt after.

Groups, ``labels.csv``, per-item JSON, ``manifest.json``, ``metrics.json``, the report and the ZIP are
rebuilt from the labels and embeddings that are there, with the concept index from the cache (the model
itself is not loaded). When that cannot be done (the index is not cached, or a restored item has no
embedding because the job was relabelled meanwhile), the job is marked stale: exports refuse with a line
saying to run ``cliplabel job`` again, which rebuilds everything.
"""

from __future__ import annotations

import logging
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.reviews import apply_reviews
from cliplabel_pipeline.core.organising import cleanup as quarantine
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.database import write_connection
from cliplabel_pipeline.core.storage.review_rows import update_label_of_record
from cliplabel_pipeline.core.values import LabelRecord, Review

if TYPE_CHECKING:  # the rebuild imports the heavy stages only when it runs
    from cliplabel_pipeline.core.pipeline import JobResult

log = logging.getLogger(__name__)


@dataclass
class Upkeep:
    """What a cleanup or restore did: the items, and the rebuilt outputs (None when marked stale)."""

    paths: list[str]
    result: JobResult | None
    stale: str | None = None


PENDING = "a cleanup or restore stopped before it rebuilt them"


@contextlib.contextmanager
def changing(job: JobFolder, settings: Settings):
    """The job locked while an action changes it, its derived outputs marked stale until they are rebuilt: a
    process killed in between leaves the mark, which the next cleanup, restore or dry run repairs (and which
    makes a ZIP export refuse meanwhile). An action refused before it changed the labels leaves the job as it
    was; one that failed after rebuilds what it can."""
    with job.lock():
        if job.stale_reason() == PENDING:
            rebuild_outputs(job, settings)
        previous, labels = job.stale_reason(), _labels_bytes(job)
        job.mark_stale(PENDING)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the action's own error is the one to report
                if _labels_bytes(job) == labels:
                    job.mark_stale(previous)
                else:
                    rebuild_outputs(job, settings)
            raise


def _labels_bytes(job: JobFolder) -> bytes | None:
    return job.read_bytes(job.labels_jsonl) if job.has_labels() else None


def cleanup(job: JobFolder, plan: list[LabelRecord], db_path: Path | None, settings: Settings,
            purge: bool = False) -> Upkeep:
    """Quarantine (or purge) the planned items, then rebuild the job's derived outputs (the job locked)."""
    with changing(job, settings):
        paths = quarantine.apply_cleanup(job, plan, db_path, purge)
        return _rebuilt(job, paths, settings)


def restore(job: JobFolder, db_path: Path | None, settings: Settings) -> Upkeep:
    """Undo every quarantine of the job, then rebuild the job's derived outputs (the job locked)."""
    with changing(job, settings):
        # an interrupted action first, its outputs rebuilt whatever the restore then says (a refusal included)
        found = quarantine.recover(job, db_path)
        finished = [e.path for a in found if a.state == quarantine.RESTORING for e in a.entries]
        if found:
            _rebuilt(job, [e.path for a in found for e in a.entries], settings)
            job.mark_stale(PENDING)  # the restore itself changes the job next
        try:
            paths = quarantine.restore(job, db_path)
        except quarantine.NothingToRestore:
            if finished:  # the interrupted restore, now complete, was all there was
                return _rebuilt(job, [], settings)
            raise
        sync_reviews(job, db_path)  # a line put back as it was taken misses a review made since
        return _rebuilt(job, paths, settings)


def sync_reviews(job: JobFolder, db_path: Path | None) -> list[str]:
    """Lay the job's reviews over its labels again; returns the paths whose record changed (none when they agree)."""
    with job.lock():
        if not job.has_labels() or not job.is_file(job.reviews_jsonl):
            return []
        with job.staged(), write_connection(db_path, job.waits.db_s) if db_path else contextlib.nullcontext() as con:
            return lay_over_reviews(job, job.read_labels(), job.read_reviews(), con)


def lay_over_reviews(job: JobFolder, records: list[LabelRecord], reviews: list[Review], con) -> list[str]:
    """``labels.jsonl`` (and, with ``con``, the ``labels`` rows) with ``reviews`` laid over ``records``; only a
    record that changes is rewritten in the database. Returns the changed paths."""
    reviewed = apply_reviews(records, reviews)
    changed = [new for old, new in zip(records, reviewed) if old != new]
    if changed:
        job.write_labels(reviewed)
        if con is not None:
            update_label_of_record(con, job.id, changed)
    return [r.path for r in changed]


def recover(job: JobFolder, db_path: Path | None, settings: Settings) -> Upkeep | None:
    """Complete an interrupted cleanup or restore, if there is one (the job locked)."""
    with job.lock():
        if not job.stale_reason() == PENDING and not quarantine.pending(job):
            return None  # nothing interrupted: a dry run stays a read
    with changing(job, settings):
        done = quarantine.recover(job, db_path)
        return _rebuilt(job, [e.path for a in done for e in a.entries], settings)


def _rebuilt(job: JobFolder, paths: list[str], settings: Settings) -> Upkeep:
    if paths:
        job.count_action()
    result, stale = rebuild_outputs(job, settings)
    return Upkeep(paths, result, stale)


def rebuild_outputs(job: JobFolder, settings: Settings) -> tuple[JobResult | None, str | None]:
    """Rebuild groups, exports, metrics and report from the job's labels; ``(result, None)`` or
    ``(None, reason)`` with the job marked stale."""
    from cliplabel_pipeline.core.labelling.index import cached_concept_index
    from cliplabel_pipeline.core.pipeline import (
        export_format, export_grouped, group_labelled, load_labelled, report_exported,
    )

    for fmt in ("csv", "jsonl"):  # exports kept in the job follow the labels (they need no groups)
        if job.is_file(job.export_file(fmt)):
            export_format(job, fmt)
    labelled = load_labelled(job)
    missing = {r.path for r in labelled.records} - {i.path for i in labelled.embedded.items}
    prov = labelled.provenance
    index = None
    if not missing:  # the precision the run resolved: no device to look for, no model to load
        index = cached_concept_index(settings.cache_dir, prov.model, prov.precision, prov.bank)
    if index is None:  # what needs no groups still follows the labels
        from cliplabel_pipeline.core.organising.export import csv_bytes, write_asset_jsons

        job.write(job.labels_csv, csv_bytes(labelled.records))
        write_asset_jsons(job, labelled.records)
        reason = (f"{len(missing)} labelled items have no embedding" if missing
                  else "the concept index of its model is not cached here")
        job.mark_stale(reason)
        log.warning("job %s: groups, exports and report not rebuilt (%s); run `cliplabel job %s` to rebuild them",
                    job.id, reason, job.id)
        return None, reason
    result = report_exported(export_grouped(group_labelled(labelled, index)))
    job.mark_stale(None)
    return result, None
