"""What each job's latest labelling run was made with, read back from ``runs`` (for staleness)."""

from __future__ import annotations

from dataclasses import MISSING, field, fields, make_dataclass
from pathlib import Path

from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.core.storage.schema import LABEL_STAGE, RUNS, bank_of
from cliplabel_pipeline.core.values import Provenance

RECORDED = ("model", "model_identity", "bank_version", "templates_hash", "bank", "top_k", "min_confidence", "min_match")


def _part_of_provenance(name: str, kept: tuple[str, ...], doc: str) -> type:
    """A frozen dataclass of the ``kept`` fields of ``Provenance``: their names, types and defaults."""
    spec = [(f.name, f.type) if f.default is MISSING else (f.name, f.type, field(default=f.default))
            for f in fields(Provenance) if f.name in kept]
    cls = make_dataclass(name, spec, frozen=True)
    cls.__module__, cls.__doc__ = __name__, doc
    return cls


RecordedRun = _part_of_provenance("RecordedRun", RECORDED, "What a job's latest labelling run was made with, and "
                                  "what it asked for: the part of its ``Provenance`` the ``runs`` table keeps "
                                  "(``min_match`` None: labelled before the match score existed).")


def latest_runs(db_path: Path) -> dict[str, RecordedRun]:
    """For each job, its latest labelling run (a database written before ``min_match`` existed reads too)."""
    present = {r[0] for r in query(db_path, "DESCRIBE runs")}
    names = [f.name for f in fields(RecordedRun)]
    cells = [RUNS.column_of(Provenance, n).name for n in names]
    rows = query(db_path, f"""
        SELECT job_id, {", ".join(c if c in present else "NULL" for c in cells)}
        FROM runs WHERE stage = '{LABEL_STAGE}'
        QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY finished_at DESC) = 1""")
    runs = {}
    for job_id, *values in rows:
        recorded = dict(zip(names, values))
        runs[job_id] = RecordedRun(**{**recorded, "bank": bank_of(recorded["bank"])})
    return runs
