import dagster as dg

# One partition per job: the key is the job's folder name under the results root.
jobs_partitions = dg.DynamicPartitionsDefinition(name="jobs")
