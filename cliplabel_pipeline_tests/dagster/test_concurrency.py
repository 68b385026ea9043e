"""DuckDB allows one writer per file: four processes labelling different jobs at once all land."""

from __future__ import annotations

import multiprocessing as mp

from cliplabel_pipeline.core.store import now, query, write_job_assets, write_job_labels


def _write_job(db_path: str, job_dir: str, job_id: str, n: int) -> None:
    records = [{"path": f"objects/{i}.png", "kind": "object", "top1": "red star", "confidence": 0.9,
                "low_confidence": False, "labels": [{"name": "red star", "score": 0.9}]} for i in range(n)]
    run = {"asset": "job_label_assignments", "model": "toy", "model_identity": "x", "precision": "fp32",
           "bank_version": "v", "templates_hash": "t", "top_k": 3, "min_confidence": 0.25,
           "started_at": now(), "finished_at": now(), "items_per_s": 1.0}
    for attempt in range(5):  # each writer writes repeatedly, to overlap with the others
        write_job_assets(db_path, job_id, f"run-{job_id}", __import__("pathlib").Path(job_dir),
                         [{"path": r["path"], "kind": "object"} for r in records], [])
        write_job_labels(db_path, job_id, f"run-{job_id}", records, run)


def test_four_concurrent_writers_all_succeed_with_nothing_lost_or_duplicated(tmp_path):
    db = str(tmp_path / "lineage.duckdb")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_job, args=(db, str(tmp_path), f"job-{i}", 50 + i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    counts = dict(query(db, "SELECT job_id, count(*) FROM labels GROUP BY job_id"))
    assert counts == {"job-0": 50, "job-1": 51, "job-2": 52, "job-3": 53}
    assert query(db, "SELECT count(*) FROM runs") == [(4,)]
    assert dict(query(db, "SELECT job_id, count(*) FROM assets GROUP BY job_id")) == counts
