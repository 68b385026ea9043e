"""Cleanup (dry run, quarantine, restore, purge) and exports, checked file by file and row by row."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query


def tree(folder):
    """{relative path: sha256} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def labelled_job(toy_job, toy_model, tmp_path):
    root, job_id = toy_job
    db = tmp_path / "lineage.duckdb"
    assert main(["job", job_id, "--results-root", str(root), "--model", toy_model, "--precision", "fp32",
                 "--db", str(db)]) == 0
    return root, job_id, db


def cli(labelled_job, *args):
    root, job_id, db = labelled_job
    return main([args[0], job_id, "--results-root", str(root), *args[1:]] + (["--db", str(db)] if args[0] != "export" else []))


def test_dry_run_lists_and_changes_nothing(labelled_job, capsys):
    root, job_id, db = labelled_job
    before = tree(root.parent)
    assert cli(labelled_job, "cleanup", "--min-confidence", "0.9999") == 0
    out = capsys.readouterr()
    assert "dry run" in out.err and len(out.out.splitlines()) >= 1
    assert tree(root.parent) == before


def test_apply_then_restore_round_trips_files_labels_and_rows(labelled_job, capsys):
    root, job_id, db = labelled_job
    job = root / job_id
    inputs_before = {k: v for k, v in tree(job).items() if k.startswith(("masks/", "objects/", "source.png"))}
    labels_before = (job / "labels.jsonl").read_bytes()
    rows_before = sorted(query(db, "SELECT * FROM labels"))
    assets_before = sorted(query(db, "SELECT * FROM assets"))
    assert cli(labelled_job, "cleanup", "--min-confidence", "0.9999", "--apply") == 0
    gone = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert gone and "source.png" not in gone
    for path in gone:
        assert not (job / path).exists() and len(list((job / "quarantine").glob(f"*/{path}"))) == 1
    assert query(db, "SELECT count(*) FROM labels") == [(len(rows_before) - len(gone),)]
    assert len(read_jsonl(job / "labels.jsonl")) == labels_before.count(b"\n") - len(gone)
    assert cli(labelled_job, "restore") == 0
    assert {k: v for k, v in tree(job).items() if k.startswith(("masks/", "objects/", "source.png"))} == inputs_before
    assert not (job / "quarantine").exists()
    assert (job / "labels.jsonl").read_bytes() == labels_before  # every line back where it was
    assert sorted(query(db, "SELECT * FROM labels")) == rows_before
    assert sorted(query(db, "SELECT * FROM assets")) == assets_before


def test_purge_needs_apply_and_deletes_for_good(labelled_job, capsys):
    root, job_id, db = labelled_job
    assert cli(labelled_job, "cleanup", "--min-confidence", "0.9999", "--purge") == 2
    assert cli(labelled_job, "cleanup", "--min-confidence", "0.9999", "--apply", "--purge") == 0
    gone = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert gone and not any((root / job_id / p).exists() for p in gone)
    assert not (root / job_id / "quarantine").exists()
    assert cli(labelled_job, "restore") == 2


def test_cleanup_never_follows_a_symlink_out_of_the_job(labelled_job, tmp_path):
    root, job_id, db = labelled_job
    outside = tmp_path / "precious.png"
    outside.write_bytes((root / job_id / "objects" / "obj_00.png").read_bytes())
    (root / job_id / "objects" / "link.png").symlink_to(outside)
    labels = read_jsonl(root / job_id / "labels.jsonl")
    labels.append({**labels[1], "path": "objects/link.png", "confidence": 0.0})
    (root / job_id / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    assert cli(labelled_job, "cleanup", "--min-confidence", "0.9999", "--apply", "--purge") == 0
    assert outside.is_file() and (root / job_id / "objects" / "link.png").is_symlink()


def test_csv_export_row_by_row(labelled_job, tmp_path):
    root, job_id, _ = labelled_job
    out = tmp_path / "labels.csv"
    assert cli(labelled_job, "export", "--format", "csv", "-o", str(out)) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    records = {r["path"]: r for r in read_jsonl(root / job_id / "labels.jsonl")}
    assert out.read_text().splitlines()[0] == "path,top1,confidence,match,low_confidence,flagged_by,label,label_source"
    assert len(rows) == len(records) == 9
    for row in rows:
        assert row["top1"] == records[row["path"]]["top1"]
        assert float(row["confidence"]) == records[row["path"]]["confidence"]


def test_zip_export_entry_by_entry(labelled_job, tmp_path):
    root, job_id, _ = labelled_job
    out = tmp_path / "grouped.zip"
    assert cli(labelled_job, "export", "--format", "zip", "-o", str(out)) == 0
    groups = json.loads((root / job_id / "groups.json").read_text())
    expected = {f"{g['name']}/{item.replace('/', '__')}": item for g in groups["groups"] for item in g["items"]}
    expected |= {f"low-confidence/{c['name']}-{c['cluster']}/{item.replace('/', '__')}": item
                 for c in groups["clusters"] for item in c["items"]}
    with zipfile.ZipFile(out) as zf:
        assert set(zf.namelist()) == set(expected) | {"labels.jsonl", "labels.csv"}
        for entry, item in expected.items():
            assert zf.read(entry) == (root / job_id / item).read_bytes()
        assert zf.read("labels.jsonl") == (root / job_id / "labels.jsonl").read_bytes()
        assert zf.read("labels.csv") == (root / job_id / "labels.csv").read_bytes()


def test_jsonl_export_and_manifest(labelled_job, tmp_path):
    root, job_id, _ = labelled_job
    out = tmp_path / "x.jsonl"
    assert cli(labelled_job, "export", "--format", "jsonl", "-o", str(out)) == 0
    assert read_jsonl(out) == read_jsonl(root / job_id / "labels.jsonl")
    manifest = json.loads((root / job_id / "manifest.json").read_text())
    assert manifest["model"].endswith("model") and manifest["counts"]["labelled"] == 9
    assert len(manifest["templates"]) == 7 and "created" in manifest and manifest["top_k"] == 3


def test_export_of_an_unlabelled_job_says_what_to_do(results_root, capsys):
    (results_root / "fresh").mkdir()
    assert main(["export", "fresh", "--results-root", str(results_root), "--format", "csv"]) == 2
    assert "run `cliplabel job fresh`" in capsys.readouterr().err
