"""The resources: the model held by the resource's lifecycle and kept per process, settings bound to EnvVar."""

from __future__ import annotations

import dagster as dg

from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.defs import resources
from cliplabel_pipeline.defs.resources import ClipModelResource, ResultsRootResource, bound_to_env


def test_a_process_loads_the_model_once_however_many_steps_set_the_resource_up(toy_model, text_cache, monkeypatch):
    """A Celery worker sets the resource up for every step it runs, in one process: the model is loaded by the
    first step that needs it and taken by the next ones; other settings load their own (in its place)."""
    monkeypatch.setattr(resources, "PROCESS_MODEL", resources._ProcessModel())
    loads = []
    real = Labeller.load
    monkeypatch.setattr(Labeller, "load", classmethod(lambda cls, s, progress=None: loads.append(s) or real(s)))
    clip = ClipModelResource(model=toy_model, device="cpu", precision="fp32", cache_dir=str(text_cache))
    seen = []
    for _ in range(3):  # three steps
        with dg.build_resources({"clip": clip}) as built:
            seen.append(built.clip.labeller())
    assert len(loads) == 1 and seen[0] is seen[1] is seen[2]
    with dg.build_resources({"clip": ClipModelResource(model=toy_model, device="cpu", precision="fp16",
                                                       cache_dir=str(text_cache))}) as built:
        built.clip.labeller()
    assert [s.precision for s in loads] == ["fp32", "fp16"]


def test_a_step_that_scores_stored_embeddings_never_loads_the_model(toy_model, text_cache, labeller, monkeypatch):
    """The concept index comes from its cache: setting the resource up and reading the index load nothing."""
    monkeypatch.setattr(resources, "PROCESS_MODEL", resources._ProcessModel())
    monkeypatch.setattr(Labeller, "load", classmethod(lambda cls, s, progress=None: (_ for _ in ()).throw(
        AssertionError("the model was loaded"))))
    clip = ClipModelResource(model=toy_model, device="cpu", precision="fp32", cache_dir=str(text_cache))
    with dg.build_resources({"clip": clip}) as built:
        assert built.clip.concept_index().names == labeller.index.names


def test_a_variable_not_set_is_bound_and_reads_as_the_default(monkeypatch, tmp_path):
    """Bound to its EnvVar whether set or not (the UI shows the variable); unset, the resource takes the default."""
    monkeypatch.delenv("CLIPLABEL_DEVICE", raising=False)
    monkeypatch.setenv("CLIPLABEL_RESULTS_ROOT", str(tmp_path))
    clip = ClipModelResource(device=bound_to_env("device"))
    root = ResultsRootResource(path=bound_to_env("results_root"))
    assert clip.device == dg.EnvVar("CLIPLABEL_DEVICE") and root.path == dg.EnvVar("CLIPLABEL_RESULTS_ROOT")
    with dg.build_resources({"clip": clip, "root": root}) as built:
        assert built.clip.settings.device == "auto"
        assert built.root.root == tmp_path
