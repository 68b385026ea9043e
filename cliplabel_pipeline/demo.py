"""``cliplabel demo``: toy jobs labelled by the bundled toy model, fully offline."""

from __future__ import annotations

from pathlib import Path

from cliplabel_pipeline.toyworld.jobs import write_toy_jobs

TOY_MODEL_DIR = Path(__file__).parent / "toyworld" / "model"


def run_demo(results_root: Path, n_jobs: int = 3) -> list:
    """Write ``n_jobs`` toy jobs under ``results_root``, label each, and print where the outputs are."""
    from cliplabel_pipeline.cli import summarise_job
    from cliplabel_pipeline.core.labeller import Labeller
    from cliplabel_pipeline.core.stages import process_job

    results_root = Path(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    ids = write_toy_jobs(results_root, n_jobs, prefix="demo")
    labeller = Labeller.create(str(TOY_MODEL_DIR))
    results = []
    for job_id in ids:
        done = process_job(labeller, results_root, job_id)
        results.append(done)
        print(summarise_job(done))
    print(f"results root: {results_root}  (open <job>/report/report.md to see what was labelled)")
    return results
