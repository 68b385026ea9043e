"""The Label Studio export checked by label-studio-sdk itself: every prediction validates against the exported
labelling interface, and every mask's brush RLE decodes back to the mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline_tests.core.organising.conftest import export

pytest.importorskip("label_studio_sdk")
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface


def test_every_prediction_validates_and_every_brush_decodes_back(shared_job, tmp_path):
    root, job_id, _ = shared_job
    out = export(shared_job, "labelstudio", tmp_path / "ls")
    records = {r["path"]: r for r in read_jsonl(root / job_id / "labels.jsonl")}
    interface = LabelInterface((out / "label_config.xml").read_text())
    tasks = json.loads((out / "tasks.json").read_text())
    assert sorted(t["data"]["item"] for t in tasks) == sorted(records)
    for task in tasks:
        rec = records[task["data"]["item"]]
        (pred,) = task["predictions"]
        assert interface.validate_prediction(pred, return_errors=True) == []
        assert all(task["data"].get(obj.value_name) for obj in interface.objects)  # $image and $item are there
        choice = next(r for r in pred["result"] if r["type"] == "choices")
        assert choice["value"]["choices"] == [rec["label"]] and pred["score"] == rec["confidence"]
        shown = "source.png" if rec["kind"] == "mask" else rec["path"]
        assert task["data"]["image"] == f"/data/local-files/?d={job_id}/{shown}"
        brushes = [r for r in pred["result"] if r["type"] == "brushlabels"]
        assert len(brushes) == (rec["kind"] == "mask")
        for brush in brushes:
            h, w = brush["original_height"], brush["original_width"]
            decoded = decode_rle(brush["value"]["rle"]).reshape(h, w, 4)[:, :, 3] == 255
            truth = np.asarray(Image.open(root / job_id / rec["path"]).convert("L")) >= 128
            assert np.array_equal(decoded, truth)


def test_image_root_points_at_another_server(shared_job, tmp_path):
    _, job_id, _ = shared_job
    out = export(shared_job, "labelstudio", tmp_path / "ls", "--image-root", "http://labels.example:8000/results/")
    tasks = json.loads((out / "tasks.json").read_text())
    assert all(t["data"]["image"].startswith(f"http://labels.example:8000/results/{job_id}/") for t in tasks)
