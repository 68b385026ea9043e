"""Load: 8 toy jobs through Dagster, four runs at a time, one DuckDB file: every item exactly once."""

from __future__ import annotations

import pytest

import multiprocessing as mp

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.toyworld.jobs import write_toy_jobs


def _materialise_jobs(job_ids: list[str], root: str, db: str, model: str, cache: str) -> None:
    import dagster as dg

    from cliplabel_pipeline_tests.defs.bindings import bound_resources
    from cliplabel_pipeline_tests.defs.test_assets import ASSETS, JOB_SELECTION

    resources = bound_resources(model, root, db, cache)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("jobs", job_ids)
        for job_id in job_ids:
            result = dg.materialize(ASSETS, partition_key=job_id, resources=resources, instance=instance,
                                    selection=JOB_SELECTION)
            assert result.success


@pytest.mark.slow
def test_eight_jobs_four_runs_at_once_every_item_exactly_once(results_root, tmp_path, toy_model, text_cache):
    ids = write_toy_jobs(results_root, 8, seed=5, prefix="load")
    db = tmp_path / "lineage.duckdb"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_materialise_jobs, args=(ids[i::4], str(results_root), str(db), toy_model,
                                                           str(text_cache))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    for job_id in ids:
        expected = sorted(p.relative_to(results_root / job_id).as_posix()
                          for p in (results_root / job_id).glob("*/*.png") if p.parent.name in ("masks", "objects"))
        expected = sorted(expected + ["source.png"])
        assert sorted(r["path"] for r in read_jsonl(results_root / job_id / "labels.jsonl")) == expected
        rows = query(db, "SELECT path FROM labels WHERE job_id = ? ORDER BY path", [job_id])
        assert [r[0] for r in rows] == expected
    assert query(db, "SELECT count(*) FROM (SELECT job_id, path FROM labels GROUP BY ALL HAVING count(*) > 1)") == [(0,)]
    assert query(db, "SELECT count(DISTINCT job_id) FROM runs") == [(8,)]
