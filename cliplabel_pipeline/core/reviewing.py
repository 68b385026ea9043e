"""People's decisions come back into a job: ``import_reviews`` reads a file of reviews, appends them to
``reviews.jsonl`` and the DuckDB ``reviews`` table, lays them over the labels (the label of record in
``labels.jsonl`` and the ``labels`` rows), and rebuilds everything derived from the labels (groups, exports,
metrics, report). A file that cannot be read changes nothing.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from cliplabel_pipeline.core import upkeep
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.organising.review_files import (
    FORMS,
    Unmatched,
    read_review_file,
)
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.clock import now
from cliplabel_pipeline.core.storage.database import write_connection
from cliplabel_pipeline.core.storage.review_rows import insert_reviews
from cliplabel_pipeline.core.values import Review
from cliplabel_pipeline.core.words import counted


@dataclass
class ReviewImport:
    """What an import took: the file's form, the reviews added, what could not be matched, the items whose label
    of record changed, and whether the derived outputs were rebuilt (else why they are stale)."""

    job_id: str
    form: str
    added: list[Review]
    unmatched: list[Unmatched]
    changed: list[str] = field(default_factory=list)
    stale: str | None = None

    def counts(self) -> dict[str, int]:
        by = Counter(r.decision for r in self.added)
        return {"accept": by["accept"], "correct": by["correct"], "reject": by["reject"],
                "unmatched": len(self.unmatched), "changed": len(self.changed)}

    def summary(self) -> str:
        c = self.counts()
        return (f"{self.job_id}: {counted(len(self.added), 'review')} taken from {FORMS[self.form]}: "
                f"{c['accept']} accepted, {c['correct']} corrected, {c['reject']} rejected; {c['unmatched']} not "
                f"matched; {counted(c['changed'], 'label of record', 'labels of record')} changed")


def import_reviews(job: JobFolder, name: str, data: bytes, db_path: Path | None, reviewer: str | None,
                   settings: Settings) -> ReviewImport:
    """Take the reviews of the file ``name`` (its bytes ``data``) into ``job`` (locked meanwhile)."""
    with job.lock():
        upkeep.recover(job, db_path, settings)
        records = job.read_labels()
        found = read_review_file(name, data, job, records, reviewer)  # a bad file fails here: nothing changed
        stamp = now().isoformat(timespec="seconds")
        added = [Review(r.path, r.decision, r.label, r.model_label, r.reviewer, r.source,
                        r.reviewed_at or stamp, stamp) for r in found.reviews]
        done = ReviewImport(job.id, found.form, added, found.unmatched)
        if not added:
            return done
        with upkeep.changing(job, settings):  # marked stale until rebuilt: a kill meanwhile is repaired next time
            with job.staged(), write_connection(db_path, job.waits.db_s) if db_path else nullcontext() as con:
                job.append_reviews(added)
                done.changed = upkeep.lay_over_reviews(job, records, [*job.read_reviews(), *added], con)
                if con is not None:
                    insert_reviews(con, job.id, added)
            _, done.stale = upkeep.rebuild_outputs(job, settings)
        return done
