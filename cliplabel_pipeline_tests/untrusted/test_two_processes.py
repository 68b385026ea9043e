"""Two ``cliplabel`` processes on one job at once, as two people (or a person and the sensor) would start them,
released together once both have imported (``at_once``):
whatever the pair, each ends with success or one line, no input byte is lost, labels.jsonl and DuckDB agree,
and a ``restore`` afterwards brings back everything either quarantined."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.untrusted.promises import (
    assert_agree, cli_env, job_inputs, lost, quarantined, run_in_process, sha,
)

REPO = Path(__file__).resolve().parents[2]
CLEANUP = ["cleanup", "--min-confidence", "1", "--apply"]  # every item but the source
HALF = ["cleanup", "--min-confidence", "0.99999", "--apply"]  # some of them
PURGE = ["cleanup", "--min-confidence", "0.99999", "--apply", "--purge"]
PAIRS = {
    "cleanup+cleanup": (CLEANUP, CLEANUP),
    "cleanup+other cleanup": (HALF, CLEANUP),
    "cleanup+restore": (CLEANUP, ["restore"]),
    "restore+restore": (["restore"], ["restore"]),
    "purge+restore": (PURGE, ["restore"]),
    "job+cleanup": (["job"], CLEANUP),
    "job+job": (["job"], ["job"]),
    "export+cleanup": (["export", "--format", "zip"], CLEANUP),
}
QUICK = {"cleanup+cleanup"}  # the pair that stranded items (issue #23); the rest run with the slow tests


def _args(command: list[str], root, db, model) -> list[str]:
    args = [command[0], "job", "--results-root", str(root), *command[1:]]
    if command[0] == "job":
        args += ["--model", model, "--precision", "fp32"]
    if command[0] != "export":
        args += ["--db", str(db)]
    return args


@pytest.mark.parametrize("pair", [pytest.param(p, marks=() if p in QUICK else pytest.mark.slow) for p in PAIRS])
def test_two_processes_at_once_on_one_job_lose_nothing(pair, results_root, toy_model, tmp_path):
    job = write_toy_job(results_root, "job", seed=5, n_objects=4)
    db = tmp_path / "lineage.duckdb"
    assert run_in_process(_args(["job"], results_root, db, toy_model)).rc == 0
    if "restore" in pair:  # something to restore: the items below 0.99999 in quarantine already
        assert run_in_process(_args(HALF, results_root, db, toy_model)).rc == 0
    live = job_inputs(job) + quarantined(job)
    first, second = PAIRS[pair]
    if PURGE in (first, second):  # what the purge may delete: what it plans now, and (when a restore runs
        # first and brings them back below the same threshold) what is quarantined
        plan = run_in_process(_args(PURGE[:3], results_root, db, toy_model))
        for rel in (line.split("\t")[0] for line in plan.out.splitlines()):
            live -= Counter({(rel, sha((job / rel).read_bytes())): 1})
        live -= quarantined(job)
    gate = tmp_path / "gate"
    procs = [subprocess.Popen([sys.executable, "-m", "cliplabel_pipeline_tests.untrusted.at_once", str(gate),
                               *_args(c, results_root, db, toy_model)], env=cli_env(), text=True, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in (first, second)]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("gate.*.ready"))) < 2 and all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "the two processes never got ready"
        time.sleep(0.01)
    gate.touch()  # both imported: they start their commands together
    ended = [(p.wait(300), *p.communicate()) for p in procs]
    for command, (rc, _out, err) in zip((first, second), ended):
        assert "Traceback" not in err, err
        if command == ["restore"] and rc == 2:  # the other process restored it first (a log line may say it waited)
            assert err.strip().splitlines()[-1] == "cliplabel: error: job 'job' has nothing in quarantine", err
        else:
            assert rc == 0, err
    assert not lost(job, live), f"lost: {sorted(lost(job, live))}"
    assert_agree(job, db)
    held = quarantined(job)
    after = run_in_process(_args(["restore"], results_root, db, toy_model))
    assert after.rc == (0 if held else 2), after.err
    assert not quarantined(job), f"restore left {sorted(quarantined(job))} in quarantine"
    assert not live - job_inputs(job), "after restore the job lacks inputs the producer wrote"
    assert_agree(job, db)
