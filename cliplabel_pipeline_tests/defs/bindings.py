"""Resources and IO managers bound to a test's own results root, DuckDB file and text cache."""

from __future__ import annotations

from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.defs.io_managers import concept_index_io_manager, job_folder_io_manager
from cliplabel_pipeline.defs.resources import ClipModelResource, DuckDBResource, ResultsRootResource


def bound_resources(model: str, results_root: str, db_path: str, cache_dir: str, settle_seconds: float = 0) -> dict:
    clip = ClipModelResource(model=model, device="cpu", precision="fp32", cache_dir=cache_dir)
    env = Settings.from_env()  # the waits, as the definitions read them
    root = ResultsRootResource(path=results_root, settle_seconds=settle_seconds, job_wait_seconds=env.job_wait_s,
                               db_wait_seconds=env.db_wait_s)
    return {"clip": clip, "results_root": root, "duckdb": DuckDBResource(path=db_path),
            "job_folder_io": job_folder_io_manager, "concept_index_io": concept_index_io_manager}
