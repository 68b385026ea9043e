"""All assets of one toy job, materialised with the toy model on an instance that holds the partition."""

from __future__ import annotations

import csv
import json
import re
import zipfile

import dagster as dg

from cliplabel_pipeline.defs.assets.embeddings import concept_text_embeddings, job_image_embeddings
from cliplabel_pipeline.defs.assets.filtered import job_confidence_filtered_sets
from cliplabel_pipeline.defs.assets.labels import job_label_assignments
from cliplabel_pipeline.defs.assets.reports import job_exports, job_groups, job_metrics_report
from cliplabel_pipeline.defs.assets.reviews import job_reviews
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query

ASSETS = [concept_text_embeddings, job_image_embeddings, job_reviews, job_label_assignments,
          job_confidence_filtered_sets, job_groups, job_exports, job_metrics_report]
# what label_jobs_job runs: the job's assets and the concept index they read
JOB_SELECTION = dg.AssetSelection.groups("job_labelling") | dg.AssetSelection.assets(concept_text_embeddings)


def materialize_job(job_id, resources, instance, run_config=None):
    instance.add_dynamic_partitions("jobs", [job_id])
    return dg.materialize(ASSETS, partition_key=job_id, resources=resources, instance=instance,
                          selection=JOB_SELECTION, run_config=run_config)


def test_all_assets_of_a_toy_job_materialise_with_real_outputs(toy_job, resources, instance, db_path):
    root, job_id = toy_job
    result = materialize_job(job_id, resources, instance)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert len(result.get_asset_check_evaluations()) == 6
    job = root / job_id
    labels = {r["path"]: r["top1"] for r in read_jsonl(job / "labels.jsonl")}
    assert labels["objects/obj_00.png"] == "red star" and len(labels) == 9
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["job_label_assignments"]["items"].value == 9
    assert "| red star |" in meta["job_label_assignments"]["label_histogram"].value
    labelled = meta["job_label_assignments"]  # the open-set score beside the softmax, in the run's metadata
    assert labelled["match_threshold"].value == 0.5 and labelled["flagged_by_match"].value >= 1  # the source
    assert 0.0 < labelled["mean_match"].value < 1.0 and labelled["match_calibration"].value["probes"] >= 100
    assert meta["job_metrics_report"]["accuracy"].value == 1.0
    assert meta["concept_text_embeddings"]["concepts"].value == 20  # the run materialised the index it read
    rows = query(db_path, "SELECT path, top1 FROM labels WHERE job_id = ?", [job_id])
    assert dict(rows) == labels
    assert query(db_path, "SELECT count(*), count(DISTINCT sha256) FROM assets WHERE status = 'labelled'") == [(9, 9)]
    runs = query(db_path, "SELECT run_id, item_count, bank_version FROM runs")
    assert runs == [(result.run_id, 9, runs[0][2])] and runs[0][2].startswith("own-")


def test_exports_groups_and_report_hold_the_labels(toy_job, resources, instance):
    root, job_id = toy_job
    assert materialize_job(job_id, resources, instance).success
    job = root / job_id
    groups = json.loads((job / "groups.json").read_text())
    assert {g["name"]: sorted(g["items"]) for g in groups["groups"]}["red star"] == ["masks/obj_00.png", "objects/obj_00.png"]
    with (job / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "top1", "confidence", "match", "low_confidence", "flagged_by", "label", "label_source"] and len(rows) == 9
    with zipfile.ZipFile(job / "export" / f"{job_id}.zip") as zf:
        names = set(zf.namelist())
        assert "red star/objects__obj_00.png" in names
        assert zf.read("red star/objects__obj_00.png") == (job / "objects" / "obj_00.png").read_bytes()
    manifest = json.loads((job / "manifest.json").read_text())
    assert manifest["counts"]["labelled"] == 9 and manifest["min_confidence"] == 0.25
    assert json.loads((job / "labels" / "masks" / "obj_00.png.json").read_text())["top1"] == "red star"
    report = (job / "report" / "report.md").read_text()
    assert "Accuracy 100.0%" in report and (job / "report" / "confusion.png").stat().st_size > 0
    assert "![match histogram](match.png)" in report and (job / "report" / "match.png").stat().st_size > 0


def test_rematerialising_leaves_no_duplicate_rows(toy_job, resources, instance, db_path):
    _, job_id = toy_job
    assert materialize_job(job_id, resources, instance).success
    assert materialize_job(job_id, resources, instance).success
    assert query(db_path, "SELECT count(*) FROM labels") == [(9,)]
    assert query(db_path, "SELECT count(*) FROM assets") == [(9,)]
    assert query(db_path, "SELECT count(DISTINCT run_id), count(*) FROM runs") == [(2, 2)]


def test_run_config_sets_top_k_and_threshold(toy_job, resources, instance, db_path):
    root, job_id = toy_job
    config = {"ops": {"job_label_assignments": {"config": {"top_k": 5, "min_confidence": 0.9999999}}}}
    assert materialize_job(job_id, resources, instance, run_config=config).success
    records = read_jsonl(root / job_id / "labels.jsonl")
    assert all(len(r["labels"]) == 5 for r in records)
    assert query(db_path, "SELECT top_k, min_confidence FROM runs") == [(5, 0.9999999)]
    assert sum(r["low_confidence"] for r in records) > 0


def test_a_job_with_nothing_readable_fails_with_a_clear_message(results_root, resources, instance):
    job = results_root / "broken"
    (job / "objects").mkdir(parents=True)
    (job / "source.png").write_bytes(b"")
    (job / "objects" / "a.png").write_text("not an image")
    instance.add_dynamic_partitions("jobs", ["broken"])
    result = dg.materialize(ASSETS, partition_key="broken", resources=resources, instance=instance,
                            selection=JOB_SELECTION, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert re.search(r"nothing could be labelled \(2 items skipped", failure.step_failure_data.error.message)


def test_cleanup_job_quarantines_with_run_config(toy_job, resources, instance, db_path):
    from cliplabel_pipeline.defs.jobs import cleanup_job

    root, job_id = toy_job
    assert materialize_job(job_id, resources, instance).success
    config = {"ops": {"quarantine_low_confidence": {"config": {"job_id": job_id, "min_confidence": 0.9999,
                                                                 "apply": True}}}}
    result = cleanup_job.execute_in_process(run_config=config, instance=instance, resources=resources)
    moved = result.output_for_node("quarantine_low_confidence")
    assert moved > 0
    assert len(list((root / job_id / "quarantine").rglob("*.png"))) == moved
    assert query(db_path, "SELECT count(*) FROM labels") == [(9 - moved,)]


def test_job_ids_from_run_config_cannot_escape_the_results_root(results_root, resources, instance):
    from cliplabel_pipeline.defs.jobs import cleanup_job

    (results_root.parent / "outside").mkdir()
    config = {"ops": {"quarantine_low_confidence": {"config": {"job_id": "../outside", "apply": True}}}}
    result = cleanup_job.execute_in_process(run_config=config, instance=instance, resources=resources,
                                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "invalid job id '../outside'" in failure.step_failure_data.error.message


def test_a_locked_database_fails_the_label_step_with_one_line(toy_job, resources, instance, db_path):
    import subprocess
    import sys

    _, job_id = toy_job
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db_path)!r}); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        instance.add_dynamic_partitions("jobs", [job_id])
        result = dg.materialize(ASSETS, partition_key=job_id, resources=resources, instance=instance,
                                selection=JOB_SELECTION, raise_on_error=False)
    finally:
        holder.kill()
        holder.wait()
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert f"cannot open DuckDB file {db_path}" in message and "Traceback" not in message


def test_cleanup_and_restore_are_recorded_against_the_jobs_assets(toy_job, resources, instance, db_path):
    """What each did, as it is: the labels and their filtered sets changed in place (observed), groups, exports
    and report rebuilt from them (materialised by the cleanup or restore that rebuilt them)."""
    from cliplabel_pipeline.defs.jobs import CHANGED_IN_PLACE, REBUILT, cleanup_job, restore_job

    root, job_id = toy_job
    assert materialize_job(job_id, resources, instance).success
    labels = (root / job_id / "labels.jsonl").read_bytes()
    config = {"ops": {"quarantine_low_confidence": {"config": {"job_id": job_id, "min_confidence": 0.9999,
                                                                 "apply": True}}}}
    assert cleanup_job.execute_in_process(run_config=config, instance=instance, resources=resources).success
    restore = {"ops": {"restore_quarantined": {"config": {"job_id": job_id}}}}
    assert restore_job.execute_in_process(run_config=restore, instance=instance, resources=resources).success
    assert (root / job_id / "labels.jsonl").read_bytes() == labels
    for asset in REBUILT:
        events = instance.fetch_materializations(asset.key, limit=10).records
        actions = [e.asset_materialization.metadata.get("action") for e in events
                   if e.asset_materialization.partition == job_id]
        assert [a.value for a in actions if a is not None][:2] == ["restore", "quarantine"], asset.key
    for asset in CHANGED_IN_PLACE:
        events = instance.fetch_observations(asset.key, limit=10).records
        actions = [e.asset_observation.metadata.get("action") for e in events
                   if e.asset_observation.partition == job_id]
        assert [a.value for a in actions if a is not None][:2] == ["restore", "quarantine"], asset.key
        materialized_by = {e.run_id for e in instance.fetch_materializations(asset.key, limit=10).records}
        assert materialized_by.isdisjoint(r.run_id for r in instance.get_runs()
                                          if r.job_name in ("cleanup_job", "restore_job")), asset.key


def test_the_report_preview_shows_every_picture_inline_never_a_broken_link(labeller, results_root):
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.pipeline import process_job
    from cliplabel_pipeline.defs.assets.reports import PREVIEW_BYTES, _inline_pictures
    from cliplabel_pipeline.toyworld.draw import LABELS
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    write_toy_job(results_root, "many", seed=4, labels=LABELS[:14], size=(640, 480))
    job = JobFolder.open(results_root, "many")
    process_job(labeller, job)
    report = job.report_md.read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert len(pictures) > 8  # more than the eight the preview used to show
    preview = _inline_pictures(job)
    assert not re.search(r"\]\((?!data:)[^)]*\)", preview)  # no relative link left for the UI to break on
    inlined = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", preview)
    assert len(inlined) == len(pictures) and sum(len(x) * 3 // 4 for x in inlined) <= PREVIEW_BYTES


def test_run_config_labels_that_name_nothing_drawn_flag_every_item_by_match(toy_job, resources, instance):
    """The issue's own example in Dagster's run config: a toy job against "cat, dog, bird" is all flagged."""
    root, job_id = toy_job
    config = {"ops": {"job_label_assignments": {"config": {"labels": ["cat", "dog", "bird"]}}}}
    assert materialize_job(job_id, resources, instance, run_config=config).success
    records = read_jsonl(root / job_id / "labels.jsonl")
    assert records and all(r["low_confidence"] and "match" in r["flagged_by"] for r in records)
    assert {r["top1"] for r in records} <= {"cat", "dog", "bird"}


def test_a_step_beats_at_the_interval_its_model_resource_read(toy_job, resources, instance, monkeypatch):
    """``CLIPLABEL_HEARTBEAT_S`` as the model resource read it at set-up: a step that outlasts it beats during
    its work, besides the line every step says as it ends."""
    import time

    from cliplabel_pipeline.core.encoding import embedding

    monkeypatch.setenv("CLIPLABEL_HEARTBEAT_S", "0.2")
    slow = embedding.embed_images

    def embed_slowly(*args, **kwargs):
        time.sleep(0.7)
        return slow(*args, **kwargs)

    monkeypatch.setattr(embedding, "embed_images", embed_slowly)
    root, job_id = toy_job
    result = materialize_job(job_id, resources, instance)
    assert result.success
    beats = [e.message for e in instance.all_logs(result.run_id) if e.message.startswith("HB op=")]
    step_beats = [b for b in beats if f"job={job_id}" in b]
    assert len(step_beats) >= 5, beats  # three of them while job_image_embeddings waited, one per step at its end
