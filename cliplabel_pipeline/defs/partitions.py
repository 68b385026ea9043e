import dagster as dg

from cliplabel_pipeline import dagster_names as names

# One partition per job: the key is the job's folder name under the results root.
jobs_partitions = dg.DynamicPartitionsDefinition(name=names.JOBS_PARTITIONS)
