"""A job's lineage rows as a value, and its JSON form.

On a cluster, the labelling step runs on any worker host and writes this beside the job's outputs
(``JobFolder.lineage_rows_json``); the one DuckDB writer ingests it (``ingest_job_rows``), so no two hosts
ever write the database file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cliplabel_pipeline.core.storage.database import insert_rows, row_tuples, write_connection
from cliplabel_pipeline.core.storage.schema import LABEL_STAGE

TABLES = ("assets", "labels", "runs")
TIMESTAMPS = ("started_at", "finished_at")  # written as ISO 8601, read back as datetimes


@dataclass(frozen=True)
class JobRows:
    """The ``assets``, ``labels`` and ``runs`` rows of one labelling run of one job, each row ``{column: value}``."""

    job_id: str
    run_id: str
    assets: list[dict]
    labels: list[dict]
    runs: list[dict]

    def to_json(self) -> dict:
        return {"job_id": self.job_id, "run_id": self.run_id,
                **{t: [_to_text(r) for r in getattr(self, t)] for t in TABLES}}

    @classmethod
    def from_json(cls, data: dict) -> "JobRows":
        return cls(data["job_id"], data["run_id"], *([_from_text(r) for r in data[t]] for t in TABLES))


def _to_text(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _from_text(row: dict) -> dict:
    return {k: datetime.fromisoformat(v) if k in TIMESTAMPS and v is not None else v for k, v in row.items()}


def replace_job_rows(con: duckdb.DuckDBPyConnection, rows: JobRows) -> None:
    """The job's ``assets`` and ``labels`` rows replaced by ``rows``'; its ``runs`` row of that run replaced."""
    con.execute("DELETE FROM assets WHERE job_id = ?", [rows.job_id])
    insert_rows(con, "assets", row_tuples(con, "assets", rows.assets))
    con.execute("DELETE FROM labels WHERE job_id = ?", [rows.job_id])
    insert_rows(con, "labels", row_tuples(con, "labels", rows.labels))
    con.execute("DELETE FROM runs WHERE run_id = ? AND job_id = ? AND stage = ?", [rows.run_id, rows.job_id, LABEL_STAGE])
    insert_rows(con, "runs", row_tuples(con, "runs", rows.runs))


def ingest_job_rows(db_path: Path, rows: JobRows, wait_s: float) -> None:
    """Rows a worker host wrote for a job, replacing the job's rows in one transaction: ingesting the same rows
    again (a retried step) leaves every item exactly once. A busy file is waited for up to ``wait_s``."""
    with write_connection(db_path, wait_s) as con:
        replace_job_rows(con, rows)
