"""The Dagster definitions' names are spelled once, in ``cliplabel_pipeline/dagster_names.py``: no other module of
the package spells one as a string, and the definitions are named as that module says."""

from __future__ import annotations

import ast
from pathlib import Path

from cliplabel_pipeline import dagster_names as names
from cliplabel_pipeline.defs.checks import EMBEDDING_CHECKS, LABEL_CHECKS

PACKAGE = Path(names.__file__).resolve().parent
SPELLED_ONCE = {*names.ASSETS, *names.JOBS, *names.SENSORS, *names.SCHEDULES, *EMBEDDING_CHECKS, *LABEL_CHECKS}


def string_literals(tree: ast.AST):
    """Every string constant of a module but its docstrings (prose may name an asset: it is no reference)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_the_names_module_holds_every_name_and_finds_them_when_spelled():
    """The search finds what it looks for: the names module itself spells each asset, job, sensor and schedule."""
    source = Path(names.__file__).read_text(encoding="utf-8")
    spelled = {n.value for n in string_literals(ast.parse(source))}
    assert SPELLED_ONCE - {*EMBEDDING_CHECKS, *LABEL_CHECKS} <= spelled
    assert len(names.ASSETS) == len(set(names.ASSETS)) == 9


def test_no_other_module_of_the_package_spells_a_definition_s_name_as_a_string():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(names.__file__).resolve():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}"
                  for node in string_literals(tree) if node.value.strip() in SPELLED_ONCE]
    assert found == []


def test_the_definitions_are_named_as_the_names_module_says():
    from cliplabel_pipeline.definitions import defs
    from cliplabel_pipeline.defs.assets.lineage import job_lineage_rows  # in the definitions on a cluster only
    from cliplabel_pipeline.defs.partitions import jobs_partitions

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} | {job_lineage_rows.key.to_user_string()}
    assert keys == set(names.ASSETS)
    assert {job.name for job in defs.jobs} == set(names.JOBS)
    assert {s.name for s in repo.sensor_defs} == set(names.SENSORS)
    assert {s.name for s in repo.schedule_defs} == set(names.SCHEDULES)
    assert jobs_partitions.name == names.JOBS_PARTITIONS
    checks = {(c.asset_key.to_user_string(), c.name) for c in repo.asset_graph.asset_check_keys}
    assert checks == {(names.JOB_IMAGE_EMBEDDINGS, c) for c in EMBEDDING_CHECKS} | {
        (names.JOB_LABEL_ASSIGNMENTS, c) for c in LABEL_CHECKS}
