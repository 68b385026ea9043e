"""Exports as ZIPs, reviews sent back, and Label Studio's ML backend protocol, over HTTP."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from cliplabel_pipeline_tests.service.conftest import wait_done

LABELS = ["red star", "blue circle", "green square", "yellow triangle"]


@pytest.fixture(scope="module")
def labelled(server, service_root):
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    write_toy_job(service_root, "interop-1", seed=101, labels=LABELS)
    with server.client() as c:
        assert c.post("/classify/job/interop-1").status_code == 202
        assert wait_done(c, "interop-1")["state"] == "done"
    return "interop-1"


def test_folder_exports_come_as_zips_of_the_folder(client, labelled):
    for fmt, names in (("coco", {"annotations.json", "results.json", "source.png"}),
                       ("labelstudio", {"tasks.json", "label_config.xml"})):
        r = client.get(f"/classify/export/{labelled}", params={"format": fmt})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert f'filename="{labelled}-{fmt}.zip"' in r.headers["content-disposition"]
        assert set(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == names
    hf = zipfile.ZipFile(io.BytesIO(client.get(f"/classify/export/{labelled}", params={"format": "hf"}).content))
    assert len([n for n in hf.namelist() if n.startswith("images/")]) == 9


def test_the_review_queue_least_sure_first(client, labelled):
    r = client.get(f"/classify/export/{labelled}", params={"format": "jsonl", "only": "flagged"})
    queue = [json.loads(line) for line in r.text.splitlines()]
    everything = [json.loads(line) for line in client.get(f"/classify/export/{labelled}",
                                                          params={"format": "jsonl"}).text.splitlines()]
    assert [q["path"] for q in queue] == [e["path"] for e in sorted(
        (e for e in everything if e["low_confidence"]), key=lambda e: (e["confidence"], e["match"], e["path"]))]
    assert client.get(f"/classify/export/{labelled}", params={"format": "csv", "only": "some"}).status_code == 422


def test_reviews_posted_change_the_label_of_record(client, labelled, service_root):
    lines = json.dumps({"path": "masks/obj_02.png", "decision": "correct", "label": "red star"}) + "\n"
    lines += json.dumps({"path": "masks/nope.png", "decision": "accept"}) + "\n"
    r = client.post(f"/jobs/{labelled}/reviews", params={"reviewer": "ana"}, content=lines.encode())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"]["correct"] == 1 and body["unmatched"][0]["entry"].startswith("line 2")
    assert body["reviews"][0]["reviewer"] == "ana"
    rec = next(json.loads(x) for x in (service_root / labelled / "labels.jsonl").read_text().splitlines()
               if json.loads(x)["path"] == "masks/obj_02.png")
    assert (rec["label"], rec["label_source"]) == ("red star", "review")
    bad = client.post(f"/jobs/{labelled}/reviews", files={"file": ("mine.json", b"{oops")})
    assert bad.status_code == 400 and "mine.json" in bad.json()["detail"]


def test_label_studio_ml_backend_protocol(client, labelled, service_root):
    assert client.get("/health").json()["status"] == "UP"
    version = client.post("/setup", json={"project": "1", "schema": "<View/>"}).json()["model_version"]
    assert version.startswith("cliplabel ")
    tasks = [{"id": 1, "data": {"image": f"/data/local-files/?d={labelled}/objects/obj_00.png"}},
             {"id": 2, "data": {"job_id": labelled, "item": "masks/obj_01.png", "image": "x"}},
             {"id": 3, "data": {"image": "/data/local-files/?d=../../etc/passwd"}}]
    r = client.post("/predict", json={"tasks": tasks, "label_config": "<View/>", "project": "1"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3 and results[2]["result"] == []
    labels = {json.loads(x)["path"]: json.loads(x) for x in (service_root / labelled / "labels.jsonl").read_text().splitlines()}
    assert results[0]["result"][0]["value"]["choices"] == [labels["objects/obj_00.png"]["label"]]
    assert [x["type"] for x in results[1]["result"]] == ["choices", "brushlabels"]
    image = client.get(f"/results/{labelled}/objects/obj_00.png")
    assert image.status_code == 200 and image.content == (service_root / labelled / "objects/obj_00.png").read_bytes()
    assert client.get(f"/results/{labelled}/labels.jsonl").status_code == 404


def test_one_task_s_bad_image_costs_that_task_its_prediction_never_the_batch(client, labelled, service_root):
    """A task naming a file that is no image, no input of the job, or over the upload limit (a sparse file, never
    read) gets an empty prediction; the others in the batch still get theirs, and /results refuses the large one
    without reading it."""
    from PIL import Image

    job = service_root / labelled
    Image.new("RGB", (40, 40), (200, 30, 30)).save(job / "objects" / "fresh.png")  # no label yet: classified now
    (job / "objects" / "not-an-image.png").write_bytes(b"plain text, not a picture")
    with (job / "objects" / "sparse.png").open("wb") as fh:
        fh.truncate(1_500_000_000)  # 1.5 GB of nothing on disk
    tasks = [{"data": {"job_id": labelled, "item": item}} for item in
             ("manifest.json", "objects/not-an-image.png", "objects/sparse.png", "objects/fresh.png",
              "objects/obj_00.png")]
    r = client.post("/predict", json={"tasks": tasks})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [bool(x["result"]) for x in results] == [False, False, False, True, True]
    big = client.get(f"/results/{labelled}/objects/sparse.png")
    assert big.status_code == 413 and "over" in big.json()["detail"]
    for name in ("fresh.png", "not-an-image.png", "sparse.png"):
        (job / "objects" / name).unlink()


# The keys of Label Studio's ML backend answers, in the order they have always been sent.
PREDICTION_KEYS = ["model_version", "score", "result"]
CHOICES_KEYS = ["id", "from_name", "to_name", "type", "value", "score"]
BRUSH_KEYS = ["id", "from_name", "to_name", "type", "original_width", "original_height", "image_rotation", "value",
              "score"]


def test_the_ml_backend_answers_are_response_models_in_label_studio_s_own_form(client, labelled):
    """Each answer is a declared model (in the OpenAPI schema), its body the bytes Label Studio was always sent:
    the same keys in the same order; and each prediction is valid for the job's labelling interface, as
    label-studio-sdk checks it."""
    from pydantic import TypeAdapter

    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    health, setup = client.get("/health"), client.post("/setup", json={"project": "1"})
    assert list(health.json()) == ["status", "model_class", "model_version"] and list(setup.json()) == ["model_version"]
    assert health.json()["model_class"] == "cliplabel" and setup.json()["model_version"] == health.json()["model_version"]
    tasks = [{"data": {"job_id": labelled, "item": item}} for item in
             ("objects/obj_00.png", "masks/obj_01.png", "labels.jsonl", "source.png")]
    r = client.post("/predict", json={"tasks": tasks})
    body = r.json()
    assert list(body) == ["results", "model_version"]
    assert r.content == TypeAdapter(dict).dump_json(body)  # as a plain dict was serialised before the models
    kinds = []
    for pred in body["results"]:
        assert list(pred) == PREDICTION_KEYS and pred["model_version"] == body["model_version"]
        for result in pred["result"]:
            assert list(result) == (BRUSH_KEYS if result["type"] == "brushlabels" else CHOICES_KEYS)
            assert list(result["value"]) == (["format", "rle", "brushlabels"] if result["type"] == "brushlabels"
                                             else ["choices"])
        kinds.append([x["type"] for x in pred["result"]])
    assert kinds == [["choices"], ["choices", "brushlabels"], [], ["choices"]]
    ls_zip = zipfile.ZipFile(io.BytesIO(client.get(f"/classify/export/{labelled}", params={"format": "labelstudio"}).content))
    interface = sdk.LabelInterface(ls_zip.read("label_config.xml").decode())
    for pred in body["results"]:
        if pred["result"]:
            assert interface.validate_prediction(pred, return_errors=True) == []
    schema = client.get("/openapi.json").json()
    answers = {path: schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
               for path, method in (("/health", "get"), ("/setup", "post"), ("/predict", "post"))}
    assert answers == {"/health": {"$ref": "#/components/schemas/MLBackendHealth"},
                       "/setup": {"$ref": "#/components/schemas/MLBackendSetup"},
                       "/predict": {"$ref": "#/components/schemas/MLBackendPredictions"}}
    prediction = schema["components"]["schemas"]["Prediction"]
    assert list(prediction["properties"]) == PREDICTION_KEYS
