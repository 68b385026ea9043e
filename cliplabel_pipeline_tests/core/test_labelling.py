"""Labelling toy jobs with the toy CLIP: real model, real labels, known truth."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.core.pipeline import label_job as _label_job
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage import guarded as outputs
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.toyworld.jobs import write_toy_jobs


def label_job(labeller, root, job_id, **settings):
    """``(records as labels.jsonl rows, embedded)`` of one toy job."""
    labelled = _label_job(labeller, JobFolder.open(root, job_id), LabelSettings(**settings))
    return [r.to_json() for r in labelled.records], labelled.embedded

RECORD_KEYS = {"path", "kind", "labels", "top1", "confidence", "cosine", "margin", "low_confidence"}


def test_the_red_star_is_labelled_red_star(labeller, toy_job):
    root, job_id = toy_job
    records, embedded = label_job(labeller, root, job_id)
    by_path = {r["path"]: r for r in read_jsonl(root / job_id / "labels.jsonl")}
    assert by_path["objects/obj_00.png"]["top1"] == "red star"
    assert by_path["masks/obj_00.png"]["top1"] == "red star"
    assert by_path["objects/obj_01.png"]["top1"] == "blue circle"
    assert len(records) == 9 and embedded.skipped == []


def test_held_out_toy_accuracy_is_at_least_90_percent_on_objects_and_masks(labeller, results_root):
    correct = {"object": 0, "mask": 0}
    total = {"object": 0, "mask": 0}
    for job_id in write_toy_jobs(results_root, 12, seed=424242, prefix="held-out"):
        truth = dict(csv.reader((results_root / job_id / "ground_truth.csv").open()))
        for rec in label_job(labeller, results_root, job_id)[0]:
            if rec["path"] in truth:
                total[rec["kind"]] += 1
                correct[rec["kind"]] += rec["top1"] == truth[rec["path"]]
    for kind in total:
        assert total[kind] >= 40
        assert correct[kind] / total[kind] >= 0.90, (kind, correct[kind], total[kind])


def test_record_schema_and_scores(labeller, toy_job):
    root, job_id = toy_job
    for rec in label_job(labeller, root, job_id)[0]:
        assert RECORD_KEYS <= rec.keys()
        assert rec["kind"] in {"source", "mask", "object"} and "\\" not in rec["path"]
        scores = [label["score"] for label in rec["labels"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert 0 <= rec["confidence"] <= 1 and rec["confidence"] == scores[0]
        assert rec["margin"] == pytest.approx(scores[0] - scores[1], abs=2e-6)
        assert -1 <= rec["cosine"] <= 1


def test_source_gets_scene_tags_from_its_objects(labeller, toy_job):
    root, job_id = toy_job
    source = next(r for r in label_job(labeller, root, job_id)[0] if r["kind"] == "source")
    tags = {t["name"] for t in source["scene_tags"]}
    assert {"red star", "blue circle", "green square", "yellow triangle"} <= tags


def test_low_confidence_items_are_marked_never_dropped(labeller, toy_job):
    root, job_id = toy_job
    records = label_job(labeller, root, job_id, min_confidence=0.999999)[0]
    assert len(records) == 9
    assert any(r["low_confidence"] for r in records)


def test_confidence_matches_the_transformers_zero_shot_pipeline(labeller, toy_model, toy_job, tmp_path):
    from PIL import Image
    from transformers import pipeline

    root, job_id = toy_job
    image = root / job_id / "objects" / "obj_00.png"
    candidates = ["red star", "blue circle", "green square"]
    template = tmp_path / "t.txt"
    template.write_text("This is a photo of {}.\n")
    ours = Labeller.load(Settings(model=toy_model, device="cpu", precision="fp32", labels=tuple(candidates),
                                  templates_file=template, cache_dir=labeller.cache_dir))
    rec = ours.classify_paths([image], LabelSettings(top_k=3))[0][0].to_json()
    pipe = pipeline("zero-shot-image-classification", model=toy_model, device="cpu")
    theirs = {d["label"]: d["score"] for d in pipe(Image.open(image).convert("RGB"), candidate_labels=candidates)}
    for label in rec["labels"]:
        assert label["score"] == pytest.approx(theirs[label["name"]], abs=0.02)


def test_bad_items_are_skipped_with_reasons_and_good_ones_labelled(labeller, toy_job):
    root, job_id = toy_job
    job = root / job_id
    (job / "objects" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    (job / "objects" / "empty.png").write_bytes(b"")
    (job / "masks" / "notes.png").write_text("not an image")
    records, _ = label_job(labeller, root, job_id)
    reasons = {s["path"]: s["reason"] for s in read_jsonl(job / "skipped.jsonl")}
    assert set(reasons) == {"objects/broken.png", "objects/empty.png", "masks/notes.png"}
    assert "empty file" in reasons["objects/empty.png"]
    assert len(records) == 9


def test_labels_jsonl_write_is_atomic(labeller, toy_job, monkeypatch):
    root, job_id = toy_job
    label_job(labeller, root, job_id)
    before = (root / job_id / "labels.jsonl").read_bytes()

    real_replace = os.replace

    def crash_on_labels(src, dst, **kwargs):
        if str(dst).endswith("labels.jsonl"):
            raise OSError(28, "disk full")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(outputs.os, "replace", crash_on_labels)
    with pytest.raises(CliplabelError, match=r"cannot write .*labels\.jsonl: disk full"):
        label_job(labeller, root, job_id)
    assert (root / job_id / "labels.jsonl").read_bytes() == before
    assert [p.name for p in (root / job_id).iterdir() if p.name.endswith(".tmp")] == []


def test_fixed_batch_shape_gives_the_same_embeddings_as_one_by_one(labeller, toy_job):
    root, job_id = toy_job
    from cliplabel_pipeline.core.encoding.embedding import embed_images, job_loaders
    from cliplabel_pipeline.core.reading.items import list_job_items

    manifest = list_job_items(JobFolder.open(root, job_id))
    batched = embed_images(labeller.encoder, job_loaders(manifest), batch_size=4)
    single = embed_images(labeller.encoder, job_loaders(manifest), batch_size=1)
    np.testing.assert_allclose(batched.embeddings, single.embeddings, atol=1e-4)
    assert len(batched.batch_seconds) == 3 and os.cpu_count()


def _top1_agreement(reference, other) -> tuple[int, int]:
    root, ids, expected = reference
    same = total = 0
    for job_id in ids:
        got = {r["path"]: r["top1"] for r in label_job(other, root, job_id)[0]}
        same += sum(expected[job_id][p] == got[p] for p in expected[job_id])
        total += len(expected[job_id])
    return same, total


def test_bf16_top1_agrees_with_fp32_on_at_least_99_percent_of_toy_masks_and_cutouts(labeller, toy_model, fp32_reference, text_cache):
    bf16 = Labeller.load(Settings(model=toy_model, device="cpu", precision="bf16", cache_dir=text_cache))
    assert bf16.encoder.precision == "bf16" and labeller.encoder.precision == "fp32"
    same, total = _top1_agreement(fp32_reference, bf16)
    assert total >= 80 and same / total >= 0.99, (same, total)


def test_int8_top1_agrees_with_fp32_on_at_least_99_percent_of_toy_masks_and_cutouts(labeller, toy_model, fp32_reference, text_cache):
    int8 = Labeller.load(Settings(model=toy_model, device="cpu", precision="int8", cache_dir=text_cache))
    assert int8.encoder.image_tower is not None and int8.encoder.text_precision in ("bf16", "fp32")
    assert list((text_cache / "onnx").glob("image-int8-*.onnx"))
    same, total = _top1_agreement(fp32_reference, int8)
    assert total >= 80 and same / total >= 0.99, (same, total)
