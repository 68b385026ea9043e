"""Quarantine cannot lose or leak: forged records are refused, clashes never overwrite, restore is exact, a
crash at any step is completed by the next run, and every derived output agrees with labels.jsonl."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile

import pytest

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.organising import cleanup
from cliplabel_pipeline.core.storage import guarded
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline_tests.untrusted.conftest import snapshot

ALL_BUT_SOURCE = "0.99999"  # every toy item but the most certain falls below this


@pytest.fixture
def labelled(job, run):
    assert run("job", "job") == 0
    return job


def _rows(db):
    return sorted(query(db, "SELECT * FROM labels")), sorted(query(db, "SELECT * FROM assets"))


def _derived_paths(job):
    """The items each derived output lists."""
    groups = json.loads((job / "groups.json").read_text())
    in_groups = {i for g in groups["groups"] + groups["clusters"] for i in g["items"]}
    in_csv = {r["path"] for r in csv.DictReader(io.StringIO((job / "labels.csv").read_text()))}
    per_item = {p.relative_to(job / "labels").as_posix()[:-5] for p in (job / "labels").rglob("*.json")}
    with zipfile.ZipFile(job / "export" / "job.zip") as zf:
        in_zip = {r["path"] for r in map(json.loads, zf.read("labels.jsonl").decode().splitlines())}
    metrics = json.loads((job / "metrics.json").read_text())["items"]
    manifest = json.loads((job / "manifest.json").read_text())["counts"]["labelled"]
    return in_groups, in_csv, per_item, in_zip, metrics, manifest


def _assert_derived_agree(job):
    labels = {r["path"] for r in read_jsonl(job / "labels.jsonl")}
    in_groups, in_csv, per_item, in_zip, metrics, manifest = _derived_paths(job)
    assert in_groups == in_csv == per_item == in_zip == labels
    assert metrics == manifest == len(labels)


def test_cleanup_then_restore_is_exact_and_outputs_follow(labelled, run):
    inputs = {k: v for k, v in snapshot(labelled).items() if k.startswith(("source", "masks/", "objects/"))}
    labels = (labelled / "labels.jsonl").read_bytes()
    rows = _rows(run.db)
    assert run("cleanup", "job", "--min-confidence", ALL_BUT_SOURCE, "--apply") == 0
    assert len(read_jsonl(labelled / "labels.jsonl")) < labels.count(b"\n")
    _assert_derived_agree(labelled)
    assert run("restore", "job") == 0
    assert (labelled / "labels.jsonl").read_bytes() == labels
    assert {k: v for k, v in snapshot(labelled).items() if k.startswith(("source", "masks/", "objects/"))} == inputs
    assert _rows(run.db) == rows
    _assert_derived_agree(labelled)
    assert not (labelled / "quarantine").exists()


def test_a_name_clash_keeps_both_versions_and_restore_never_overwrites(labelled, run):
    item = labelled / "objects" / "obj_00.png"
    first = item.read_bytes()
    assert run("cleanup", "job", "--min-confidence", "1", "--apply") == 0  # everything but the source
    shutil.copy(labelled / "source.png", item)  # the producer writes a new version under the same name
    second = item.read_bytes()
    assert run("job", "job") == 0
    assert run("cleanup", "job", "--min-confidence", "1", "--apply") == 0
    kept = sorted(p.read_bytes() for p in (labelled / "quarantine").glob("*/objects/obj_00.png"))
    assert kept == sorted([first, second])
    assert run("restore", "job") == 0  # the newest comes back; the older stays, recorded
    assert item.read_bytes() == second
    assert [p.read_bytes() for p in (labelled / "quarantine").glob("*/objects/obj_00.png")] == [first]
    assert len(list((labelled / "quarantine" / "journal").iterdir())) == 1


def test_restore_refuses_when_an_item_came_back_and_changes_nothing(labelled, run, capsys):
    assert run("cleanup", "job", "--min-confidence", "1", "--apply") == 0
    (labelled / "objects" / "obj_01.png").write_bytes(b"new")
    before = snapshot(labelled)
    assert run("restore", "job") == 2
    assert "exists again" in capsys.readouterr().err
    assert snapshot(labelled) == before


@pytest.mark.parametrize("forgery", ["escape", "other_job_rows", "wrong_line", "not_json", "stored_outside"])
def test_a_forged_journal_cannot_move_files_out_or_touch_another_job(labelled, run, results_root, outside, forgery):
    assert run("cleanup", "job", "--min-confidence", "1", "--apply") == 0
    journal = next((labelled / "quarantine" / "journal").iterdir())
    doc = json.loads(journal.read_text())
    entry = doc["entries"][0]
    if forgery == "escape":
        entry["path"] = "../../outside/precious.txt"
    elif forgery == "other_job_rows":
        for row in entry["rows"]["labels"]:
            row["job_id"] = "someone-else"
    elif forgery == "wrong_line":
        entry["line"] = json.dumps({"path": "../../etc/passwd"})
    elif forgery == "stored_outside":
        (labelled / "quarantine" / doc["id"]).rename(labelled / "quarantine" / "moved")
        (labelled / "quarantine" / doc["id"]).symlink_to(outside, target_is_directory=True)
    journal.write_text("{not json" if forgery == "not_json" else json.dumps(doc))
    outside_before = snapshot(outside)
    run("restore", "job")
    assert snapshot(outside) == outside_before
    assert not any(".." in r["path"] for r in read_jsonl(labelled / "labels.jsonl"))
    assert query(run.db, "SELECT DISTINCT job_id FROM labels") == [("job",)]
    assert sorted(p.name for p in results_root.iterdir()) == ["job"]


STEPS = ["move", "write_labels", "delete_rows", "journal_applied"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("crash_in", ["cleanup", "restore"])
def test_a_crash_at_any_step_is_completed_by_the_next_run(labelled, run, monkeypatch, step, crash_in):
    labels = (labelled / "labels.jsonl").read_bytes()
    rows = _rows(run.db)
    inputs = {k: v for k, v in snapshot(labelled).items() if k.startswith(("masks/", "objects/"))}

    class Crash(BaseException):
        """Stands for SIGKILL: nothing after it runs, no handler catches it."""

    calls = {"n": 0}
    targets = {"move": (guarded, "move"), "write_labels": (cleanup, "_write_lines"),
               "delete_rows": (cleanup, "delete_item_rows" if crash_in == "cleanup" else "insert_item_rows"),
               "journal_applied": (cleanup, "_prune_quarantine" if crash_in == "restore" else "_write_journal")}
    module, name = targets[step]
    real = getattr(module, name)

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == (2 if name in ("move", "_write_journal") else 1):  # part-way, not before the start
            raise Crash()
        return real(*args, **kwargs)

    if crash_in == "restore":
        assert run("cleanup", "job", "--min-confidence", ALL_BUT_SOURCE, "--apply") == 0
    monkeypatch.setattr(module, name, crashing)
    with pytest.raises(Crash):
        run(crash_in, "job", *(["--min-confidence", ALL_BUT_SOURCE, "--apply"] if crash_in == "cleanup" else []))
    monkeypatch.setattr(module, name, real)
    if crash_in == "cleanup":
        assert run("cleanup", "job", "--min-confidence", "0") == 0  # any later cleanup completes it first
    finished = crash_in == "restore" and step == "journal_applied"  # only empty folders were left to remove
    assert run("restore", "job") == (2 if finished else 0)
    assert (labelled / "labels.jsonl").read_bytes() == labels
    assert _rows(run.db) == rows
    assert {k: v for k, v in snapshot(labelled).items() if k.startswith(("masks/", "objects/"))} == inputs


def test_outputs_are_marked_stale_when_they_cannot_be_rebuilt(labelled, run, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIPLABEL_CACHE", str(tmp_path / "empty-cache"))  # no concept index to name clusters
    assert run("cleanup", "job", "--min-confidence", ALL_BUT_SOURCE, "--apply") == 0
    assert JobFolder.open(labelled.parent, "job").stale_reason()
    assert run("export", "job", "--format", "zip") == 2
    assert "run `cliplabel job job`" in capsys.readouterr().err
    assert run("export", "job", "--format", "csv") == 0  # the CSV comes from labels.jsonl itself
    assert run("job", "job") == 0
    assert JobFolder.open(labelled.parent, "job").stale_reason() is None


def test_a_forged_label_line_cannot_make_cleanup_remove_an_input_or_an_output(results_root, toy_model, tmp_path,
                                                                            capsys):
    import json

    from cliplabel_pipeline.cli import main

    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    write_toy_job(results_root, "forged", seed=12)
    job = results_root / "forged"
    common = ["--results-root", str(results_root), "--db", str(tmp_path / "f.duckdb")]
    assert main(["job", "forged", "--model", toy_model, *common]) == 0
    keep = {name: (job / name).read_bytes() for name in ("source.png", "ground_truth.csv", "labels.csv")}

    def forge(names):
        with (job / "labels.jsonl").open("a") as fh:
            for name in names:
                fh.write(json.dumps({"path": name, "kind": "object", "labels": [], "top1": "x", "confidence": 0.0,
                                     "cosine": 0.0, "margin": 0.0, "low_confidence": True}) + "\n")

    forge(["ground_truth.csv", "labels.csv"])
    assert main(["cleanup", "forged", "--min-confidence", "0.01", "--apply", "--purge", *common]) == 0
    inputs = {name: keep[name] for name in ("source.png", "ground_truth.csv")}
    assert {name: (job / name).read_bytes() for name in inputs} == inputs
    assert (job / "labels.csv").is_file()  # an output: rewritten from labels.jsonl, never removed
    keep["labels.csv"] = (job / "labels.csv").read_bytes()
    forge(["source.png"])  # a second line for an item: the whole file is refused, with one line
    assert main(["cleanup", "forged", "--min-confidence", "0.01", "--apply", "--purge", *common]) == 2
    assert "lists 'source.png' twice" in capsys.readouterr().err
    assert {name: (job / name).read_bytes() for name in keep} == keep


def test_a_quarantined_file_changed_since_cleanup_is_never_restored(labelled, run, capsys):
    assert run("cleanup", "job", "--min-confidence", ALL_BUT_SOURCE, "--apply") == 0
    labels, rows = (labelled / "labels.jsonl").read_bytes(), _rows(run.db)
    [kept] = [p for p in (labelled / "quarantine").rglob("*.png")][:1]
    kept.write_bytes(kept.read_bytes() + b"tampered")
    capsys.readouterr()
    assert run("restore", "job") != 0
    err = capsys.readouterr().err
    assert "changed since cleanup (sha256 differs)" in err and len(err.strip().splitlines()) == 1
    assert (labelled / "labels.jsonl").read_bytes() == labels and _rows(run.db) == rows
    assert kept.exists()  # still in quarantine, nothing half restored
