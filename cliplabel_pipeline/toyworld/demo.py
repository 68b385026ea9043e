"""``cliplabel demo``: toy jobs labelled by the bundled toy model, fully offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.toyworld.jobs import write_toy_jobs

TOY_MODEL_DIR = Path(__file__).parent / "model"


def run_demo(results_root: Path, settings: Settings, n_jobs: int = 3, db_path: Path | None = None) -> Iterator:
    """Write ``n_jobs`` toy jobs under ``results_root`` and label each with the toy model on the CPU; yields each
    job's ``JobResult``. ``settings``: the caller's, for where the text cache is, its budget and the waits."""
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.labeller import Labeller
    from cliplabel_pipeline.core.pipeline import process_job

    results_root = Path(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    ids = write_toy_jobs(results_root, n_jobs, prefix="demo")
    labeller = Labeller.load(Settings(model=str(TOY_MODEL_DIR), device="cpu", cache_dir=settings.cache_dir,
                                      cache_max_mb=settings.cache_max_mb))
    for job_id in ids:
        yield process_job(labeller, JobFolder.open(results_root, job_id, settings.waits), db_path=db_path)
