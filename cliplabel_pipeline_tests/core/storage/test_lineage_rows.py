"""A job's rows written beside its outputs on a worker host, ingested by the one DuckDB writer: every item
exactly once, however often the ingest runs and wherever it was killed."""

from __future__ import annotations

import json
import subprocess
import sys

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.pipeline import embed_job, ingest_lineage, job_rows, label_embedded, record_run
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.core.storage.job_rows import JobRows, ingest_job_rows
from cliplabel_pipeline_tests.lineage_rows import synthetic_labelled

ALL_COLUMNS = "SELECT * EXCLUDE (finished_at) FROM {} ORDER BY ALL"


def test_a_worker_host_writes_rows_beside_the_job_and_never_opens_the_database(labeller, toy_job, tmp_path):
    root, job_id = toy_job
    job = JobFolder.open(root, job_id)
    db = tmp_path / "lineage.duckdb"
    labelled = label_embedded(job, embed_job(labeller, job), labeller.index, labeller.bank_spec, db_path=db,
                              run_id="run-1", spool_rows=True)
    assert not db.exists() and not (tmp_path / "lineage.duckdb.lock").exists()
    for _ in range(3):  # the ingest step retried: the job's rows are replaced, never added to
        ingest_lineage(job, db)
    assert query(db, "SELECT path, top1 FROM labels ORDER BY path") == sorted((r.path, r.top1) for r in labelled.records)
    assert query(db, "SELECT count(*), count(DISTINCT path) FROM assets") == [(9, 9)]
    assert query(db, "SELECT run_id, job_id, item_count FROM runs") == [("run-1", job_id, 9)]


def test_ingested_rows_are_the_rows_the_labelling_step_writes_on_one_machine(labeller, toy_job, tmp_path):
    root, job_id = toy_job
    job = JobFolder.open(root, job_id)
    embedded = embed_job(labeller, job)
    direct, spooled = tmp_path / "direct.duckdb", tmp_path / "spooled.duckdb"
    label_embedded(job, embedded, labeller.index, labeller.bank_spec, db_path=direct, run_id="r")
    label_embedded(job, embedded, labeller.index, labeller.bank_spec, db_path=spooled, run_id="r", spool_rows=True)
    ingest_lineage(job, spooled)
    for table in ("assets", "labels"):
        assert query(spooled, ALL_COLUMNS.format(table)) == query(direct, ALL_COLUMNS.format(table))
    assert query(spooled, ALL_COLUMNS.format("runs"))[0][:10] == query(direct, ALL_COLUMNS.format("runs"))[0][:10]


KILLED_WRITER = """
import json, os, signal, sys
from cliplabel_pipeline.core.storage.database import write_connection
from cliplabel_pipeline.core.storage.job_rows import JobRows, replace_job_rows
rows = JobRows.from_json(json.load(open(sys.argv[2])))
with write_connection(sys.argv[1], 2.0) as con:
    replace_job_rows(con, rows)
    os.kill(os.getpid(), signal.SIGKILL)  # the writer's host dies before the transaction commits
"""


def test_a_writer_killed_mid_transaction_leaves_the_old_rows_and_its_retry_lands_every_item_once(tmp_path):
    db = tmp_path / "lineage.duckdb"
    record_run(db, "run-1", synthetic_labelled(tmp_path, "j", 5))
    newer = job_rows("run-2", synthetic_labelled(tmp_path, "j", 8))
    (tmp_path / "rows.json").write_text(json.dumps(newer.to_json()))
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db), str(tmp_path / "rows.json")])
    assert killed.returncode == -9
    assert query(db, "SELECT run_id, count(*) FROM labels GROUP BY run_id") == [("run-1", 5)]
    ingest_job_rows(db, JobRows.from_json(json.loads((tmp_path / "rows.json").read_text())), 2.0)
    assert query(db, "SELECT run_id, count(*), count(DISTINCT path) FROM labels GROUP BY run_id") == [("run-2", 8, 8)]
    assert query(db, "SELECT count(*) FROM assets") == [(8,)]
    assert query(db, "SELECT run_id, item_count FROM runs ORDER BY run_id") == [("run-1", 5), ("run-2", 8)]
