"""A job's lineage rows as a value, and its JSON form.

On a cluster, the labelling step runs on any worker host and writes this beside the job's outputs
(``JobFolder.lineage_rows_json``); the one DuckDB writer ingests it (``lineage.ingest_job_rows``), so no two
hosts ever write the database file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
