"""A job's files and its DuckDB rows change together; a real SIGKILL during cleanup loses nothing."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query


def _hold(db):
    """Another process with a read-only connection left open, as a person inspecting the database would."""
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}, "
                               "read_only=True); print('ready', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_a_held_database_fails_the_job_before_any_label_changes(job, run, capsys):
    assert run("job", "job") == 0
    labels = (job / "labels.jsonl").read_bytes()
    holder = _hold(run.db)
    try:
        assert run("job", "job", "--top-k", "1") == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another process holds it" in err and "CLIPLABEL_DB_WAIT_S" in err
    assert (job / "labels.jsonl").read_bytes() == labels


def test_a_database_released_within_the_wait_is_waited_for(job, run, monkeypatch):
    assert run("job", "job") == 0
    monkeypatch.setenv("CLIPLABEL_DB_WAIT_S", "60")
    holder = _hold(run.db)
    try:
        subprocess.Popen(["bash", "-c", f"sleep 2; kill {holder.pid}"])
        assert run("job", "job", "--top-k", "1") == 0
    finally:
        holder.kill()
        holder.wait()
    assert all(len(r["labels"]) == 1 for r in read_jsonl(job / "labels.jsonl"))
    assert query(run.db, "SELECT DISTINCT top_k FROM runs ORDER BY finished_at DESC LIMIT 1") == [(1,)]


def test_a_held_database_stops_cleanup_before_any_file_moves(job, run, capsys):
    assert run("job", "job") == 0
    before = sorted(p.name for p in (job / "objects").iterdir())
    holder = _hold(run.db)
    try:
        assert run("cleanup", "job", "--min-confidence", "1", "--apply") == 2
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (job / "objects").iterdir()) == before
    assert not (job / "quarantine").exists()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.4, 1.0, 1.8])
def test_sigkill_during_cleanup_then_restore_loses_nothing(results_root, toy_model, tmp_path, delay):
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    job = write_toy_job(results_root, "big", seed=9, n_objects=6)
    for i in range(1200):
        shutil.copy(job / "objects" / f"obj_{i % 6:02d}.png", job / "objects" / f"copy_{i:04d}.png")
    db = tmp_path / "lineage.duckdb"
    common = ["--results-root", str(results_root), "--db", str(db)]
    cli = [sys.executable, "-m", "cliplabel_pipeline.cli"]
    subprocess.run([*cli, "job", "big", "--model", toy_model, "--precision", "fp32", *common], check=True,
                   capture_output=True)
    labels = (job / "labels.jsonl").read_bytes()
    rows = sorted(query(db, "SELECT * FROM labels"))
    proc = subprocess.Popen([*cli, "cleanup", "big", "--min-confidence", "1", "--apply", *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run([*cli, "restore", "big", *common], capture_output=True, text=True)
    assert out.returncode in (0, 2), out.stderr  # 2: the kill came before anything was moved
    if out.returncode == 2:
        assert "nothing in quarantine" in out.stderr
    assert (job / "labels.jsonl").read_bytes() == labels
    assert sorted(query(db, "SELECT * FROM labels")) == rows
    assert len(list((job / "objects").iterdir())) == 1206
    assert not (job / "quarantine").exists()
