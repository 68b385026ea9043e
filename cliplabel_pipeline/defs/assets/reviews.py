"""What people decided about a job's items: ``reviews.jsonl``, as ``cliplabel review`` or the HTTP service wrote it."""

from collections import Counter

import dagster as dg

from cliplabel_pipeline.core.labelling.reviews import latest_reviews
from cliplabel_pipeline.core.values import Review
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, as_failure, path_md
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ResultsRootResource


@dg.asset(partitions_def=jobs_partitions, kinds={"json"}, group_name=JOB_GROUP, io_manager_key="job_folder_io")
def job_reviews(context: dg.AssetExecutionContext, results_root: ResultsRootResource) -> dg.Output[list[Review]]:
    """Every review of the job, oldest first (none before anyone reviewed it), with the SHA-256 of
    ``reviews.jsonl`` that ``job_reviews_sensor`` keys its runs on."""
    with as_failure(context):
        job = results_root.job(context.partition_key)
        version = job.reviews_version()
        reviews = job.read_reviews()
    newest = Counter(r.decision for r in latest_reviews(reviews).values())
    return dg.Output(reviews, metadata={
        "reviews": dg.MetadataValue.int(len(reviews)),
        "reviewed_items": dg.MetadataValue.int(sum(newest.values())),
        "accepted": dg.MetadataValue.int(newest["accept"]),
        "corrected": dg.MetadataValue.int(newest["correct"]),
        "rejected": dg.MetadataValue.int(newest["reject"]),
        "reviewers": ", ".join(sorted({r.reviewer for r in reviews if r.reviewer})) or "none named",
        "reviews_jsonl": path_md(job.reviews_jsonl),
        "sha256": version or "no reviews.jsonl",
    })
