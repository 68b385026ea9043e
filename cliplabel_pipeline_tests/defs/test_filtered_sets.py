"""The confidence-filtered sets asset, what reads it, and the IO managers that carry values between steps."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.filtered import FilteredSets, split_by_confidence
from cliplabel_pipeline.core.pipeline import Exported, Grouped, Labelled
from cliplabel_pipeline.core.values import Embedded, Review
from cliplabel_pipeline.defs.assets.embeddings import job_image_embeddings
from cliplabel_pipeline.defs.assets.filtered import flagged_table, job_confidence_filtered_sets
from cliplabel_pipeline.defs.assets.labels import job_label_assignments
from cliplabel_pipeline.defs.assets.reports import job_exports, job_groups
from cliplabel_pipeline.defs.assets.reviews import job_reviews
from cliplabel_pipeline.defs.io_managers import JobFolderIOManager, job_value
from cliplabel_pipeline_tests.defs.test_assets import materialize_job

STRICT = {"ops": {job_label_assignments.node_def.name: {"config": {"min_confidence": 0.9999999}}}}


def _metadata(result, asset) -> dict:
    return next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key == asset.key)


def test_the_filtered_sets_hold_the_kept_and_the_flagged_with_their_rules_in_metadata(toy_job, resources, instance):
    root, job_id = toy_job
    result = materialize_job(job_id, resources, instance, run_config=STRICT)
    assert result.success
    records = JobFolder.open(root, job_id).read_labels()
    flagged = [r for r in records if r.low_confidence]
    meta = _metadata(result, job_confidence_filtered_sets)
    assert meta["flagged"].value == len(flagged) > 0 and meta["kept"].value == len(records) - len(flagged)
    assert meta["flagged_by_confidence"].value == sum("confidence" in r.flagged_by for r in records)
    assert meta["flagged_by_match"].value == sum("match" in r.flagged_by for r in records) >= 1  # the source
    assert meta["min_confidence"].value == 0.9999999
    table = meta["flagged_items"].value
    assert table.startswith("| item | top-1 | confidence | match | flagged by |")
    assert all(f"| `{r.path}` | {r.top1} |" in table for r in flagged)
    assert "| `source.png` |" in table and "match" in table.split("| `source.png` |")[1].split("\n")[0]


def test_groups_cluster_exactly_the_flagged_items_of_the_filtered_sets(toy_job, resources, instance):
    root, job_id = toy_job
    assert materialize_job(job_id, resources, instance, run_config=STRICT).success
    job = JobFolder.open(root, job_id)
    sets = split_by_confidence(job.read_labels())
    groups = json.loads(job.groups_json.read_text())
    assert sorted(i for c in groups["clusters"] for i in c["items"]) == sorted(f.path for f in sets.flagged)
    assert sorted(i for g in groups["groups"] for i in g["items"]) == sorted(r.path for r in sets.kept)


def test_job_groups_takes_the_split_from_its_filtered_sets_input(toy_job, resources, instance):
    """Given filtered sets that flag every item, grouping clusters every item: it does not split the labels again."""
    root, job_id = toy_job
    assert materialize_job(job_id, resources, instance).success
    job = JobFolder.open(root, job_id)
    labelled = job_value(Labelled).load(job)
    everything = split_by_confidence(labelled.records, min_confidence=1.01)
    from cliplabel_pipeline.core.labelling.index import cached_concept_index

    clip = resources["clip"]
    index = cached_concept_index(clip.settings.cache_dir, clip.settings.model, "fp32", clip.bank_spec)
    with dg.build_asset_context(partition_key=job_id, resources={"clip": clip}, instance=instance) as context:
        grouped = job_groups(context, job_label_assignments=labelled, job_confidence_filtered_sets=everything,
                             concept_text_embeddings=index).value
    assert grouped.groups.groups == []
    assert sorted(i for c in grouped.groups.clusters for i in c.items) == sorted(r.path for r in labelled.records)


def test_a_failing_blocking_check_stops_the_labels(toy_job, resources, instance, monkeypatch):
    """A check on the embeddings that fails (here: a model width the embeddings do not have) is blocking: the
    labels, filtered sets and everything after are not made."""
    from cliplabel_pipeline.defs import checks

    _, job_id = toy_job
    real = checks.EMBEDDING_CHECKS["embeddings_have_model_dimension"]
    monkeypatch.setitem(checks.EMBEDDING_CHECKS, "embeddings_have_model_dimension",
                        lambda job, embedded, width: real(job, embedded, width + 1))
    instance.add_dynamic_partitions("jobs", [job_id])
    from cliplabel_pipeline_tests.defs.test_assets import ASSETS, JOB_SELECTION

    result = dg.materialize(ASSETS, partition_key=job_id, resources=resources, instance=instance,
                            selection=JOB_SELECTION, raise_on_error=False)
    assert not result.success
    made = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "job_image_embeddings" in made and "job_label_assignments" not in made
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == ["embeddings_have_model_dimension"]
    assert failed[0].metadata["job"].value == job_id


def test_the_io_manager_stores_and_loads_each_value_by_its_type(toy_job, resources, instance):
    """The round trip: each value a stage returned in the run, stored by ``handle_output``, is read back by
    ``load_input`` from its input's type as the same value."""
    root, job_id = toy_job
    result = materialize_job(job_id, resources, instance)
    assert result.success
    io = JobFolderIOManager(resources["results_root"])
    for asset, kind in ((job_reviews, list[Review]), (job_image_embeddings, Embedded), (job_label_assignments, Labelled),
                        (job_confidence_filtered_sets, FilteredSets), (job_groups, Grouped), (job_exports, Exported)):
        returned = result.output_for_node(asset.node_def.name)
        out = dg.build_output_context(asset_key=asset.key, partition_key=job_id)
        io.handle_output(out, returned)
        loaded = io.load_input(dg.build_input_context(asset_key=asset.key, partition_key=job_id,
                                                      dagster_type=_typed(kind)))
        assert type(loaded) is type(returned), kind
        assert _facts(loaded) == _facts(returned), kind


def _typed(kind):
    return dg.DagsterType(type_check_fn=lambda _c, _v: True, name="t", typing_type=kind)


def _facts(value):
    """What a child reads of a value, comparable (the embeddings as bytes)."""
    if isinstance(value, Embedded):
        return [i.path for i in value.items], value.embeddings.tobytes()
    if isinstance(value, Labelled):
        return value.records, value.provenance, _facts(value.embedded)
    if isinstance(value, Grouped):
        return _facts(value.labelled), value.groups
    if isinstance(value, Exported):
        return _facts(value.grouped), value.files
    return value


def test_the_io_manager_refuses_a_value_whose_artefact_was_not_written(results_root, resources):
    (results_root / "empty").mkdir()
    out = dg.build_output_context(asset_key="job_confidence_filtered_sets", partition_key="empty")
    with pytest.raises(dg.DagsterInvariantViolationError, match="labels.jsonl was not written"):
        JobFolderIOManager(resources["results_root"]).handle_output(out, FilteredSets((), ()))


def test_flagged_table_escapes_what_would_break_the_table():
    from cliplabel_pipeline.core.values import LabelRecord

    rec = LabelRecord(path="objects/a|b.png", kind="object", labels=[], top1="x|y", confidence=0.1, cosine=0.1,
                      margin=0.0, low_confidence=True, match=0.2, flagged_by=["confidence", "match"])
    table = flagged_table(split_by_confidence([rec]))
    assert "| `objects/a\\|b.png` | x\\|y | 0.100 | 0.200 | confidence, match |" in table
