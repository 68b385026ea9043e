"""How asset values travel: each stage writes its own artefacts into the job folder, and the next stage's
input is read back from them as a typed value. The concept index travels through its on-disk cache."""

import dagster as dg

from cliplabel_pipeline.core import pipeline
from cliplabel_pipeline.defs.resources import ClipModelResource, ResultsRootResource

# upstream asset -> how its value is rebuilt from the job folder
JOB_VALUE_LOADERS = {
    "job_reviews": lambda job: job.read_reviews(),
    "job_image_embeddings": lambda job: job.read_embedded(),
    "job_label_assignments": pipeline.load_labelled,
    "job_groups": pipeline.load_grouped,
    "job_exports": pipeline.load_exported,
}


class JobFolderIOManager(dg.ConfigurableIOManager):
    """Per-job values: written by the stages themselves (atomically), read back through the ``JobFolder``."""

    results_root: dg.ResourceDependency[ResultsRootResource]

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        pass  # the stage has already written its artefacts

    def load_input(self, context: dg.InputContext):
        job = self.results_root.job(context.asset_partition_key)
        return JOB_VALUE_LOADERS[context.upstream_output.asset_key.path[-1]](job)


class ConceptIndexIOManager(dg.ConfigurableIOManager):
    """The concept index: its cache file is its value (loaded without the image tower)."""

    clip: dg.ResourceDependency[ClipModelResource]

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        pass  # the index is cached on disk when it is built

    def load_input(self, context: dg.InputContext):
        return self.clip.concept_index()
