"""The bearer token: with CLIPLABEL_API_TOKEN set, everything but the health checks needs it."""

from __future__ import annotations

import pytest

from cliplabel_pipeline_tests.service.conftest import RunningServer, service_settings

ENDPOINTS = [("POST", "/classify/image"), ("POST", "/classify/job/j"), ("GET", "/classify/job/j"),
             ("POST", "/classify/batch"), ("POST", "/classify/cleanup/j"), ("POST", "/classify/restore/j"),
             ("GET", "/classify/export/j"), ("GET", "/jobs/j/files")]


@pytest.fixture(scope="module")
def guarded(service_root, toy_model, text_cache):
    with RunningServer(service_settings(service_root, toy_model, text_cache, api_token="s3cret")) as running:
        yield running


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_every_endpoint_but_health_needs_the_token(guarded, method, path):
    with guarded.client() as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            answer = c.request(method, path, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert "bearer token" in answer.json()["detail"]
        answer = c.request(method, path, headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code != 401


def test_health_checks_answer_without_the_token(guarded):
    with guarded.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200


def test_an_upload_without_the_token_is_refused_before_its_body_is_read(guarded):
    with guarded.client() as c:
        answer = c.post("/classify/image", content=b"--broken multipart", headers={
            "content-type": "multipart/form-data; boundary=nothing"})
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
