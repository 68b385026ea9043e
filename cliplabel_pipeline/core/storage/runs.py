"""What each job's latest labelling run was made with, read back from ``runs`` (for staleness)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.core.storage.schema import LABEL_STAGE
from cliplabel_pipeline.core.values import BankSpec


@dataclass(frozen=True)
class RecordedRun:
    """What a job's latest labelling run was made with, and what it asked for."""

    model: str
    model_identity: str
    bank_version: str
    templates_hash: str
    bank: BankSpec
    top_k: int
    min_confidence: float
    min_match: float | None = None  # None: labelled before the match score existed


def latest_runs(db_path: Path) -> dict[str, RecordedRun]:
    """For each job, its latest labelling run (a database written before ``min_match`` existed reads too)."""
    columns = {r[0] for r in query(db_path, "DESCRIBE runs")}
    rows = query(db_path, f"""
        SELECT job_id, model, model_identity, bank_version, templates_hash, bank_spec, top_k, min_confidence,
               {"min_match" if "min_match" in columns else "NULL"}
        FROM runs WHERE stage = '{LABEL_STAGE}'
        QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY finished_at DESC) = 1""")
    return {r[0]: RecordedRun(r[1], r[2], r[3], r[4], BankSpec.from_json(r[5]), r[6], r[7], r[8]) for r in rows}
