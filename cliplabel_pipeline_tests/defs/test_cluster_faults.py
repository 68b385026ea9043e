"""Faults of the local cluster that heal without anyone: the broker restarted or away for a minute, the daemon
killed with its run workers or while a run was starting, the results root full until every retry is spent.
Each drops toy jobs, causes the fault while their runs are in flight, and ends with every job labelled exactly
once (files and DuckDB rows agree, one run's rows per job) within a stated time, by run retries, step retries
and run monitoring (deploy/dagster.yaml) and the sensor asking again for a job whose runs gave up
(defs/sensors.py)."""

from __future__ import annotations

import time

import pytest

from cliplabel_pipeline.defs.sensors import AGAIN_AFTER_S, ASKED_AGAIN_TAG
from cliplabel_pipeline_tests.defs.cluster_faults import (
    assert_labelled_once, drop_jobs, local_cluster, runs_by_job, wait_for_runs, wait_until_labelled)
from cliplabel_pipeline_tests.small_disk import fill, small_tmpfs

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


def _messages(error) -> str:
    """An error's message and its causes' (a step's own error is the cause of Dagster's)."""
    return f"{error.message} {_messages(error.cause)}" if error else ""


def _gave_up(ids):
    def every_job(runs) -> bool:  # each job's latest run failed with its retries spent
        latest = {}
        for run in runs:  # newest first
            latest.setdefault(run.tags.get("dagster/partition"), run)
        return all(job in latest and latest[job].status.value == "FAILURE"
                   and latest[job].tags.get("dagster/will_retry") == "false" for job in ids)
    return every_job


def test_jobs_are_labelled_once_the_full_results_root_is_freed(tmp_path, toy_model, monkeypatch):
    with small_tmpfs(tmp_path / "results") as root, local_cluster(tmp_path, toy_model, results=root) as cluster, \
            _instance(cluster, monkeypatch) as instance:
        ids = drop_jobs(root, 3)
        filler = fill(root)  # before the sensor sees them (they must be unchanged for a second)
        # full until every step and run retry is spent (about three minutes): retries alone would stop here
        wait_for_runs(instance, _gave_up(ids), 420, "not every job's runs gave up on the full disk")
        failures = [_messages(e.dagster_event.step_failure_data.error) for run in instance.get_runs()
                    for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_step_failure]
        assert failures and all("No space left on device" in m for m in failures), failures[:3]
        runs_before = len(instance.get_runs())
        filler.unlink()
        took = wait_until_labelled(instance, ids, AGAIN_AFTER_S[0] + 150)
        print(f"results root full: {runs_before} runs failed; every job labelled {took:.0f}s after it was freed")
        asked = {job: sum(ASKED_AGAIN_TAG in r.tags for r in rs) for job, rs in runs_by_job(instance).items()}
        assert all(asked[job] == 1 for job in ids), asked  # once each: space came back before the second
        assert_labelled_once(cluster.results, cluster.db, ids)

def test_a_run_caught_mid_launch_fails_within_two_minutes_and_is_retried(tmp_path, toy_model, monkeypatch):
    with local_cluster(tmp_path, toy_model) as cluster, _instance(cluster, monkeypatch) as instance:
        ids = drop_jobs(cluster.results, 2)
        wait_for_runs(instance, lambda runs: any(r.status.value == "STARTING" for r in runs), 180, "no run starting")
        cluster.kill("daemon")  # with its code server and the run worker being started
        killed = time.monotonic()
        stuck = [r.run_id for r in instance.get_runs() if r.status.value == "STARTING"]
        assert stuck, "the run started before the daemon died"
        time.sleep(5)
        cluster.restart("daemon")
        wait_for_runs(instance, lambda runs: all(r.is_finished for r in runs if r.run_id in stuck), 150,
                      "a run stuck in STARTING did not end")
        failed_in = time.monotonic() - killed
        took = wait_until_labelled(instance, ids, 240)
        print(f"run stuck in STARTING: failed {failed_in:.0f}s after the daemon died, every job labelled "
              f"{failed_in + took:.0f}s after")
        for run_id in stuck:
            assert instance.get_run_by_id(run_id).status.value == "FAILURE"
            message = next(e.message for e in instance.all_logs(run_id) if e.dagster_event
                           and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
            assert "longer than 60 seconds to start" in message, message
            assert any(r.parent_run_id == run_id for r in instance.get_runs()), f"{run_id} was not retried"
        assert failed_in <= 120
    assert_labelled_once(cluster.results, cluster.db, ids)
