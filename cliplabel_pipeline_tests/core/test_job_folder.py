"""How long work on a job waits for another process: read once with the settings by each face, carried by the
``JobFolder`` to its lock and to the writes of its rows; never read from the environment at that depth."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from unittest import mock

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.settings import Settings, Waits
from cliplabel_pipeline.core.storage.database import query, write_connection

HOLD_THE_JOB = """
import sys, time
from cliplabel_pipeline.core.job_folder import JobFolder
with JobFolder(sys.argv[1], sys.argv[2]).lock():
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_job(toy_job):
    """A toy job whose lock another process holds, as a long `cliplabel job` on it would."""
    root, job_id = toy_job
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_JOB, str(root), job_id], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield root, job_id
    finally:
        holder.kill()
        holder.wait()


def test_the_waits_default_to_the_settings_own():
    assert Waits() == Settings().waits == Waits(job_s=600.0, db_s=30.0)
    assert JobFolder("results", "job").waits == Waits()


def test_the_cli_waits_for_a_held_job_as_long_as_its_variable_says(held_job, monkeypatch, capsys):
    root, job_id = held_job
    monkeypatch.setenv("CLIPLABEL_JOB_WAIT_S", "0.5")
    started = time.monotonic()
    assert main(["cleanup", job_id, "--results-root", str(root), "--db", str(root.parent / "l.duckdb")]) == 2
    assert time.monotonic() - started < 20
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith(f"WARNING cliplabel_pipeline.core.job_folder: job {job_id} is busy in another")
    assert said[-1].startswith("cliplabel: error: ") and said[-1].endswith("for over 0.5s; try again when it has finished")
    assert len(said) == 2


def test_dagster_s_jobs_wait_as_long_as_the_results_root_resource_was_told(held_job):
    from cliplabel_pipeline.defs.resources import ResultsRootResource

    root, job_id = held_job
    job = ResultsRootResource(path=str(root), job_wait_seconds=0.3, db_wait_seconds=4.0).job(job_id)
    assert job.waits == Waits(job_s=0.3, db_s=4.0)
    with pytest.raises(CliplabelError, match=r"is busy: .* for over 0\.3s"):
        with job.lock():
            pass


def test_a_write_of_rows_never_reads_the_variables_itself(tmp_path):
    """The face read ``CLIPLABEL_DB_WAIT_S`` when it started; what the environment says later is not looked at."""
    db = tmp_path / "lineage.duckdb"
    (tmp_path / "job").mkdir()
    with mock.patch.dict(os.environ, {"CLIPLABEL_DB_WAIT_S": "-1", "CLIPLABEL_JOB_WAIT_S": "soon"}):
        with write_connection(db, 1.0) as con:
            con.execute("CREATE TABLE t (x INTEGER)")
        with JobFolder(tmp_path, "job").lock():
            pass
    assert query(db, "SELECT count(*) FROM t") == [(0,)]
