"""DuckDB allows one writer per file: four processes labelling different jobs at once all land."""

from __future__ import annotations

import pytest

import multiprocessing as mp

from pathlib import Path

from cliplabel_pipeline.core.storage.database import query

from cliplabel_pipeline.core.pipeline import record_run
from cliplabel_pipeline_tests.lineage_rows import synthetic_labelled


def _write_job(db_path: str, root: str, job_id: str, n: int) -> None:
    labelled = synthetic_labelled(Path(root), job_id, n)
    for _ in range(5):  # each writer writes repeatedly, to overlap with the others
        record_run(db_path, f"run-{job_id}", labelled)


@pytest.mark.slow
def test_four_concurrent_writers_all_succeed_with_nothing_lost_or_duplicated(tmp_path):
    db = str(tmp_path / "lineage.duckdb")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_job, args=(db, str(tmp_path), f"job-{i}", 50 + i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    counts = dict(query(db, "SELECT job_id, count(*) FROM labels GROUP BY job_id"))
    assert counts == {"job-0": 50, "job-1": 51, "job-2": 52, "job-3": 53}
    assert query(db, "SELECT count(*) FROM runs") == [(4,)]
    assert dict(query(db, "SELECT job_id, count(*) FROM assets GROUP BY job_id")) == counts
