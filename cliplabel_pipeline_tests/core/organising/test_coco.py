"""The COCO export opened by pycocotools itself: every mask decoded back pixel for pixel, its area and box
checked, ``loadRes`` and ``COCOeval`` on ``segm``; and by supervision."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline_tests.core.organising.conftest import export

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def test_masks_come_back_pixel_for_pixel_with_area_box_and_label(shared_job, tmp_path, capsys):
    root, job_id, _ = shared_job
    out = export(shared_job, "coco", tmp_path / "coco")
    records = {r["path"]: r for r in read_jsonl(root / job_id / "labels.jsonl")}
    coco = COCO(str(out / "annotations.json"))
    (image,) = coco.loadImgs(coco.getImgIds())
    source = Image.open(out / image["file_name"])
    assert (source.width, source.height) == (image["width"], image["height"])
    assert (out / image["file_name"]).read_bytes() == (root / job_id / "source.png").read_bytes()
    anns = coco.loadAnns(coco.getAnnIds())
    masks = sorted(p for p, r in records.items() if r["kind"] == "mask")
    assert sorted(a["path"] for a in anns) == masks and len(masks) == 4
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for ann in anns:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
        decoded = coco.annToMask(ann).astype(bool)
        truth = np.asarray(Image.open(root / job_id / ann["path"]).convert("L")) >= 128
        assert np.array_equal(decoded, truth), ann["path"]
        ys, xs = np.nonzero(truth)
        assert ann["area"] == truth.sum()
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        rec = records[ann["path"]]
        assert names[ann["category_id"]] == rec["label"] and ann["score"] == rec["confidence"]
        assert ann["match"] == rec["match"] and [x["name"] for x in ann["top_k"]] == [x["name"] for x in rec["labels"]]


def test_results_load_and_evaluate_with_cocoeval(shared_job, tmp_path):
    out = export(shared_job, "coco", tmp_path / "coco")
    gt = COCO(str(out / "annotations.json"))
    dt = gt.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == len(gt.getAnnIds())
    ev = COCOeval(gt, dt, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    # the predictions are the model's own top-1 on the very masks: where the label of record is the model's, AP is 1
    assert ev.stats[0] == pytest.approx(1.0)


def test_supervision_reads_the_coco_export(shared_job, tmp_path):
    sv = pytest.importorskip("supervision")
    out = export(shared_job, "coco", tmp_path / "coco")
    ds = sv.DetectionDataset.from_coco(images_directory_path=str(out), annotations_path=str(out / "annotations.json"),
                                       force_masks=True)
    doc = json.loads((out / "annotations.json").read_text())
    assert ds.classes == [c["name"] for c in doc["categories"]] and len(ds) == 1
    _, _, detections = ds[0]
    assert len(detections) == len(doc["annotations"]) and detections.mask.shape[0] == len(doc["annotations"])
    for ann, mask in zip(doc["annotations"], detections.mask):
        assert np.array_equal(mask, mask_util.decode({**ann["segmentation"],
                                                      "counts": ann["segmentation"]["counts"].encode()}).astype(bool))


def test_a_zip_of_the_folder_on_standard_output(shared_job, tmp_path, capfdbinary):
    import io
    import zipfile

    from cliplabel_pipeline.cli import main

    root, job_id, _ = shared_job
    assert main(["export", job_id, "--results-root", str(root), "--format", "coco", "-o", "-"]) == 0
    names = zipfile.ZipFile(io.BytesIO(capfdbinary.readouterr().out)).namelist()
    assert sorted(names) == ["annotations.json", "results.json", "source.png"]
