"""``job_exports`` writes the folder exports other tools open (COCO, Hugging Face imagefolder, Label Studio)
and the review queue, and names each in its metadata."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline_tests.defs.test_assets import ASSETS, JOB_SELECTION, materialize_job

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402


def exports_metadata(result):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("job_exports")]
    return event.materialization.metadata


def test_the_export_asset_writes_coco_hf_and_the_labelstudio_review_queue(toy_job, resources, instance):
    root, job_id = toy_job
    result = materialize_job(job_id, resources, instance)
    assert result.success
    job, export = root / job_id, root / job_id / "export"
    records = {r["path"]: r for r in read_jsonl(job / "labels.jsonl")}

    coco = COCO(str(export / f"{job_id}-coco" / "annotations.json"))
    (image,) = coco.loadImgs(coco.getImgIds())
    assert (export / f"{job_id}-coco" / image["file_name"]).read_bytes() == (job / "source.png").read_bytes()
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    anns = coco.loadAnns(coco.getAnnIds())
    assert sorted(a["path"] for a in anns) == sorted(p for p, r in records.items() if r["kind"] == "mask")
    assert all(names[a["category_id"]] == records[a["path"]]["label"] for a in anns)
    assert all(coco.annToMask(a).sum() == a["area"] > 0 for a in anns)

    rows = read_jsonl(export / f"{job_id}-hf" / "metadata.jsonl")
    assert sorted(r["path"] for r in rows) == sorted(records)
    assert all((export / f"{job_id}-hf" / r["file_name"]).is_file() for r in rows)

    tasks = json.loads((export / f"{job_id}-labelstudio" / "tasks.json").read_text())
    queue = json.loads((export / f"{job_id}-labelstudio-flagged" / "tasks.json").read_text())
    assert sorted(t["data"]["item"] for t in tasks) == sorted(records)
    flagged = [p for p, r in records.items() if r["low_confidence"]]
    assert flagged and sorted(t["data"]["item"] for t in queue) == sorted(flagged)
    confidences = [records[t["data"]["item"]]["confidence"] for t in queue]
    assert confidences == sorted(confidences)  # least sure first

    meta = exports_metadata(result)
    assert meta["folder_exports"].value == "coco, hf, labelstudio, labelstudio_flagged"
    assert meta["coco"].value == str(export / f"{job_id}-coco")
    assert meta["labelstudio_flagged"].value == str(export / f"{job_id}-labelstudio-flagged")
    assert meta["review_queue_items"].value == len(flagged)


def test_run_config_chooses_the_formats_and_an_unknown_one_fails_in_one_line(toy_job, resources, instance):
    root, job_id = toy_job
    config = {"ops": {"job_exports": {"config": {"formats": ["hf"], "review_queue": []}}}}
    result = materialize_job(job_id, resources, instance, run_config=config)
    assert result.success
    assert sorted(p.name for p in (root / job_id / "export").iterdir()) == [f"{job_id}-hf", f"{job_id}.zip"]
    assert exports_metadata(result)["folder_exports"].value == "hf"

    config = {"ops": {"job_exports": {"config": {"formats": ["coco", "cvat"]}}}}
    result = dg.materialize(ASSETS, partition_key=job_id, resources=resources, instance=instance,
                            selection=JOB_SELECTION, run_config=config, raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "job_exports"
    message = failure.step_failure_data.error.message
    assert "unknown folder export 'cvat': use coco, hf, labelstudio" in message and "Traceback" not in message
