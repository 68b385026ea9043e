"""Breaks a hostile run found after the searching tests were written, each kept as a plain test."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.untrusted.promises import (
    assert_agree, derived_paths, is_stale, label_lines, run_in_process,
)


@pytest.fixture
def labelled_job(results_root, toy_model, tmp_path):
    """A labelled toy job, and the arguments every command of it takes."""
    job = write_toy_job(results_root, "job", seed=5, n_objects=4)
    common = ["--results-root", str(results_root), "--db", str(tmp_path / "lineage.duckdb")]
    assert run_in_process(["job", "job", *common, "--model", toy_model, "--precision", "fp32"]).rc == 0
    return job, common


def test_a_hard_link_planted_at_the_lock_file_never_lets_a_write_out(labelled_job, outside):
    job, common = labelled_job
    lock = job / "_cliplabel" / "job.lock"
    lock.unlink()
    os.link(outside / "precious.txt", lock)
    assert run_in_process(["cleanup", "job", *common, "--min-confidence", "1", "--apply"]).rc == 0
    assert (outside / "precious.txt").read_text() == "must stay byte-identical\n"
    assert os.stat(lock).st_nlink == 1


def test_a_restore_killed_after_its_journal_went_is_repaired_by_the_next_command(labelled_job, tmp_path):
    job, common = labelled_job
    assert run_in_process(["cleanup", "job", *common, "--min-confidence", "1", "--apply"]).rc == 0
    seen = []

    def after_the_journal_went(name, args):  # the rebuild of the outputs is what the kill takes away
        if seen:
            return True
        if name in ("unlink", "remove") and re.match(r"\d{8}T\d+-[0-9a-f]{6}\.json$", Path(os.fsdecode(args[0])).name):
            seen.append(args[0])
        return False

    assert run_in_process(["restore", "job", *common], when=after_the_journal_went).rc is None
    assert not list((job / "quarantine").rglob("*.json")), "the kill came before the journal went"
    assert is_stale(job)  # meanwhile the outputs say they are behind, and a ZIP export refuses
    assert run_in_process(["cleanup", "job", *common]).rc == 0  # a dry run repairs them
    assert not is_stale(job)
    assert_agree(job, tmp_path / "lineage.duckdb")


def test_labels_csv_follows_the_labels_even_when_groups_cannot_be_rebuilt(labelled_job, toy_model, tmp_path):
    """`job` between a cleanup and a restore: the restored items have no embedding, so groups and the ZIP wait
    for the next `job` (marked stale), but labels.csv and the per-item JSON need none and follow at once."""
    job, common = labelled_job
    assert run_in_process(["cleanup", "job", *common, "--min-confidence", "1", "--apply"]).rc == 0
    assert run_in_process(["job", "job", *common, "--model", toy_model, "--precision", "fp32"]).rc == 0
    assert run_in_process(["restore", "job", *common]).rc == 0
    assert is_stale(job)
    derived = derived_paths(job)
    assert derived["labels.csv"] == set(label_lines(job)) == derived["labels/*.json"]


@pytest.mark.parametrize("line", [
    "[" * 100_000 + "]" * 100_000,                      # nested past Python's limit
    json.dumps({"path": "masks/obj_00.png", "kind": "mask"}),  # fields missing
    "not json",
])
def test_a_hand_edited_label_line_is_one_line_for_every_command(labelled_job, line):
    job, common = labelled_job
    with (job / "labels.jsonl").open("a") as fh:
        fh.write(line + "\n")
    for args in (["cleanup", "job", *common], ["export", "job", common[0], common[1], "--format", "csv"]):
        ran = run_in_process(args)
        assert ran.rc == 2 and "Traceback" not in ran.err, ran.err
        assert ran.err.strip().count("\n") == 0 and "is not a record cliplabel wrote" in ran.err, ran.err


@pytest.mark.parametrize("alias", ["masks/./obj_00.png", "masks//obj_00.png", "../../outside/precious.txt"])
def test_a_label_line_naming_an_alias_or_a_path_outside_is_refused(labelled_job, alias):
    job, common = labelled_job
    line = json.loads((job / "labels.jsonl").read_text().splitlines()[1])
    with (job / "labels.jsonl").open("a") as fh:
        fh.write(json.dumps({**line, "path": alias}) + "\n")
    ran = run_in_process(["cleanup", "job", *common, "--min-confidence", "1", "--apply"])
    assert ran.rc == 2 and "not a plain path inside the job" in ran.err, ran.err
    assert not (job / "quarantine").exists()


@pytest.mark.parametrize("job_id", ["CONIN$", "conout$", "CON", "nul.txt", "a:b", "trailing."])
def test_job_ids_windows_cannot_hold_are_refused_with_one_line(results_root, job_id):
    ran = run_in_process(["cleanup", job_id, "--results-root", str(results_root)])
    assert ran.rc == 2 and "invalid job id" in ran.err and ran.err.strip().count("\n") == 0, ran.err


def test_the_outside_fixture_is_beside_the_results_root(outside, results_root):
    assert Path(outside).parent == Path(results_root).parent  # what the hard-link test relies on
