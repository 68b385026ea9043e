"""The HTTP shapes are the core's values: an upload's result is a label record named by its file, a job's status
the core's status with its URL; an error's status comes from its class, never from its words."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cliplabel_pipeline.core.errors import CliplabelError, JobGone, UnknownJob
from cliplabel_pipeline.core.reading.uploads import UnsupportedUpload, UploadTooLarge
from cliplabel_pipeline.core.serving.files import JobFile
from cliplabel_pipeline.core.serving.runner import JobBusy, JobStatus
from cliplabel_pipeline.core.values import LabelRecord, ScoredLabel, SkippedItem
from cliplabel_pipeline.service.errors import status_of
from cliplabel_pipeline.service.schemas import ImageResult, JobStatusOut, classify_response, job_status_out


def test_an_upload_s_result_is_its_label_record_named_by_its_filename():
    rec = LabelRecord("star.png", "image", [ScoredLabel("red star", 0.9)], "red star", 0.9, 0.3, 0.8, False,
                      match=0.7)
    body = json.loads(classify_response([rec], [SkippedItem("bad.png", "image", "not an image")], "toy",
                                        "own-1").model_dump_json())
    record = rec.to_json()
    assert body["results"] == [{"filename": "star.png", **{k: v for k, v in record.items() if k not in ("path", "kind")}}]
    assert list(body) == ["results", "skipped", "model", "bank_version"]
    assert body["skipped"] == [{"filename": "bad.png", "reason": "not an image"}]
    assert set(ImageResult.model_fields) == {"filename"} | {f.name for f in dataclasses.fields(LabelRecord)} - {"path", "kind"}


def test_a_job_s_status_is_the_core_status_with_its_url_third():
    status = JobStatus("j", "done", counts={"labelled": 2}, files=[JobFile("labels.jsonl", 10)])
    body = job_status_out(status, "/classify/job/j").model_dump(exclude_none=True)
    assert body == {"job_id": "j", "state": "done", "status_url": "/classify/job/j", "counts": {"labelled": 2},
                    "files": [{"path": "labels.jsonl", "size": 10}]}
    assert list(JobStatusOut.model_fields)[:3] == ["job_id", "state", "status_url"]


@pytest.mark.parametrize("error, status", [
    (UnknownJob("unknown job 'x': no folder"), 404),
    (JobBusy("job 'x' is busy"), 409),
    (UploadTooLarge("a.png: over the limit"), 413),
    (UnsupportedUpload("a.gif: not JPEG, PNG or WEBP"), 415),
    (JobGone("invalid job id '..'"), 400),
    (CliplabelError("unknown job words in an error of another kind"), 400),
])
def test_an_error_s_http_status_comes_from_its_class(error, status):
    assert status_of(error) == status
