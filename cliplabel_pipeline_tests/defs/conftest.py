"""Dagster fixtures: an ephemeral instance, resources bound to a temp results root and DuckDB file."""

from __future__ import annotations

import dagster as dg
import pytest

from cliplabel_pipeline_tests.defs.bindings import bound_resources


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "lineage.duckdb"


@pytest.fixture
def resources(toy_model, results_root, db_path, text_cache):
    return bound_resources(toy_model, str(results_root), str(db_path), str(text_cache))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst
