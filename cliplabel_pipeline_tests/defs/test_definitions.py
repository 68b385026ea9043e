"""The code location loads and holds what the UI should show."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

from cliplabel_pipeline.definitions import defs

JOB_ASSETS = ["job_image_embeddings", "job_label_assignments", "job_confidence_filtered_sets", "job_groups",
              "job_exports", "job_metrics_report"]


def test_definitions_load_with_every_asset_sensor_and_schedule():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {"concept_text_embeddings", "job_reviews", *JOB_ASSETS}
    assert repo.has_sensor_def("new_jobs_sensor") and repo.has_schedule_def("label_backfill_schedule")
    assert repo.get_sensor_def("job_reviews_sensor").job_name == "apply_reviews_job"
    assert repo.get_schedule_def("label_backfill_schedule").cron_schedule == "0 3 * * *"


def test_job_assets_are_partitioned_by_jobs_and_chained_in_order():
    graph = defs.get_repository_def().asset_graph
    for upstream, downstream in zip(JOB_ASSETS, JOB_ASSETS[1:]):
        node = graph.get(dg.AssetKey(downstream))
        assert dg.AssetKey(upstream) in node.parent_keys
        assert node.partitions_def.name == "jobs"
    assert dg.AssetKey("concept_text_embeddings") in graph.get(dg.AssetKey("job_label_assignments")).parent_keys
    assert dg.AssetKey("job_reviews") in graph.get(dg.AssetKey("job_label_assignments")).parent_keys


def test_every_edge_is_an_input_the_asset_reads():
    """The asset graph is the data graph: each parent's value is an argument of its child."""
    import inspect

    from cliplabel_pipeline.defs.assets import embeddings, filtered, labels, reports

    functions = {**vars(embeddings), **vars(labels), **vars(filtered), **vars(reports)}
    graph = defs.get_repository_def().asset_graph
    for key in ["job_label_assignments", "job_confidence_filtered_sets", "job_groups", "job_exports",
                "job_metrics_report"]:
        params = set(inspect.signature(functions[key].op.compute_fn.decorated_fn).parameters)
        assert {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys} <= params, key


def test_the_labelling_job_materialises_the_concept_index_it_reads():
    job = defs.resolve_job_def("label_jobs_job")
    assert dg.AssetKey("concept_text_embeddings") in job.asset_layer.selected_asset_keys


def test_new_reviews_rebuild_what_depends_on_them_and_never_encode_an_image():
    selected = {k.to_user_string() for k in defs.resolve_job_def("apply_reviews_job").asset_layer.selected_asset_keys}
    assert selected == {"job_reviews", "job_label_assignments", "job_confidence_filtered_sets", "job_groups",
                        "job_exports", "job_metrics_report"}


def test_the_design_cards_seven_assets_and_the_edges_between_them():
    """Concept-bank text embeddings, per-job image embeddings, label assignments, confidence-filtered sets, KMeans
    groups, exports, metrics reports: grouping reads the filtered sets, and the filtered sets read the labels."""
    graph = defs.get_repository_def().asset_graph
    card = ["concept_text_embeddings", "job_image_embeddings", "job_label_assignments", "job_confidence_filtered_sets",
            "job_groups", "job_exports", "job_metrics_report"]
    assert {dg.AssetKey(k) for k in card} <= graph.get_all_asset_keys()
    parents = {k: {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys} for k in card}
    assert parents["job_confidence_filtered_sets"] == {"job_label_assignments"}
    assert parents["job_groups"] == {"job_label_assignments", "job_confidence_filtered_sets", "concept_text_embeddings"}


def test_checks_are_declared_by_the_asset_that_has_the_data_with_their_names_and_blocking():
    graph = defs.get_repository_def().asset_graph
    checks = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k).blocking
              for k in graph.asset_check_keys}
    assert checks == {("job_image_embeddings", "embeddings_are_finite"): True,
                      ("job_image_embeddings", "embeddings_are_unit_norm"): True,
                      ("job_image_embeddings", "embeddings_have_model_dimension"): True,
                      ("job_label_assignments", "labels_match_record_schema"): False,
                      ("job_label_assignments", "labels_cover_every_readable_item"): False,
                      ("job_label_assignments", "confidences_within_unit_interval"): False}


def test_paths_and_model_ids_are_bound_to_their_environment_variables():
    """The UI shows where each comes from: every one an ``EnvVar``, whether or not the variable is set."""
    resources = defs.resources
    assert resources["clip"].model == dg.EnvVar("CLIPLABEL_MODEL")
    assert resources["clip"].cache_dir == dg.EnvVar("CLIPLABEL_CACHE")
    assert resources["results_root"].path == dg.EnvVar("CLIPLABEL_RESULTS_ROOT")
    assert resources["duckdb"].path == dg.EnvVar("CLIPLABEL_DB")


def dg_check_defs(tmp_path, **variables):
    """``dg check defs`` run as a user runs it, in the project's folder with its virtual environment active."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    venv = Path(sys.executable).parent.parent
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "DAGSTER_HOME": str(tmp_path), "PYTHONWARNINGS": "default", **variables}
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([str(venv / "bin" / "dg"), "check", "defs"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)


def test_dg_check_defs_passes_with_no_warning(tmp_path):
    """The project is a ``dg`` project: ``dg check defs`` loads its definitions, and says nothing else."""
    done = dg_check_defs(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully." in done.stdout
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr


def test_dg_check_defs_with_a_bad_variable_says_its_one_line_and_no_traceback(tmp_path):
    """The words the CLI and the service give for the variable, where Dagster reports the failed load: no stack
    trace, no exception class, in the form ``dg dev`` and the UI show as well. A misspelled one is a warning."""
    import re

    done = dg_check_defs(tmp_path, CLIPLABEL_TOP_K="0", CLIPLABEL_SETTLE="5")
    said = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # Dagster's log colours
    assert done.returncode == 1, said
    assert "Validation failed for code location cliplabel:\n\nCLIPLABEL_TOP_K must be between 1 and 100, got 0\n" in said
    assert "cliplabel: warning: CLIPLABEL_SETTLE is ignored: it is not a cliplabel variable; did you mean " \
           "CLIPLABEL_SETTLE_S?" in said
    for trace in ("Traceback", "Stack Trace", 'File "', "BadValue", "Error:"):
        assert trace not in said, said


def test_the_code_location_has_one_name_wherever_it_is_served():
    """A backfill launched from the workspace (the daemon's) or by the service must be found by `dg dev`'s daemon."""
    import yaml

    from cliplabel_pipeline.dagster_names import LOCATION
    from cliplabel_pipeline.service.dagster_runs import _workspace_file

    repo = Path(__file__).resolve().parents[2]
    [dg_name] = re.findall(r'^code_location_name = "(.*)"$', (repo / "pyproject.toml").read_text(), re.M)
    [workspace] = yaml.safe_load((repo / "workspace.yaml").read_text())["load_from"]
    [service] = yaml.safe_load(_workspace_file().read_text())["load_from"]
    [helm] = [d for d in yaml.safe_load_all((repo / "deploy" / "kubernetes" / "values.yaml").read_text())
              if d and "dagster-user-deployments" in d]
    [deployment] = helm["dagster-user-deployments"]["deployments"]
    assert dg_name == LOCATION == workspace["python_module"]["location_name"] == \
        service["python_module"]["location_name"] == deployment["name"] == "cliplabel"
