"""Jobs over HTTP: label in the background, status, batch, cleanup and restore, exports, file listings."""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile

import pytest

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline_tests.service.conftest import wait_done


def test_a_job_is_accepted_with_a_status_url_and_ends_done_with_counts_and_files(client, new_job, service_root):
    job_id = new_job(n_objects=4)
    answer = client.post(f"/classify/job/{job_id}?top_k=2&export=csv,jsonl")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status_url"] == f"/classify/job/{job_id}" and answer.headers["location"] == body["status_url"]
    done = wait_done(client, job_id)
    assert done["state"] == "done", done
    records = read_jsonl(service_root / job_id / "labels.jsonl")
    assert done["counts"] == {"labelled": len(records), "low_confidence": sum(r["low_confidence"] for r in records),
                              "skipped": 0}
    assert len(records) == 9 and all(len(r["labels"]) == 2 for r in records)
    listed = {f["path"]: f["size"] for f in done["files"]}
    for name in ("labels.jsonl", "labels.csv", "groups.json", f"export/{job_id}.zip", f"export/{job_id}.csv",
                 f"export/{job_id}.jsonl", "report/report.md"):
        assert listed[name] == (service_root / job_id / name).stat().st_size


def test_a_job_already_running_is_not_labelled_twice(client, new_job, service_root):
    job_id = new_job(n_objects=6)
    objects = service_root / job_id / "objects"
    for i in range(150):  # enough items that the second request arrives while the first still runs
        shutil.copy(objects / f"obj_{i % 6:02d}.png", objects / f"copy_{i:03d}.png")
    first = client.post(f"/classify/job/{job_id}")
    second = client.post(f"/classify/job/{job_id}")
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json()["status_url"] == first.json()["status_url"]
    cleanup = client.post(f"/classify/cleanup/{job_id}")
    assert cleanup.status_code == 409 and "busy" in cleanup.json()["detail"]
    assert wait_done(client, job_id)["counts"]["labelled"] == 163


@pytest.mark.parametrize("job_id, status", [("no-such-job", 404), ("bad%5Cid", 400), ("x" * 300, 400),
                                            ("%E2%80%AEevil", 400)])
def test_bad_or_unknown_job_ids_are_refused_on_every_job_endpoint(client, service_root, job_id, status):
    for method, path in (("POST", "/classify/job/{}"), ("GET", "/classify/job/{}"), ("POST", "/classify/cleanup/{}"),
                         ("POST", "/classify/restore/{}"), ("GET", "/classify/export/{}"), ("GET", "/jobs/{}/files")):
        answer = client.request(method, path.format(job_id))
        assert answer.status_code == status, (method, path, answer.text)
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
        assert str(service_root) not in detail  # the server's own paths are not the client's business


def test_a_status_of_a_job_never_submitted_comes_from_its_folder(client, new_job):
    job_id = new_job()
    assert client.get(f"/classify/job/{job_id}").json()["state"] == "unlabelled"


def test_a_batch_of_job_ids_gets_one_status_url_each_and_errors_per_job(client, new_job):
    ids = [new_job(n_objects=2, seed=s) for s in (1, 2)]
    answer = client.post("/classify/batch", json={"job_ids": [*ids, "missing-job", "../etc"]})
    assert answer.status_code == 202
    jobs = {j["job_id"]: j for j in answer.json()["jobs"]}
    assert all(jobs[i]["status_url"] == f"/classify/job/{i}" for i in ids)
    assert jobs["missing-job"]["status"] == 404 and jobs["../etc"]["status"] == 400
    assert all(wait_done(client, i)["state"] == "done" for i in ids)


def test_a_batch_body_that_is_not_job_ids_says_what_to_send(client):
    answer = client.post("/classify/batch", json={"jobs": "a"})
    assert answer.status_code == 422 and "job_ids" in answer.json()["detail"]
    assert client.post("/classify/batch", content=b"{", headers={"content-type": "application/json"}).status_code == 400


def _labelled(client, new_job, **kw) -> str:
    job_id = new_job(**kw)
    client.post(f"/classify/job/{job_id}")
    assert wait_done(client, job_id)["state"] == "done"
    return job_id


def test_cleanup_is_a_dry_run_until_applied_and_restore_puts_everything_back(client, new_job, service_root):
    job_id = _labelled(client, new_job, n_objects=4)
    job = service_root / job_id
    before = (job / "labels.jsonl").read_bytes()
    dry = client.post(f"/classify/cleanup/{job_id}?min_confidence=1.0").json()
    assert dry["dry_run"] is True and dry["count"] == 8  # every mask and cut-out; never source.png
    assert (job / "labels.jsonl").read_bytes() == before
    applied = client.post(f"/classify/cleanup/{job_id}?min_confidence=1.0&apply=true").json()
    assert applied["action"] == "quarantined" and applied["count"] == 8
    assert not (job / "objects" / "obj_00.png").exists()
    assert [r["path"] for r in read_jsonl(job / "labels.jsonl")] == ["source.png"]
    restored = client.post(f"/classify/restore/{job_id}").json()
    assert restored["restored"] == 8 and restored["outputs"] == "rebuilt"
    assert (job / "labels.jsonl").read_bytes() == before


def test_purge_without_apply_is_refused(client, new_job):
    job_id = _labelled(client, new_job, n_objects=1)
    answer = client.post(f"/classify/cleanup/{job_id}?purge=true")
    assert answer.status_code == 422 and "apply" in answer.json()["detail"]


def test_exports_stream_with_a_file_name_and_hold_the_labels(client, new_job, service_root):
    job_id = _labelled(client, new_job, n_objects=3)
    job = service_root / job_id
    zipped = client.get(f"/classify/export/{job_id}?format=zip")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    assert zipped.headers["content-disposition"].startswith(f'attachment; filename="{job_id}.zip"')
    names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
    assert "labels.jsonl" in names and len([n for n in names if n.endswith(".png")]) == 7
    table = client.get(f"/classify/export/{job_id}?format=csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == 7 and table.headers["content-disposition"].startswith(f'attachment; filename="{job_id}.csv"')
    lines = client.get(f"/classify/export/{job_id}?format=jsonl").content
    assert lines == (job / "labels.jsonl").read_bytes()


def test_an_export_of_an_unlabelled_job_says_to_label_it_first(client, new_job):
    job_id = new_job()
    answer = client.get(f"/classify/export/{job_id}?format=csv")
    assert answer.status_code == 409 and f"POST /classify/job/{job_id}" in answer.json()["detail"]
    assert client.get(f"/classify/export/{job_id}?format=pdf").status_code == 422


def test_a_link_planted_in_a_job_leaks_nothing_into_its_export_or_listing(client, new_job, service_root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret bytes")
    job_id = _labelled(client, new_job, n_objects=2)
    item = service_root / job_id / "objects" / "obj_00.png"
    item.unlink()
    os.symlink(secret, item)
    listing = client.get(f"/jobs/{job_id}/files").json()["files"]
    assert "objects/obj_00.png" not in {f["path"] for f in listing}
    body = client.get(f"/classify/export/{job_id}?format=zip").content
    assert b"top secret bytes" not in body
    assert secret.read_bytes() == b"top secret bytes"


@pytest.mark.parametrize("body, status", [
    (b'{"job_ids": ["a"], "top_k": Infinity}', 422), (b'{"job_ids": ["a"], "top_k": 2.5}', 422),
    (b'{"job_ids": ["a"], "top_k": true}', 422), (b'{"job_ids": ["a"], "export": ["csv"]}', 422),
    (b"[" * 100_000 + b"]" * 100_000, 400)])
def test_odd_json_in_a_batch_is_a_one_line_4xx_never_a_500(client, body, status):
    answer = client.post("/classify/batch", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert "\n" not in answer.json()["detail"]


def test_status_urls_never_echo_the_host_header(client, new_job, monkeypatch):
    """A client's Host header is its own choice: a status URL or Location built on it points anywhere."""
    job_id = new_job()
    answer = client.post(f"/classify/job/{job_id}", headers={"Host": "evil.example"})
    assert answer.status_code == 202
    assert "evil" not in answer.headers["location"] and "evil" not in answer.json()["status_url"]
    assert answer.headers["location"] == f"/classify/job/{job_id}"
    status = client.get(f"/classify/job/{job_id}", headers={"Host": "evil.example"}).json()
    assert status["status_url"] == f"/classify/job/{job_id}"


def test_status_urls_are_built_on_the_configured_public_url(server, client, new_job):
    state = server.app.state.service
    kept = state.settings
    state.settings = kept.with_(public_url="https://labels.example.org/")
    try:
        job_id = new_job()
        answer = client.post(f"/classify/job/{job_id}", headers={"Host": "evil.example"})
        assert answer.headers["location"] == f"https://labels.example.org/classify/job/{job_id}"
    finally:
        state.settings = kept


def test_a_batch_that_accepts_no_job_answers_an_error_status(client):
    answer = client.post("/classify/batch", json={"job_ids": ["no-such-job", "nor-this-one"]})
    assert answer.status_code == 404
    body = answer.json()
    assert "no job of the batch was accepted" in body["detail"] and [j["status"] for j in body["jobs"]] == [404, 404]
