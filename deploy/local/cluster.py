"""A Dagster-on-Celery cluster on one machine, for development, the `cluster` tests and the benchmark.

    python deploy/local/cluster.py [--base DIR] [--results DIR] [--model DIR] [--workers 2]   (or: make cluster)

Starts, each as its own process on 127.0.0.1 and a free port: Redis (the Celery broker and result backend),
PostgreSQL (Dagster's instance storage, as the ``postgres`` user when run as root, its data in a temporary
folder), the Dagster daemon and webserver, the ``lineage`` worker beside them (the one DuckDB writer), and
worker "hosts" ``a``, ``b``, ... each in its own working folder with its own text-embedding cache and log,
consuming the ``dagster`` and ``clip`` queues. The hosts share only the results root. It stops everything it
started, by process id, on Ctrl-C (or when the ``with LocalCluster(...)`` block ends).

Process control goes through what the system offers: a process group and its signals where there are
(``os.killpg``), each process of the tree by ``psutil`` where there are none (Windows: no ``SIGKILL``, no
process groups to signal). Celery's workers need POSIX; the cluster is a Linux and macOS tool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INSTANCE_YAML = REPO / "deploy" / "dagster.yaml"


class ClusterUnavailable(RuntimeError):
    """Redis, PostgreSQL or the ``cluster`` extra is not installed here; the message says which and how."""


@dataclass(frozen=True)
class Servers:
    redis_server: str
    pg_bin: Path


def find_servers() -> Servers:
    """The Redis and PostgreSQL programs of the operating system's packages; ``ClusterUnavailable`` if absent."""
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
    except ImportError as exc:
        raise ClusterUnavailable(f"{exc.name} is not installed: pip install -e '.[cluster]'") from None
    redis = shutil.which("redis-server")
    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    pg_bin = pg[-1].parent if pg else (Path(shutil.which("postgres")).parent if shutil.which("postgres") else None)
    missing = [name for name, found in (("redis-server", redis), ("postgresql", pg_bin)) if not found]
    if missing:
        raise ClusterUnavailable(f"{' and '.join(missing)} not found: apt-get install -y redis-server postgresql")
    return Servers(redis, pg_bin)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g}s")


@dataclass
class LocalCluster:
    """Everything a two-host deployment runs, on this machine. ``env`` is what every process sees."""

    base: Path
    results: Path
    model: str
    workers: int = 2
    redeliver_s: float = 30.0  # a killed worker's step goes to another worker this long after its last lease renewal
    extra_env: dict = field(default_factory=dict)
    webserver: bool = True
    procs: dict = field(default_factory=dict)  # name -> Popen, in the order started
    env: dict = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.base / "lineage" / "cliplabel.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.base / "dagster_home"

    def host_dir(self, name: str) -> Path:
        return self.base / "hosts" / name

    def log(self, name: str) -> Path:
        return self.base / "logs" / f"{name}.log"

    @property
    def worker_names(self) -> list[str]:
        return [chr(ord("a") + i) for i in range(self.workers)]

    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        servers = find_servers()
        for folder in (self.base / "logs", self.dagster_home, self.db.parent, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        redis_port, self.pg_port = free_port(), free_port()
        # Queued and unacknowledged steps are written to an append-only file as they change, so a restarted
        # broker still holds every step it was given (a broker that forgets them leaves runs waiting on them).
        self.commands = {"redis": [servers.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                                   "--dir", str(self.base)]}
        self._spawn("redis", self.commands["redis"], self.base)
        self.redis_port = redis_port
        wait_for_port(redis_port, self.procs["redis"], "redis-server")
        self._start_postgres(servers.pg_bin)
        shutil.copy(INSTANCE_YAML, self.dagster_home / "dagster.yaml")
        broker = f"redis://127.0.0.1:{redis_port}/0"
        self.env = {**os.environ, "DAGSTER_HOME": str(self.dagster_home),
                    "DAGSTER_PG_URL": f"postgresql+psycopg2://dagster@127.0.0.1:{self.pg_port}/dagster",
                    "CLIPLABEL_EXECUTOR": "celery", "CLIPLABEL_BROKER": broker,
                    "CLIPLABEL_REDELIVER_S": str(self.redeliver_s), "CLIPLABEL_RESULTS_ROOT": str(self.results),
                    "CLIPLABEL_DB": str(self.db), "CLIPLABEL_MODEL": self.model, "PYTHONUNBUFFERED": "1",
                    **self.extra_env}
        # The one DuckDB writer, beside the daemon; then the worker hosts, each with its own folder and cache.
        self._worker("lineage", ["lineage"], self.db.parent)
        for name in self.worker_names:
            self._worker(name, ["dagster", "clip"], self.host_dir(name))
        self.commands["daemon"] = [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")]
        self._spawn("daemon", self.commands["daemon"], self.base / "lineage")
        if self.webserver:
            self.webserver_port = free_port()
            self._spawn("webserver", [str(BIN / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"),
                                      "-h", "127.0.0.1", "-p", str(self.webserver_port)], self.base / "lineage")
        for name in ["lineage", *self.worker_names]:
            self._wait_ready(name)

    def _worker(self, name: str, queues: list[str], cwd: Path) -> None:
        cache = cwd / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        self._spawn(name, [sys.executable, "-m", "celery", "-A", "cliplabel_pipeline.defs.celery_app", "worker",
                           "-Q", ",".join(queues), "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", "INFO",
                           "--without-gossip", "--without-mingle"], cwd, {"CLIPLABEL_CACHE": str(cache)})

    def _spawn(self, name: str, cmd: list[str], cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        out = self.log(name).open("ab")
        own_group = ({"start_new_session": True} if hasattr(os, "setsid")
                     else {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)})
        self.procs[name] = subprocess.Popen(cmd, cwd=cwd, env={**(self.env or os.environ), **(env or {})},
                                            stdout=out, stderr=subprocess.STDOUT, **own_group, **kw)
        out.close()
        return self.procs[name]

    def _start_postgres(self, pg_bin: Path) -> None:
        """``initdb`` and ``postgres`` in a temporary folder (PostgreSQL refuses to run as root: then as the
        ``postgres`` user), listening on 127.0.0.1 only; then the ``dagster`` database."""
        as_user = {}
        self.pg_dir = Path(tempfile.mkdtemp(prefix="cliplabel-pg-"))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            import pwd  # POSIX only, as running as root is

            user = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, user.pw_uid, user.pw_gid)
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        data = self.pg_dir / "data"
        subprocess.run([str(pg_bin / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, cwd=self.pg_dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, **as_user)
        self._spawn("postgres", [str(pg_bin / "postgres"), "-D", str(data), "-p", str(self.pg_port),
                                 "-k", str(self.pg_dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                 "-c", "synchronous_commit=off", "-c", "max_connections=300"], self.pg_dir, **as_user)
        wait_for_port(self.pg_port, self.procs["postgres"], "postgres")
        import psycopg2

        for _ in range(50):
            try:
                con = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="dagster", dbname="postgres")
                break
            except psycopg2.OperationalError:  # listening, still starting up
                time.sleep(0.2)
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dagster")
        con.close()

    def _wait_ready(self, worker: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[worker].poll() is not None:
                raise RuntimeError(f"worker {worker} exited; see {self.log(worker)}")
            if b" ready." in self.log(worker).read_bytes():
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker {worker} not ready within {timeout:g}s; see {self.log(worker)}")

    def kill(self, name: str) -> None:
        """Kill a process and its children at once (a worker "host" lost mid-step)."""
        proc = self.procs.pop(name)
        _end_tree(proc.pid, kill=True)
        proc.wait()

    def stop_one(self, name: str) -> None:
        """Stop one process as its service manager would (SIGTERM, and wait): Redis writes its file first."""
        proc = self.procs.pop(name)
        _end_tree(proc.pid)
        proc.wait(60)

    def restart(self, name: str) -> None:
        """Start ``redis`` or ``daemon`` again, as before (Redis on the same port, with its file)."""
        self._spawn(name, self.commands[name], self.base if name == "redis" else self.base / "lineage")
        if name == "redis":
            wait_for_port(self.redis_port, self.procs["redis"], "redis-server")

    def stop(self) -> None:
        """Stop every process this cluster started (newest first), with its children; remove PostgreSQL's data."""
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                _end_tree(proc.pid, fast_shutdown=name == "postgres")
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    _end_tree(proc.pid, kill=True)
                    proc.wait()
        self.procs.clear()
        if getattr(self, "pg_dir", None):
            shutil.rmtree(self.pg_dir, ignore_errors=True)


def _end_tree(pid: int, kill: bool = False, fast_shutdown: bool = False) -> None:
    """End process ``pid`` and its children: its process group signalled where the system has them (SIGINT is
    PostgreSQL's fast shutdown), else each process of the tree through ``psutil`` (terminate, or kill)."""
    if hasattr(os, "killpg"):
        sig = signal.SIGKILL if kill else signal.SIGINT if fast_shutdown else signal.SIGTERM
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        return
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        try:
            proc.kill() if kill else proc.terminate()
        except psutil.NoSuchProcess:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=REPO / ".cluster", help="logs, hosts' folders (default .cluster)")
    parser.add_argument("--results", type=Path, default=None, help="the shared results root (default BASE/results)")
    parser.add_argument("--model", default=os.environ.get("CLIPLABEL_MODEL",
                                                          str(REPO / "cliplabel_pipeline" / "toyworld" / "model")))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        cluster = LocalCluster(args.base.resolve(), (args.results or args.base / "results").resolve(), args.model,
                               args.workers)
        with cluster:
            print(f"webserver http://127.0.0.1:{cluster.webserver_port}  results root {cluster.results}\n"
                  f"logs {cluster.base / 'logs'}  lineage {cluster.db}\n"
                  f"drop job folders into the results root, e.g. toy ones: {sys.executable} -c \"from "
                  f"cliplabel_pipeline.toyworld.jobs import write_toy_jobs; write_toy_jobs('{cluster.results}', 12)\"\n"
                  f"Ctrl-C stops everything", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while all(p.poll() is None for p in cluster.procs.values()):
                time.sleep(1)
            print("a process of the cluster exited; stopping the others", file=sys.stderr)
    except ClusterUnavailable as exc:
        sys.exit(f"cannot start the local cluster: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
