"""Faults of the local cluster that heal without anyone: the broker restarted or away for a minute, the daemon
killed with its run workers. Each drops toy jobs, causes the fault while their runs are in flight, and ends
with every job labelled exactly once (files and DuckDB rows agree, one run's rows per job) within a stated
time, by run retries, step retries and run monitoring alone (deploy/dagster.yaml)."""

from __future__ import annotations

import time

import pytest

from cliplabel_pipeline_tests.dagster.cluster_faults import (
    assert_labelled_once, drop_jobs, local_cluster, wait_for_runs, wait_until_labelled)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _instance(cluster, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(cluster.dagster_home))
    monkeypatch.setenv("DAGSTER_PG_URL", cluster.env["DAGSTER_PG_URL"])
    import dagster as dg

    return dg.DagsterInstance.get()


def _in_flight(runs) -> bool:
    return sum(r.status.value == "STARTED" for r in runs) >= 2


@pytest.mark.parametrize("away_s", [2, 60], ids=["broker-restarted", "broker-away-60s"])
def test_runs_in_flight_survive_the_broker_going_away(tmp_path, toy_model, monkeypatch, away_s):
    with local_cluster(tmp_path, toy_model) as cluster, _instance(cluster, monkeypatch) as instance:
        ids = drop_jobs(cluster.results, 6)
        wait_for_runs(instance, _in_flight, 180, "no two runs in flight")
        cluster.stop_one("redis")
        time.sleep(away_s)
        cluster.restart("redis")
        took = wait_until_labelled(instance, ids, 240 + away_s)
        print(f"broker away {away_s}s: every job labelled {took:.0f}s after it came back")
    assert_labelled_once(cluster.results, cluster.db, ids)


def test_runs_survive_the_daemon_killed_with_its_run_workers(tmp_path, toy_model, monkeypatch):
    with local_cluster(tmp_path, toy_model) as cluster, _instance(cluster, monkeypatch) as instance:
        ids = drop_jobs(cluster.results, 6)
        wait_for_runs(instance, _in_flight, 180, "no two runs in flight")
        cluster.kill("daemon")  # with its code server and every run worker (its whole process group)
        time.sleep(5)
        cluster.restart("daemon")
        took = wait_until_labelled(instance, ids, 300)
        print(f"daemon killed: every job labelled {took:.0f}s after its restart")
        retried = [r for r in instance.get_runs() if r.tags.get("dagster/retry_number")]
        assert retried, "no run was in flight when the daemon died"
    assert_labelled_once(cluster.results, cluster.db, ids)
