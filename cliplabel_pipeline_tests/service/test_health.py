"""Readiness answers its models: 503 with ``status`` and ``detail`` while the model loads or after it failed,
and the OpenAPI schema says so."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.service.app import create_app


def test_readiness_says_loading_then_failed_in_its_503_model(tmp_path):
    app = create_app(Settings(results_root=tmp_path, model=str(tmp_path / "no-model")))
    client = TestClient(app)  # no lifespan: the model never starts loading
    answer = client.get("/readyz")
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "5")
    assert answer.json() == {"status": "loading", "detail": "the model and the concept bank are still loading"}
    app.state.service.error = "no model at /x: run `cliplabel model pull`"
    answer = client.get("/readyz")
    assert answer.status_code == 503 and "retry-after" not in answer.headers
    assert answer.json() == {"status": "failed", "detail": "no model at /x: run `cliplabel model pull`"}


def test_the_schema_names_readiness_and_its_counts(tmp_path):
    schema = TestClient(create_app(Settings(results_root=tmp_path))).get("/openapi.json").json()
    answers = schema["paths"]["/readyz"]["get"]["responses"]
    assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")
    assert answers["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/NotReady")
    counts = schema["components"]["schemas"]["LabelledCounts"]["properties"]
    assert list(counts) == ["items", "kept", "flagged", "flagged_by", "flagged_by_several"]
