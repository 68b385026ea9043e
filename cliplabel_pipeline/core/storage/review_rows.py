"""What people decided, in DuckDB: ``reviews`` rows appended, and the label of record of ``labels`` rows."""

from __future__ import annotations

import duckdb

from cliplabel_pipeline.core.storage.database import insert_rows, row_tuples
from cliplabel_pipeline.core.storage.schema import LABELS, REVIEWS
from cliplabel_pipeline.core.values import LabelRecord, Review

OF_RECORD = ("label", "label_source", "low_confidence", "flagged_by")  # what a review changes in a labels row


def insert_reviews(con: duckdb.DuckDBPyConnection, job_id: str, reviews: list[Review]) -> None:
    """Append ``reviews`` to the ``reviews`` table: never replaced, as ``reviews.jsonl``."""
    insert_rows(con, "reviews", row_tuples(con, "reviews", [REVIEWS.row(r, job_id=job_id) for r in reviews]))


def update_label_of_record(con: duckdb.DuckDBPyConnection, job_id: str, records: list[LabelRecord]) -> None:
    """The ``labels`` rows of ``records`` given their label of record and flags."""
    columns = [LABELS.column_of(LabelRecord, name) for name in OF_RECORD]
    con.executemany(f"UPDATE labels SET {', '.join(f'{c.name} = ?' for c in columns)} WHERE job_id = ? AND path = ?",
                    [(*(c.encode(getattr(r, c.field)) for c in columns), job_id, r.path) for r in records])
