"""Dagster fixtures: an ephemeral instance, resources bound to a temp results root and DuckDB file."""

from __future__ import annotations

import dagster as dg
import pytest

from cliplabel_pipeline.resources import ClipModelResource, DuckDBResource, ResultsRootResource


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "lineage.duckdb"


@pytest.fixture
def resources(toy_model, results_root, db_path, text_cache):
    return {
        "clip": ClipModelResource(model=toy_model, device="cpu", precision="fp32", cache_dir=str(text_cache)),
        "results_root": ResultsRootResource(path=str(results_root), settle_seconds=0),
        "duckdb": DuckDBResource(path=str(db_path)),
    }


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
