"""The code location loads and holds what the UI should show."""

from __future__ import annotations

import dagster as dg

from cliplabel_pipeline.definitions import defs

JOB_ASSETS = ["job_image_embeddings", "job_label_assignments", "job_groups", "job_exports", "job_metrics_report"]


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

    from cliplabel_pipeline.defs.assets import embeddings, labels, reports

    functions = {**vars(embeddings), **vars(labels), **vars(reports)}
    graph = defs.get_repository_def().asset_graph
    for key in ["job_label_assignments", "job_groups", "job_exports", "job_metrics_report"]:
        params = set(inspect.signature(functions[key].op.compute_fn.decorated_fn).parameters)
        assert {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys} <= params, key


def test_the_labelling_job_materialises_the_concept_index_it_reads():
    job = defs.resolve_job_def("label_jobs_job")
    assert dg.AssetKey("concept_text_embeddings") in job.asset_layer.selected_asset_keys


def test_new_reviews_rebuild_what_depends_on_them_and_never_encode_an_image():
    selected = {k.to_user_string() for k in defs.resolve_job_def("apply_reviews_job").asset_layer.selected_asset_keys}
    assert selected == {"job_reviews", "job_label_assignments", "job_groups", "job_exports", "job_metrics_report"}
