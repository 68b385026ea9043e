"""A job's rows in DuckDB on a cluster: ingested by the one writer from the file its labelling step wrote."""

import time

import dagster as dg

from cliplabel_pipeline.core.pipeline import ingest_lineage
from cliplabel_pipeline.defs.assets.common import JOB_GROUP, as_failure
from cliplabel_pipeline.defs.assets.labels import job_label_assignments
from cliplabel_pipeline.defs.cluster import LINEAGE_QUEUE, on_queue
from cliplabel_pipeline.defs.partitions import jobs_partitions
from cliplabel_pipeline.defs.resources import DuckDBResource, ResultsRootResource


@dg.asset(partitions_def=jobs_partitions, kinds={"duckdb"}, group_name=JOB_GROUP, deps=[job_label_assignments],
          op_tags=on_queue(LINEAGE_QUEUE))
def job_lineage_rows(context: dg.AssetExecutionContext, results_root: ResultsRootResource,
                     duckdb: DuckDBResource) -> dg.MaterializeResult:
    """The job's ``assets``, ``labels`` and ``runs`` rows, from ``_cliplabel/lineage_rows.json`` (written on
    whichever host labelled it), replacing the job's rows in one transaction. Only in Celery deployments, where
    it runs on the ``lineage`` queue's single worker: no two hosts ever write the DuckDB file."""
    with as_failure(context):
        job = results_root.job(context.partition_key)
        started = time.perf_counter()
        rows = ingest_lineage(job, duckdb.db_path(results_root.root))
    return dg.MaterializeResult(metadata={
        "labels": dg.MetadataValue.int(len(rows.labels)), "assets": dg.MetadataValue.int(len(rows.assets)),
        "labelled_in_run": rows.run_id, "ingest_ms": dg.MetadataValue.float(round((time.perf_counter() - started) * 1e3, 1)),
    })
