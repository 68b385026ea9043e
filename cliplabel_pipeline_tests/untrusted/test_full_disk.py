"""The DuckDB file on a small file system that is full: ``job``, ``cleanup --apply`` and ``restore`` each end
with one line naming the file (no traceback), the database is unchanged, no input is lost, and a job's run shows
none of its outputs (labels, skipped items, groups, exports); once there is room again the same command succeeds
and everything agrees. The file system is a tmpfs mounted by the test (skipped, with the reason, where this user
may not mount one)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.small_disk import fill, small_tmpfs
from cliplabel_pipeline_tests.untrusted.conftest import snapshot
from cliplabel_pipeline_tests.untrusted.promises import assert_agree, job_inputs, lost, quarantined, run_in_process


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs at ``tmp_path/disk``, unmounted after the test."""
    with small_tmpfs(tmp_path / "disk") as disk:
        yield disk


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# What the encoding stage keeps for itself (embeddings and their timings) may be rewritten by a run whose labels
# never commit; everything a user or a later command reads from the job must not.
ENCODING_CACHE = {"_cliplabel/embeddings.npy", "_cliplabel/items.jsonl", "_cliplabel/encoding.json",
                  "_cliplabel/skipped.jsonl"}


def _outputs(job: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(job).items() if k not in ENCODING_CACHE}


COMMANDS = {
    "job": ["job", "job", "--top-k", "1", "--precision", "fp32"],
    "cleanup": ["cleanup", "job", "--min-confidence", "1", "--apply"],
    "restore": ["restore", "job"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_full_disk_under_the_database_is_one_line_and_loses_nothing(command, small_disk, results_root,
                                                                       toy_model):
    job = write_toy_job(results_root, "job", seed=5, n_objects=4)
    db = small_disk / "lineage.duckdb"

    def cli(args):
        extra = ["--model", toy_model] if args[0] == "job" else []
        return run_in_process([*args[:2], "--results-root", str(results_root), *args[2:], *extra, "--db", str(db)])

    assert cli(["job", "job", "--precision", "fp32"]).rc == 0
    if command == "restore":
        assert cli(COMMANDS["cleanup"]).rc == 0
    (job / "objects" / "new.png").write_bytes(b"not an image")  # the producer adds an item meanwhile
    files, rows = _outputs(job), sorted(query(db, "SELECT * FROM labels"))
    live = job_inputs(job) + quarantined(job)
    filler = fill(small_disk)
    database = _digest(db)

    ran = cli(COMMANDS[command])
    assert ran.rc == 2, (ran.rc, ran.err)
    err = ran.err.strip()
    assert "Traceback" not in ran.err and "\n" not in err and err.startswith("cliplabel: error:"), ran.err
    assert str(db) in err and "space" in err, err  # the line names the file and what is wrong with it
    assert _digest(db) == database and sorted(query(db, "SELECT * FROM labels")) == rows
    assert not lost(job, live)
    if command == "job":  # nothing of the run is seen: labels, skipped items, groups, exports, report
        assert _outputs(job) == files, "the job's outputs changed although its run was never recorded"
    # a cleanup or restore may have moved files under its journal: the next command completes it

    filler.unlink()  # room again: the same command succeeds, and everything agrees
    again = cli(COMMANDS[command])
    assert again.rc == 0, again.err
    assert_agree(job, db)
    assert not lost(job, live)


def test_a_job_on_a_full_disk_is_one_line_naming_a_file_and_the_fix(small_disk, toy_model):
    """The results root itself on the full disk: the first write that fails (the job's lock line is only a note,
    and the lock is held without it) ends the command in one line naming that file and what to do."""
    root = small_disk / "results"
    job = write_toy_job(root, "job", seed=5, n_objects=4)
    live = job_inputs(job)
    filler = fill(small_disk)
    ran = run_in_process(["job", "job", "--results-root", str(root), "--model", toy_model,
                          "--db", str(small_disk.parent / "lineage.duckdb")])
    err = ran.err.strip()
    assert ran.rc == 2 and "Traceback" not in ran.err and "\n" not in err, ran.err
    assert err.startswith(f"cliplabel: error: cannot write {job}") and "free some space" in err, err
    assert not lost(job, live)
    filler.unlink()
    assert run_in_process(["job", "job", "--results-root", str(root), "--model", toy_model,
                           "--db", str(small_disk.parent / "lineage.duckdb")]).rc == 0
