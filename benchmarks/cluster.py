"""The same backfill in process (the default set-up: the daemon, one process per run) and on the local
two-worker Celery cluster (deploy/local/cluster.py), side by side in one run.

    python benchmarks/cluster.py [--toy-jobs 20] [--big-jobs 4] [--big-images 64] [--workdir DIR]
    python benchmarks/cluster.py --sustained-min 60 [--rss-every-s 30] [--out FILE]


Two backfills: toy jobs with the toy CLIP, and jobs of object images with a full-size ViT-B/32 with random
weights (the compute of the real model). Each mode first labels one warm-up job (the text embeddings cached,
as in steady state; each cluster host gets a copy of that cache), then every job of the backfill is dropped
into the results root at once and the sensor requests one run per job. Reported: wall time from the drop to
the last run's end, throughput and its ratio, the overhead per job, and per step (from Dagster's event log):
the wait from submission to start, and how long the CLIP step takes (it includes a model load in process).

``--sustained-min``: memory instead. Toy jobs are dropped into the cluster's results root for that many minutes,
as fast as the two workers label them (a few runs always waiting), and every process's resident memory is
sampled (each worker's main process and its step process apart, the daemon and its run workers). Reported: RSS
over time per process, and each one's growth from the end of the warm-up (the first sixth of the time, at least
five minutes) to the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAST = {"CLIPLABEL_SETTLE_S": "1", "CLIPLABEL_SENSOR_INTERVAL_S": "2", "CLIPLABEL_HEARTBEAT_S": "30"}


def _cluster_module():
    """``deploy/local/cluster.py`` as a module, loaded as the cluster tests load it."""
    from cliplabel_pipeline_tests.defs.cluster_faults import cluster_module

    return cluster_module()


def toy_writer(root: Path, job_id: str, i: int) -> None:
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    write_toy_job(root, job_id, seed=4000 + i)


def big_writer(pool: Path, n_images: int):
    def write(root: Path, job_id: str, i: int) -> None:
        files = sorted(pool.iterdir())
        job = root / job_id
        (job / "objects").mkdir(parents=True)
        for k in range(n_images):
            shutil.copy(files[(k + i) % len(files)], job / "objects" / f"obj_{k:04d}.jpg")
        shutil.copy(files[0], job / "source.png")
    return write


def wait_for_runs(instance, n: int, timeout: float = 1800) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = instance.get_run_records()
        if len(records) >= n and all(r.dagster_run.is_finished for r in records):
            return records
        time.sleep(1)
    raise RuntimeError(f"{n} runs not finished within {timeout:g}s")


def step_figures(instance, records) -> dict:
    """Per step: submission-to-start wait (Celery only) and the CLIP step's duration."""
    waits, clip = [], []
    for rec in records:
        submitted, started = {}, {}
        for entry in instance.all_logs(rec.dagster_run.run_id):
            ev = entry.dagster_event
            if ev is None or not entry.step_key:
                continue
            if ev.event_type_value == "ENGINE_EVENT" and entry.user_message.startswith("Submitting celery task"):
                submitted[entry.step_key] = entry.timestamp
            elif ev.event_type_value == "STEP_START":
                started[entry.step_key] = entry.timestamp
            elif ev.event_type_value == "STEP_SUCCESS" and entry.step_key == "job_image_embeddings":
                clip.append(entry.timestamp - started.get(entry.step_key, entry.timestamp))
        waits += [started[k] - t for k, t in submitted.items() if k in started]
    return {"steps_per_run": len(waits) / max(len(records), 1),
            "queue_wait_s": statistics.mean(waits) if waits else 0.0,
            "clip_step_s": statistics.median(clip) if clip else 0.0}


def backfill(root: Path, writer, n: int, instance, prefix: str) -> dict:
    """Warm up with one job, then drop ``n`` jobs at once; figures of the ``n`` runs."""
    writer(root, f"{prefix}-warmup", 999)
    wait_for_runs(instance, 1)
    before = {r.dagster_run.run_id for r in instance.get_run_records()}
    tmp = root.parent / f"{prefix}-staging"
    for i in range(n):
        writer(tmp, f"{prefix}-{i:03d}", i)
    t0 = time.time()
    for job in sorted(tmp.iterdir()):
        job.rename(root / job.name)
    records = [r for r in wait_for_runs(instance, n + 1) if r.dagster_run.run_id not in before]
    failed = [r.dagster_run.run_id for r in records if r.dagster_run.status.value != "SUCCESS"]
    if failed:
        raise RuntimeError(f"runs failed: {failed}")
    wall = max(r.end_time for r in records) - t0
    return {"wall_s": wall, "jobs_per_min": 60 * n / wall, **step_figures(instance, records)}


def in_process(work: Path, model: str, writer, n: int, prefix: str) -> tuple[dict, Path]:
    import dagster as dg

    home, root, cache = work / "home", work / "results", work / "cache"
    for folder in (home, root, cache):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, **FAST, "DAGSTER_HOME": str(home), "CLIPLABEL_RESULTS_ROOT": str(root),
           "CLIPLABEL_MODEL": model, "CLIPLABEL_CACHE": str(cache), "CLIPLABEL_DB": str(work / "lineage.duckdb")}
    instance = dg.DagsterInstance.from_config(str(home))  # its storage created before the daemon opens it
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                               str(REPO / "workspace.yaml")], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return backfill(root, writer, n, instance, prefix), cache
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)
        instance.dispose()


def on_cluster(work: Path, model: str, writer, n: int, prefix: str, warm_cache: Path) -> dict:
    import dagster as dg

    local = _cluster_module()
    cluster = local.LocalCluster(work, work / "results", model, webserver=False, extra_env=FAST)
    for name in cluster.worker_names:  # each host's own cache, warmed as the in-process one was
        shutil.copytree(warm_cache, cluster.host_dir(name) / "cache", dirs_exist_ok=True)
    with cluster:
        os.environ["DAGSTER_PG_URL"] = cluster.env["DAGSTER_PG_URL"]
        with dg.DagsterInstance.from_config(str(cluster.dagster_home)) as instance:
            return backfill(cluster.results, writer, n, instance, prefix)


def process_rss(cluster) -> dict[str, float]:
    """MB resident per process of the cluster: ``<worker>`` (Celery's main process), ``<worker> step`` (the
    process that runs its steps), ``daemon`` (with its code server) and ``run workers`` (summed)."""
    import psutil

    rss = {}
    for name, proc in cluster.procs.items():
        if name in ("redis", "postgres"):
            continue
        try:
            root = psutil.Process(proc.pid)
            children = root.children(recursive=True)
            rss[name] = root.memory_info().rss / 2**20
            if name == "daemon":  # the code server and the run workers it starts
                runs = [c for c in children if "multiprocessing.spawn" in " ".join(c.cmdline())]
                rss["daemon"] += sum(c.memory_info().rss for c in children if c not in runs) / 2**20
                rss["run workers"] = sum(c.memory_info().rss for c in runs) / 2**20
            else:
                rss[f"{name} step"] = sum(c.memory_info().rss for c in children) / 2**20
        except psutil.NoSuchProcess:
            continue
    return rss


def sustained(work: Path, minutes: float, every_s: float, out: Path) -> dict:
    """Toy jobs dropped for ``minutes`` as fast as the cluster labels them; RSS sampled every ``every_s``."""
    import dagster as dg

    local = _cluster_module()
    model = str(REPO / "cliplabel_pipeline" / "toyworld" / "model")
    cluster = local.LocalCluster(work, work / "results", model, webserver=False, extra_env=FAST)
    staging, samples, dropped = work / "staging", [], 0
    with cluster, out.open("w") as log:
        os.environ["DAGSTER_PG_URL"] = cluster.env["DAGSTER_PG_URL"]
        log.write("minute,process,rss_mb,runs_done,runs_failed\n")
        with dg.DagsterInstance.from_config(str(cluster.dagster_home)) as instance:
            t0 = next_sample = time.monotonic()
            while (now := time.monotonic()) < t0 + 60 * minutes:
                records = instance.get_run_records()
                finished = [r for r in records if r.dagster_run.is_finished]
                if dropped - len(finished) < 2 * (cluster.workers + 1):  # keep a few runs waiting, no more
                    job_id = f"sustained-{dropped:05d}"
                    toy_writer(staging, job_id, dropped)
                    (staging / job_id).rename(cluster.results / job_id)
                    dropped += 1
                if now >= next_sample:
                    failed = sum(r.dagster_run.status.value == "FAILURE" for r in finished)
                    for name, mb in process_rss(cluster).items():
                        samples.append(((now - t0) / 60, name, mb))
                        log.write(f"{(now - t0) / 60:.2f},{name},{mb:.1f},{len(finished)},{failed}\n")
                    log.flush()
                    next_sample = now + every_s
                time.sleep(0.5)
            records = instance.get_run_records()
    warm = max(5.0, minutes / 6)
    growth = {}
    for name in dict.fromkeys(n for _, n, _ in samples):
        series = [(t, mb) for t, n, mb in samples if n == name]
        after = [mb for t, mb in series if t >= warm] or [series[-1][1]]
        growth[name] = (after[0], max(after), series[-1][1])
    done = sum(r.dagster_run.is_finished for r in records)
    failed = sum(r.dagster_run.status.value == "FAILURE" for r in records)
    return {"minutes": minutes, "warm_up_min": warm, "runs_done": done, "runs_failed": failed, "growth": growth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy-jobs", type=int, default=20)
    parser.add_argument("--big-jobs", type=int, default=4)
    parser.add_argument("--big-images", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--sustained-min", type=float, default=0, help="measure memory over this many minutes")
    parser.add_argument("--rss-every-s", type=float, default=30)
    parser.add_argument("--out", type=Path, default=Path("cluster-rss.csv"), help="RSS samples (CSV)")
    args = parser.parse_args()
    work = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"cliplabel-cluster-bench-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    if args.sustained_min:
        res = sustained(work, args.sustained_min, args.rss_every_s, args.out.resolve())
        print(f"{res['runs_done']} runs in {res['minutes']:g} min ({res['runs_failed']} failed), RSS samples in "
              f"{args.out}\n\n| process | RSS after {res['warm_up_min']:g} min warm-up | highest after | at the end | "
              f"growth |\n|---|---|---|---|---|")
        for name, (warm, high, end) in res["growth"].items():
            print(f"| {name} | {warm:.0f} MB | {high:.0f} MB | {end:.0f} MB | {100 * (end - warm) / warm:+.1f}% |")
        shutil.rmtree(work, ignore_errors=True)
        return
    from benchmark import prepare  # the random-weight ViT-B/32 and its image pool

    big = prepare(work / "vit", 1, 0)
    cases = [("toy", str(REPO / "cliplabel_pipeline" / "toyworld" / "model"), toy_writer, args.toy_jobs),
             ("vit-b-32", big["model"], big_writer(work / "vit" / "pool", args.big_images), args.big_jobs)]
    rows = []
    for name, model, writer, n in cases:
        if not n:
            continue
        local, cache = in_process(work / name / "in_process", model, writer, n, name)
        remote = on_cluster(work / name / "cluster", model, writer, n, name, cache)
        rows.append((name, n, local, remote))
        print(f"{name}: in process {local}\n{name}: cluster    {remote}", flush=True)
    print("\n| backfill | jobs | in process | 2-worker cluster | throughput ratio | overhead per job | "
          "queue wait per step | CLIP step (median) in process / cluster |\n|---|---|---|---|---|---|---|---|")
    for name, n, local, remote in rows:
        print(f"| {name} | {n} | {local['wall_s']:.1f} s ({local['jobs_per_min']:.1f} jobs/min) | "
              f"{remote['wall_s']:.1f} s ({remote['jobs_per_min']:.1f} jobs/min) | "
              f"{remote['jobs_per_min'] / local['jobs_per_min']:.2f}x | "
              f"{(remote['wall_s'] - local['wall_s']) / n:+.2f} s | {remote['queue_wait_s']:.2f} s "
              f"({remote['steps_per_run']:.0f} steps/run) | {local['clip_step_s']:.2f} s / {remote['clip_step_s']:.2f} s |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
