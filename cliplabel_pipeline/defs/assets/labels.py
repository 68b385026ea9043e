"""Top-k labels per item, with the job's rows in DuckDB."""

from collections.abc import Iterator

import dagster as dg

from cliplabel_pipeline.core.labelling.filtered import count_flags
from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.pipeline import Labelled, label_embedded
from cliplabel_pipeline.core.values import REVIEW, Embedded, Review
from cliplabel_pipeline.defs.assets.common import (
    JOB_GROUP, LabelingConfig, as_failure, heartbeat, histogram_md, path_md,
)
from cliplabel_pipeline.defs.checks import LABEL_CHECKS, LABEL_CHECK_SPECS
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource


@dg.asset(partitions_def=jobs_partitions, kinds={"numpy", "duckdb"}, group_name=JOB_GROUP,
          io_manager_key="job_folder_io", check_specs=LABEL_CHECK_SPECS)
def job_label_assignments(context: dg.AssetExecutionContext, config: LabelingConfig, clip: ClipModelResource,
                          results_root: ResultsRootResource, duckdb: DuckDBResource,
                          job_image_embeddings: Embedded, concept_text_embeddings: ConceptIndex,
                          job_reviews: list[Review]) -> Iterator[dg.Output[Labelled] | dg.AssetCheckResult]:
    """Top-k concepts with confidence for every item, with people's reviews laid over them (the label of record):
    ``labels.jsonl``, and the job's DuckDB ``assets``, ``labels`` and ``runs`` rows (replaced in one transaction).
    Scored from the stored embeddings: new reviews re-run this without encoding an image."""
    with as_failure(context), heartbeat(context, clip.settings.heartbeat_s):
        job = results_root.job(context.partition_key)
        bank = config.bank_spec(clip.bank_spec)
        index = concept_text_embeddings if bank == clip.bank_spec else clip.concept_index(bank)
        labelled = label_embedded(job, job_image_embeddings, index, bank, config.label_settings(),
                                  duckdb.db_path(results_root.root), context.run.run_id, spool_rows=duckdb.spool_rows,
                                  reviews=job_reviews)
    records, prov = labelled.records, labelled.provenance
    counts = count_flags(records)  # the one count of what is flagged: a person's accepted label counts as kept
    yield dg.Output(labelled, metadata={
        "items": dg.MetadataValue.int(len(records)),
        "low_confidence": dg.MetadataValue.int(counts.flagged),
        "labelled_by_review": dg.MetadataValue.int(sum(r.label_source == REVIEW for r in records)),
        **{name: dg.MetadataValue.int(n) for name, n in counts.as_fields().items()},
        "mean_match": dg.MetadataValue.float(round(sum(r.match or 0 for r in records) / max(len(records), 1), 6)),
        "model": prov.model, "bank_version": prov.bank_version,
        "threshold": dg.MetadataValue.float(prov.min_confidence), "top_k": dg.MetadataValue.int(prov.top_k),
        "match_threshold": dg.MetadataValue.float(prov.min_match),
        "match_calibration": dg.MetadataValue.json(prov.calibration),
        "label_histogram": dg.MetadataValue.md(histogram_md(records)),
        "low_confidence_items": dg.MetadataValue.md("\n".join(
            [f"- `{r.path}` ({r.top1}, confidence {r.confidence:.2f}, match {r.match:.2f}, by {'+'.join(r.flagged_by)})"
             for r in records if r.low_confidence][:50]) or "none"),
        "items_per_s": dg.MetadataValue.float(labelled.performance.items_per_s),
        "labels_jsonl": path_md(job.labels_jsonl),
    })
    for check in LABEL_CHECKS.values():
        yield check(job.id, records, job_image_embeddings, job.labels_jsonl)
