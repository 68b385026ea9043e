"""What people decided, in DuckDB: ``reviews`` rows appended, and the label of record of ``labels`` rows."""

from __future__ import annotations

import duckdb

from cliplabel_pipeline.core.storage.database import insert_rows, row_tuples


def insert_reviews(con: duckdb.DuckDBPyConnection, job_id: str, reviews: list) -> None:
    """Append ``reviews`` (``Review`` values) to the ``reviews`` table: never replaced, as ``reviews.jsonl``."""
    rows = [{"job_id": job_id, **r.to_json()} for r in reviews]
    insert_rows(con, "reviews", row_tuples(con, "reviews", rows))


def update_label_of_record(con: duckdb.DuckDBPyConnection, job_id: str, records: list) -> None:
    """The ``labels`` rows of ``records`` (``LabelRecord`` values) given their label of record and flags."""
    con.executemany("UPDATE labels SET label = ?, label_source = ?, low_confidence = ?, flagged_by = ? "
                    "WHERE job_id = ? AND path = ?",
                    [(r.label, r.label_source, r.low_confidence, ",".join(r.flagged_by), job_id, r.path)
                     for r in records])
