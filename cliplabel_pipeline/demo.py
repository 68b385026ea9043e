"""``cliplabel demo``: toy jobs labelled by the bundled toy model, fully offline."""

from __future__ import annotations

from pathlib import Path

from cliplabel_pipeline.toyworld.jobs import write_toy_jobs

TOY_MODEL_DIR = Path(__file__).parent / "toyworld" / "model"


def run_demo(results_root: Path, n_jobs: int = 3) -> list:
    """Write ``n_jobs`` toy jobs under ``results_root``, label each, and print where the outputs are."""
    from cliplabel_pipeline.core.labeller import Labeller

    results_root = Path(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    ids = write_toy_jobs(results_root, n_jobs, prefix="demo")
    labeller = Labeller.create(str(TOY_MODEL_DIR))
    results = []
    for job_id in ids:
        result = labeller.label_job(results_root, job_id)
        results.append(result)
        tops = ", ".join(sorted({r["top1"] for r in result.records if r["kind"] == "object"}))
        print(f"{job_id}: {len(result.records)} items labelled ({tops}) -> {result.labels_path}")
    print(f"results root: {results_root}")
    return results
