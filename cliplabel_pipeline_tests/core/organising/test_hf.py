"""The Hugging Face export loaded by ``datasets`` itself, offline, as an imagefolder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline_tests.core.organising.conftest import export

datasets = pytest.importorskip("datasets")


def test_imagefolder_loads_offline_one_row_per_labelled_item(shared_job, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    root, job_id, _ = shared_job
    out = export(shared_job, "hf", tmp_path / "hf")
    records = {r["path"]: r for r in read_jsonl(root / job_id / "labels.jsonl")}
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == len(records) == 9  # the skipped item is no row
    assert sorted(ds["path"]) == sorted(records)
    for row in ds:
        rec = records[row["path"]]
        assert (row["label"], row["score"], row["match"], row["kind"], row["label_source"]) == (
            rec["label"], rec["confidence"], rec["match"], rec["kind"], rec["label_source"])
        if rec["kind"] == "object":  # a cut-out is itself
            assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(root / job_id / rec["path"])))
        if rec["kind"] == "mask":  # the region of the source under the mask, cropped to its box
            mask = np.asarray(Image.open(root / job_id / rec["path"]).convert("L")) >= 128
            ys, xs = np.nonzero(mask)
            assert row["image"].size == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    names = (out / "classes.txt").read_text().splitlines()
    cast = ds.cast_column("label", datasets.ClassLabel(names_file=str(out / "classes.txt")))
    assert [names[i] for i in cast["label"]] == ds["label"]
