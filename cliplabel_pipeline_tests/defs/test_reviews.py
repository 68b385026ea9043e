"""Reviews in the graph: ``job_reviews_sensor`` requests ``apply_reviews_job`` for a job whose reviews changed,
and that run brings the labels of record, groups, exports and report up to date without encoding an image."""

from __future__ import annotations

import csv
import json

import dagster as dg
import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.filtered import count_flags
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import Review
from cliplabel_pipeline.defs.jobs import apply_reviews_job
from cliplabel_pipeline.defs.resources import DuckDBResource, ResultsRootResource
from cliplabel_pipeline.defs.sensors import job_reviews_sensor_every
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.defs.test_assets import ASSETS, materialize_job

job_reviews_sensor = job_reviews_sensor_every(Settings().sensor_interval_s)


def evaluate(instance, root, db, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "results_root": ResultsRootResource(path=str(root)), "duckdb": DuckDBResource(path=str(db))})
    return job_reviews_sensor(context)


def review(root, db, job_id, tmp_path, *lines):
    path = tmp_path / f"reviews-{len(list(tmp_path.glob('reviews-*')))}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["review", job_id, "--from", str(path), "--results-root", str(root), "--db", str(db)]) == 0


def test_reviews_arriving_request_one_run_the_same_file_none_a_changed_file_another(results_root, instance,
                                                                                    toy_model, tmp_path):
    db = tmp_path / "lineage.duckdb"
    for job_id, seed in (("job-r", 3), ("job-quiet", 4)):
        write_toy_job(results_root, job_id, seed=seed)
        assert main(["job", job_id, "--model", toy_model, "--results-root", str(results_root), "--db", str(db),
                     "--min-confidence", "0.4"]) == 0
    nothing = evaluate(instance, results_root, db)
    assert nothing.run_requests == [] and nothing.skip_reason.skip_message == "no new or changed reviews"

    review(results_root, db, "job-r", tmp_path, {"path": "objects/obj_00.png", "decision": "accept"})
    first = evaluate(instance, results_root, db, cursor=nothing.cursor)
    (request,) = first.run_requests
    version = JobFolder.open(results_root, "job-r").reviews_version()
    assert request.partition_key == "job-r" and request.run_key == f"reviews:job-r:{version}"
    # relabelled with the job's own threshold, never the defaults
    assert request.run_config["ops"]["job_label_assignments"]["config"]["min_confidence"] == 0.4
    assert first.dynamic_partitions_requests[0].partition_keys == ["job-r"]

    again = evaluate(instance, results_root, db, cursor=first.cursor)  # a new sensor process: only the cursor survives
    assert again.run_requests == [] and again.skip_reason.skip_message == "no new or changed reviews"

    review(results_root, db, "job-r", tmp_path, {"path": "masks/obj_01.png", "decision": "reject"})
    changed = evaluate(instance, results_root, db, cursor=again.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["job-r"]
    assert changed.run_requests[0].run_key != request.run_key


def test_a_review_run_carries_the_reviewed_label_through_groups_exports_and_report(toy_job, resources, instance,
                                                                                 db_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    root, job_id = toy_job
    assert materialize_job(job_id, resources, instance).success
    job = JobFolder.open(root, job_id)
    embeddings = job.embeddings_npy.stat().st_mtime_ns
    top1 = {r.path: r.top1 for r in job.read_labels()}
    assert top1["masks/obj_00.png"] == "red star"
    # The reviews arrive as a file: nothing here has laid them over the labels or rebuilt anything yet.
    job.append_reviews([Review("masks/obj_00.png", "correct", "blue circle", "red star", "ana"),
                        Review("objects/obj_01.png", "accept", top1["objects/obj_01.png"], top1["objects/obj_01.png"])])

    (request,) = evaluate(instance, root, db_path).run_requests
    defs = dg.Definitions(assets=ASSETS, jobs=[apply_reviews_job], resources=resources)
    result = defs.resolve_job_def("apply_reviews_job").execute_in_process(
        partition_key=request.partition_key, run_config=request.run_config, instance=instance,
        tags={"dagster/run_key": request.run_key})
    assert result.success
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {"job_reviews", "job_label_assignments", "job_confidence_filtered_sets", "job_groups",
                            "job_exports", "job_metrics_report"}
    assert job.embeddings_npy.stat().st_mtime_ns == embeddings  # no image encoded again

    groups = {g["name"]: g["items"] for g in json.loads(job.groups_json.read_text())["groups"]}
    assert "masks/obj_00.png" in groups["blue circle"] and "masks/obj_00.png" not in groups.get("red star", [])
    with job.labels_csv.open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["path"] == "masks/obj_00.png")
    assert (row["top1"], row["label"], row["label_source"]) == ("red star", "blue circle", "review")
    coco = COCO(str(job.export_dir / f"{job_id}-coco" / "annotations.json"))
    (ann,) = [a for a in coco.loadAnns(coco.getAnnIds()) if a["path"] == "masks/obj_00.png"]
    assert coco.loadCats(ann["category_id"])[0]["name"] == "blue circle" and ann["label_source"] == "review"
    queue = json.loads((job.export_dir / f"{job_id}-labelstudio-flagged" / "tasks.json").read_text())
    assert {"masks/obj_00.png", "objects/obj_01.png"}.isdisjoint(t["data"]["item"] for t in queue)
    review = json.loads(job.metrics_json.read_text())["review"]
    assert review["reviewed"] == 2 and review["accuracy"] == 0.5
    assert "Reviews" in job.report_md.read_text()

    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["job_reviews"]["reviews"].value == 2
    assert (meta["job_reviews"]["corrected"].value, meta["job_reviews"]["accepted"].value) == (1, 1)
    assert meta["job_label_assignments"]["labelled_by_review"].value == 2
    report = meta["job_metrics_report"]
    assert report["reviewed"].value == 2 and report["review_accuracy"].value == 0.5
    counts = count_flags(job.read_labels())  # one count of what is flagged, in every asset's metadata
    for asset in ("job_label_assignments", "job_confidence_filtered_sets", "job_metrics_report"):
        assert {name: meta[asset][name].value for name in counts.as_fields()} == counts.as_fields()
    assert report["headline"].value == counts.words() and f"labelled: {counts.words()};" in job.report_md.read_text()
    assert (report["reviews_accept"].value, report["reviews_correct"].value, report["reviews_reject"].value) == (1, 1, 0)
    assert meta["job_reviews"]["sha256"].value in request.run_key
