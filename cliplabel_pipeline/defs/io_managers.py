"""How asset values travel between steps (and runs, and hosts): through the job folder, by the value's type.

A stage writes its own artefacts through the ``JobFolder`` (atomically, under the job's lock; the labels inside
their DuckDB transaction), so storing a value means checking that its artefact is there, and saying where;
loading rebuilds the value from that artefact with the core's reader for its type. No asset name is looked at:
a new asset of a known type needs nothing here, and one of an unknown type fails when it is stored, not when a
child first reads it. The concept index travels through its on-disk cache the same way.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args, get_origin

import dagster as dg

from cliplabel_pipeline.core import pipeline
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.filtered import FilteredSets
from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.values import Embedded, Review
from cliplabel_pipeline.defs.resources import ClipModelResource, ResultsRootResource


@dataclass(frozen=True)
class JobValue:
    """Where a per-job value lies (None: nowhere yet, as reviews before the first one) and how it is read back."""

    artefact: Callable[[JobFolder], Path | None]
    load: Callable[[JobFolder], object]


JOB_VALUES: dict[object, JobValue] = {
    list[Review]: JobValue(lambda job: job.reviews_jsonl if job.is_file(job.reviews_jsonl) else None,
                           lambda job: job.read_reviews()),
    Embedded: JobValue(lambda job: job.embeddings_npy, lambda job: job.read_embedded()),
    pipeline.Labelled: JobValue(lambda job: job.labels_jsonl, pipeline.load_labelled),
    FilteredSets: JobValue(lambda job: job.labels_jsonl, pipeline.load_filtered),  # the split of the labels
    pipeline.Grouped: JobValue(lambda job: job.groups_json, pipeline.load_grouped),
    pipeline.Exported: JobValue(lambda job: job.manifest_json, pipeline.load_exported),
}


def job_value(kind: object) -> JobValue:
    """The entry for ``kind``: a value's class, or the type an input is annotated with."""
    for known, entry in JOB_VALUES.items():
        same_generic = get_origin(kind) is not None and (get_origin(kind), get_args(kind)) == (get_origin(known),
                                                                                               get_args(known))
        if kind == known or same_generic or kind is get_origin(known):  # list[X] as typing.List[X], or a value's class
            return entry
    raise dg.DagsterInvariantViolationError(f"no job-folder artefact holds a value of type {kind!r}")


class JobFolderIOManager(dg.IOManager):
    """Per-job values: stored by the stages in the job folder, checked and located here, read back by type."""

    def __init__(self, results_root: ResultsRootResource):
        self.results_root = results_root

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        job = self.results_root.job(context.asset_partition_key)
        path = job_value(type(obj)).artefact(job)
        if path is not None and not job.is_file(path):
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} of job {job.id}: {job.rel(path)} was not written")
        context.add_output_metadata({"stored_in": dg.MetadataValue.path(str(path)) if path else "nothing yet"})

    def load_input(self, context: dg.InputContext):
        job = self.results_root.job(context.asset_partition_key)
        return job_value(context.dagster_type.typing_type).load(job)


class ConceptIndexIOManager(dg.IOManager):
    """The concept index: its cache file is its value (loaded without the image tower). Building the index
    writes the cache; where the cache cannot hold it (a read-only cache folder), the child that reads the index
    builds it again, and the output says so."""

    def __init__(self, clip: ClipModelResource):
        self.clip = clip

    def handle_output(self, context: dg.OutputContext, obj: ConceptIndex) -> None:
        cached = self.clip.cached_index() is not None
        context.add_output_metadata({"stored_in": "the text-embedding cache" if cached
                                     else "nowhere: the cache could not hold it (rebuilt where it is read)"})

    def load_input(self, context: dg.InputContext) -> ConceptIndex:
        return self.clip.concept_index()


# Each takes the resource it reads by its key, as set up for the run (the same object the assets get).
@dg.io_manager(required_resource_keys={"results_root"})
def job_folder_io_manager(context: dg.InitResourceContext) -> JobFolderIOManager:
    return JobFolderIOManager(context.resources.results_root)


@dg.io_manager(required_resource_keys={"clip"})
def concept_index_io_manager(context: dg.InitResourceContext) -> ConceptIndexIOManager:
    return ConceptIndexIOManager(context.resources.clip)
