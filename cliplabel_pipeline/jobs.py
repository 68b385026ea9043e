import dagster as dg

from cliplabel_pipeline.assets.common import JOB_GROUP
from cliplabel_pipeline.partitions import jobs_partitions

# Every per-job asset of one job, in one run (with their checks).
label_jobs_job = dg.define_asset_job("label_jobs_job", selection=dg.AssetSelection.groups(JOB_GROUP),
                                     partitions_def=jobs_partitions)
