"""Hostile inputs, crashes and failures: what the pipeline guarantees, each proven here."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline_tests.untrusted.conftest import snapshot
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.core.pipeline import record_run
from cliplabel_pipeline_tests.lineage_rows import synthetic_labelled
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.hostile import EXPECTED, LABELLED, build_hostile_job

PACKAGE = Path(__file__).resolve().parents[1] / "cliplabel_pipeline"


def run_job(root: Path, job_id: str, model: str, db: Path, *extra: str) -> int:
    return main(["job", job_id, "--results-root", str(root), "--model", model, "--precision", "fp32",
                 "--db", str(db), *extra])


@pytest.fixture
def hostile(results_root, tmp_path):
    return results_root, build_hostile_job(results_root, "wild", tmp_path / "outside"), tmp_path / "outside"


def test_every_hostile_item_is_labelled_or_skipped_with_its_reason(hostile, toy_model, tmp_path):
    root, job, _ = hostile
    db = tmp_path / "lineage.duckdb"
    assert run_job(root, "wild", toy_model, db) == 0
    labelled = {r["path"] for r in read_jsonl(job / "labels.jsonl")}
    skipped = {s["path"]: s["reason"] for s in read_jsonl(job / "skipped.jsonl")}
    assert labelled == {p for p, e in EXPECTED.items() if e == LABELLED}
    assert set(skipped) == {p for p, e in EXPECTED.items() if e != LABELLED}
    for path, reason in skipped.items():
        assert EXPECTED[path] in reason, (path, reason)
    status = dict(query(db, "SELECT path, status FROM assets WHERE job_id = 'wild'"))
    assert status == {p: ("labelled" if e == LABELLED else "skipped") for p, e in EXPECTED.items()}
    reasons = dict(query(db, "SELECT path, skip_reason FROM assets WHERE status = 'skipped'"))
    assert reasons == skipped
    star = {r["path"]: r["top1"] for r in read_jsonl(job / "labels.jsonl")}
    for path in ("objects/obj_00.png", "objects/really_a_jpeg.png", "objects/no_extension",
                 "objects/ÜBER ç 物体.PNG", "objects/exif_rotated.jpg", "masks/half_size.png"):
        assert star[path] == "red star", path


def test_inputs_are_never_modified_and_nothing_outside_the_job_is_touched(hostile, toy_model, tmp_path):
    root, job, outside = hostile
    inputs = {k: v for k, v in snapshot(job).items() if k.startswith(("source.png", "masks/", "objects/"))}
    outside_before = snapshot(outside)
    siblings_before = sorted(p.name for p in root.iterdir())
    assert run_job(root, "wild", toy_model, tmp_path / "lineage.duckdb") == 0
    assert {k: v for k, v in snapshot(job).items() if k.startswith(("source.png", "masks/", "objects/"))} == inputs
    assert snapshot(outside) == outside_before
    assert sorted(p.name for p in root.iterdir()) == siblings_before


def test_a_symlink_out_of_the_job_is_never_opened(labeller, results_root, tmp_path):
    from cliplabel_pipeline.core.pipeline import label_job

    write_toy_job(results_root, "job", seed=3, labels=["blue square"])
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block for ever
    (results_root / "job" / "objects" / "pipe.png").symlink_to(fifo)
    done = {}
    job = JobFolder.open(results_root, "job")
    worker = threading.Thread(target=lambda: done.update(out=label_job(labeller, job)), daemon=True)
    worker.start()
    worker.join(60)
    assert "out" in done, "labelling blocked: it opened the symlink's target"
    skipped = done["out"].skipped
    assert {s.path: s.reason for s in skipped} == {"objects/pipe.png": "symbolic link (only regular files inside the job are read)"}


def test_a_job_with_an_empty_masks_folder_labels_the_rest(labeller, results_root):
    from cliplabel_pipeline.core.pipeline import label_job

    write_toy_job(results_root, "job", seed=4, labels=["green circle"])
    for mask in (results_root / "job" / "masks").iterdir():
        mask.unlink()
    labelled = label_job(labeller, JobFolder.open(results_root, "job"))
    assert sorted(r.path for r in labelled.records) == ["objects/obj_00.png", "source.png"] and labelled.skipped == []


def _db_rows(db: Path) -> list[tuple]:
    return sorted(query(db, "SELECT job_id, path, kind, top1, confidence, labels_json FROM labels"))


def test_a_run_killed_midway_and_restarted_ends_like_an_uninterrupted_one(results_root, toy_model, tmp_path):
    write_toy_job(results_root, "big", seed=21, n_objects=6)
    objects = results_root / "big" / "objects"
    for i in range(300):  # enough items that the kill lands while it works
        shutil.copy(objects / f"obj_{i % 6:02d}.png", objects / f"copy_{i:03d}.png")
    reference_root = tmp_path / "reference"
    shutil.copytree(results_root, reference_root)
    assert run_job(reference_root, "big", toy_model, tmp_path / "reference.duckdb") == 0

    db = tmp_path / "killed.duckdb"
    cmd = [sys.executable, "-m", "cliplabel_pipeline.cli", "job", "big", "--results-root", str(results_root),
           "--model", toy_model, "--precision", "fp32", "--db", str(db), "--batch-size", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (results_root / "big" / "_cliplabel").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before the kill: nothing was tested"
    labels = results_root / "big" / "labels.jsonl"
    if labels.exists():  # whatever the kill left is whole: atomic writes never leave half a file
        read_jsonl(labels)
    assert run_job(results_root, "big", toy_model, db) == 0
    assert read_jsonl(results_root / "big" / "labels.jsonl") == read_jsonl(reference_root / "big" / "labels.jsonl")
    assert _db_rows(db) == _db_rows(tmp_path / "reference.duckdb")
    assert query(db, "SELECT count(*), count(DISTINCT path) FROM labels") == [(313, 313)]
    assert not [p for p in (results_root / "big").iterdir() if p.name.endswith(".tmp")]


# The one module that starts a program: the service's Dagster route runs `dagster job launch` with an
# argument list (the job id inside a JSON argument), never through a shell.
STARTS_A_PROGRAM = {"dagster_runs.py"}


def test_the_pipeline_never_runs_shell_commands():
    offenders = [source.name for source in PACKAGE.rglob("*.py")
                 if re.search(r"os\.system|os\.popen|shell=True", source.read_text(encoding="utf-8"))
                 or (re.search(r"\bsubprocess\b", source.read_text(encoding="utf-8"))
                     and source.name not in STARTS_A_PROGRAM)]
    assert offenders == []


def test_the_pipeline_sets_hugging_face_offline_itself(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    code = "import os, cliplabel_pipeline.definitions; print(os.environ.get('HF_HUB_OFFLINE'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.stdout.strip() == "1"


def test_no_token_reaches_the_logs(toy_job, toy_model, tmp_path, monkeypatch):
    root, job_id = toy_job
    secret = "hf_SeCrEtToKeN1234567890"
    env = {**os.environ, "HF_TOKEN": secret, "HUGGING_FACE_HUB_TOKEN": secret}
    proc = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "-v", "job", job_id, "--results-root",
                           str(root), "--model", toy_model, "--db", str(tmp_path / "x.duckdb")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "INFO" in proc.stderr and secret not in proc.stdout + proc.stderr
    assert secret.encode() not in b"".join(p.read_bytes() for p in (root / job_id).rglob("*") if p.is_file())


def test_a_damaged_model_is_one_clear_error(toy_model, tmp_path, capsys, toy_job):
    broken = tmp_path / "broken-model"
    shutil.copytree(toy_model, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    root, job_id = toy_job
    assert main(["job", job_id, "--results-root", str(root), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load the CLIP model in" in err and "cliplabel model pull" in err


def test_an_unwritable_output_is_one_clear_error_naming_the_file(toy_job, toy_model, tmp_path, capsys):
    root, job_id = toy_job
    (root / job_id / "labels.jsonl").mkdir()  # something in the way where the labels must go
    assert run_job(root, job_id, toy_model, tmp_path / "x.duckdb") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {root / job_id / 'labels.jsonl'}" in err


def test_a_corrupted_duckdb_file_is_one_clear_error(tmp_path):
    db = tmp_path / "lineage.duckdb"
    db.write_bytes(b"not a database" * 100)
    with pytest.raises(CliplabelError, match=f"cannot open DuckDB file {re.escape(str(db))}.*move it aside"):
        record_run(db, "r", synthetic_labelled(tmp_path, "j", 1))


def test_a_duckdb_file_held_by_another_process_is_one_clear_error(tmp_path):
    db = tmp_path / "lineage.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(CliplabelError, match="another process holds it"):
            record_run(db, "r", synthetic_labelled(tmp_path, "j", 1))
    finally:
        holder.kill()
        holder.wait()
