"""The local cluster end to end: Redis, PostgreSQL, the daemon, the lineage worker and two worker hosts.
Twelve toy jobs; both hosts take work; one host is killed with SIGKILL in the middle of a step; its step is
back on the other host within a minute (the dead host stops renewing its lease); every run still succeeds, and
DuckDB holds every item of every job exactly once."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.defs.cluster_faults import cluster_module




def _tasks(log: Path, event: str) -> set[str]:
    """Ids of the Celery tasks (one step each) a worker's log says were ``received`` or ``succeeded``."""
    return set(_task_times(log, event))


def _task_times(log: Path, event: str) -> dict[str, float]:
    """``{task id: when}`` of a worker's log lines ``[time: ...] Task execute_plan[id] <event>``."""
    found = re.findall(rf"\[([0-9-]+ [0-9:]+,[0-9]+): [^]]*\] Task execute_plan\[([0-9a-f-]+)\] {event}",
                       log.read_text(errors="replace"))
    return {task: datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp() for when, task in found}


@pytest.mark.slow
@pytest.mark.cluster
def test_twelve_jobs_on_two_hosts_survive_a_killed_host_with_every_item_in_duckdb_once(tmp_path, toy_model,
                                                                                     monkeypatch):
    local = cluster_module()
    try:
        local.find_servers()
    except local.ClusterUnavailable as exc:
        pytest.skip(f"no local cluster here: {exc}")
    env = {"CLIPLABEL_SETTLE_S": "1", "CLIPLABEL_SENSOR_INTERVAL_S": "2", "CLIPLABEL_HEARTBEAT_S": "1",
           "CLIPLABEL_BATCH_SIZE": "2"}
    with local.LocalCluster(tmp_path / "cluster", tmp_path / "results", toy_model, webserver=False,
                            extra_env=env) as cluster:  # the default lease: CLIPLABEL_REDELIVER_S=30
        ids = [f"job-{i:02d}" for i in range(12)]
        for i, job_id in enumerate(ids):
            write_toy_job(cluster.results, job_id, seed=900 + i, n_objects=8, size=(384, 288))
        log_a, log_b = cluster.log("a"), cluster.log("b")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # host a in the middle of a step, host b has worked too
            in_flight = _tasks(log_a, "received") - _tasks(log_a, "succeeded")
            if in_flight and len(_tasks(log_a, "succeeded")) >= 3 and _tasks(log_b, "succeeded"):
                cluster.kill("a")
                killed_at = time.time()
                break
            time.sleep(0.05)
        else:
            pytest.fail("both hosts did not take work in time")
        lost = _tasks(log_a, "received") - _tasks(log_a, "succeeded")  # the log as the killed host left it
        assert lost, "host a was killed between steps, not in one"

        monkeypatch.setenv("DAGSTER_HOME", str(cluster.dagster_home))
        monkeypatch.setenv("DAGSTER_PG_URL", cluster.env["DAGSTER_PG_URL"])
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                if len(runs) == 12 and all(r.is_finished for r in runs):
                    break
                time.sleep(2)
            statuses = sorted(r.status.value for r in instance.get_runs())
        assert statuses == ["SUCCESS"] * 12, f"runs: {statuses}; logs in {cluster.base / 'logs'}"
        assert lost & _tasks(log_b, "received"), "the killed host's step was not given to the other host"
        back_after = min(t for task, t in _task_times(log_b, "received").items() if task in lost) - killed_at
        print(f"the killed host's step was back on host b {back_after:.0f}s after the kill")
        assert back_after < 60, f"the killed host's step came back only after {back_after:.0f}s"
        # the lease of a living host's step is renewed: no step but the lost one was handed to a second host
        assert _tasks(log_a, "received") & _tasks(log_b, "received") == lost
        assert "HB op=" in log_b.read_text(errors="replace"), "heartbeats belong in the worker's log"

    db = cluster.db
    for job_id in ids:
        job = cluster.results / job_id
        truth = (job / "ground_truth.csv").read_text().splitlines()[1:]
        items = {"source.png", *(line.split(",")[0] for line in truth)}
        assert {r["path"] for r in read_jsonl(job / "labels.jsonl")} == items
        assert {p for (p,) in query(db, "SELECT path FROM labels WHERE job_id = ?", [job_id])} == items
        n = len(items)
        assert query(db, "SELECT count(*), count(DISTINCT path) FROM labels WHERE job_id = ?", [job_id]) == [(n, n)]
        assert query(db, "SELECT count(*), count(DISTINCT path) FROM assets WHERE job_id = ?", [job_id]) == [(n, n)]
    assert query(db, "SELECT count(DISTINCT job_id), count(*) FROM runs") == [(12, 12)]
    assert cluster.procs == {}  # everything it started has stopped
