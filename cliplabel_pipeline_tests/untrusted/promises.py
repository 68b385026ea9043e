"""What every command promises, checked from outside the package: no input byte lost, labels.jsonl, DuckDB and
the derived outputs agreeing, and a command killed at any point. Shared by the stateful, two-process and
full-disk tests; nothing here imports the package's internals beyond its public readers."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.storage.database import query

CLI = [str(Path(sys.executable).parent / "cliplabel")]  # the console script, as a user types it
INPUTS = ("masks", "objects")
# Each form a user types for --results-root.
ROOT_FORMS = ("absolute", "relative", "dotdot", "link")


def results_root_arg(base: Path, form: str) -> tuple[Path, str]:
    """``(working folder, --results-root)`` that reach ``base/results`` in ``form``: the absolute path; ``results``
    from ``base``; ``../results`` from ``base/cwd``; a symbolic link ``base/link`` to the real folder."""
    (base / "cwd").mkdir(exist_ok=True)
    if form == "absolute":
        return base / "cwd", str(base / "results")
    if form == "relative":
        return base, "results"
    if form == "dotdot":
        return base / "cwd", "../results"
    if form == "link":
        if not (base / "link").is_symlink():
            os.symlink(base / "results", base / "link", target_is_directory=True)
        return base / "cwd", str(base / "link")
    raise ValueError(form)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _regular_files(folder: Path) -> list[Path]:
    """Regular files under ``folder``, never following a link."""
    out = []
    for dirpath, _dirs, files in os.walk(folder):
        out += [Path(dirpath) / f for f in files if not (Path(dirpath) / f).is_symlink()
                and (Path(dirpath) / f).is_file()]
    return out


def job_inputs(job: Path) -> Counter:
    """``(path, sha256)`` of every input the job holds: ``source.png`` and the files under masks/ and objects/."""
    found = Counter()
    if (job / "source.png").is_file():
        found[("source.png", sha((job / "source.png").read_bytes()))] += 1
    for kind in INPUTS:
        for path in _regular_files(job / kind):
            found[(path.relative_to(job).as_posix(), sha(path.read_bytes()))] += 1
    return found


def quarantined(job: Path) -> Counter:
    """``(path, sha256)`` of every file kept in ``quarantine/<action>/<path>`` (the journal aside)."""
    found = Counter()
    for action in sorted((job / "quarantine").glob("*")) if (job / "quarantine").is_dir() else []:
        if action.name == "journal" or not action.is_dir() or action.is_symlink():
            continue
        for path in _regular_files(action):
            found[(path.relative_to(action).as_posix(), sha(path.read_bytes()))] += 1
    return found


def lost(job: Path, live: Counter) -> Counter:
    """The versions of ``live`` found neither in the job nor in its quarantine."""
    return live - (job_inputs(job) + quarantined(job))


def label_lines(job: Path) -> list[str]:
    """The paths of ``labels.jsonl``, in order, duplicates kept ([] when there is none)."""
    if not (job / "labels.jsonl").is_file():
        return []
    return [json.loads(line)["path"] for line in (job / "labels.jsonl").read_text("utf-8").splitlines() if line.strip()]


def db_paths(db: Path, job_id: str, table: str, where: str = "TRUE") -> list[str]:
    if not db.exists():
        return []
    return sorted(p for (p,) in query(db, f"SELECT path FROM {table} WHERE job_id = ? AND {where}", [job_id]))


def derived_paths(job: Path) -> dict[str, set[str]]:
    """The items each output derived from labels.jsonl lists, for those that exist."""
    out: dict[str, set[str]] = {}
    if (job / "labels.csv").is_file():
        out["labels.csv"] = {r["path"] for r in csv.DictReader(io.StringIO((job / "labels.csv").read_text()))}
    if (job / "groups.json").is_file():
        groups = json.loads((job / "groups.json").read_text())
        out["groups.json"] = {i for g in groups["groups"] + groups["clusters"] for i in g["items"]}
    if (job / "labels").is_dir():
        out["labels/*.json"] = {p.relative_to(job / "labels").as_posix()[:-5] for p in (job / "labels").rglob("*.json")}
    if (job / "export" / f"{job.name}.zip").is_file():
        with zipfile.ZipFile(job / "export" / f"{job.name}.zip") as zf:
            out["export zip"] = {json.loads(x)["path"] for x in zf.read("labels.jsonl").decode().splitlines() if x}
    if (job / "metrics.json").is_file():
        out["metrics.json count"] = {str(json.loads((job / "metrics.json").read_text())["items"])}
    return out


def is_stale(job: Path) -> bool:
    return (job / "_cliplabel" / "stale.json").is_file()


def assert_agree(job: Path, db: Path) -> None:
    """labels.jsonl lists each item once; DuckDB's labels rows and labelled assets of the job are the same paths;
    every derived output lists them too, unless the job is marked stale."""
    lines = label_lines(job)
    assert len(lines) == len(set(lines)), f"labels.jsonl lists an item twice: {sorted(lines)}"
    labels = sorted(lines)
    assert db_paths(db, job.name, "labels") == labels, "labels.jsonl and DuckDB's labels rows differ"
    assert db_paths(db, job.name, "assets", "status = 'labelled'") == labels, \
        "labels.jsonl and DuckDB's labelled assets differ"
    if not lines or is_stale(job):
        return
    for name, paths in derived_paths(job).items():
        expected = {str(len(labels))} if name == "metrics.json count" else set(labels)
        assert paths == expected, f"{name} disagrees with labels.jsonl (and the job is not marked stale)"


# --- commands -------------------------------------------------------------------------------------------------
@dataclass
class Ran:
    rc: int | None  # None: killed
    out: str
    err: str


class Killed(BaseException):
    """Stands for SIGKILL in-process: no handler catches it, and once raised no later change reaches the disk."""


# what changes the file system; after the n-th of these the "process" is dead
_CHANGES = ("rename", "replace", "unlink", "remove", "rmdir", "mkdir", "link", "symlink")


def touches_an_item(name: str, args: tuple) -> bool:
    """Whether a change moves or deletes an item file (not a temp file: those start with a dot)."""
    first = os.fsdecode(args[0]) if args and isinstance(args[0], (str, bytes, os.PathLike)) else ""
    return name in ("rename", "replace", "unlink", "remove") and not Path(first).name.startswith(".") \
        and Path(first).suffix == ".png"


@contextlib.contextmanager
def killed_at(n: int | None, when=None):
    """Within the block, the ``n``-th change to the file system (rename, replace, unlink, rmdir, mkdir, link)
    and every one after it raises ``Killed`` instead of happening; ``n=None`` kills nothing. With ``when``
    (``when(name, args)``), the first change it is true of is the ``n``-th. DuckDB's own writes are not counted:
    an uncommitted transaction is rolled back when its connection closes, as after a kill."""
    if n is None and when is None:
        yield
        return
    real = {name: getattr(os, name) for name in _CHANGES}
    count = {"n": 0, "dead": False}

    def patched(name):
        def change(*args, **kwargs):
            count["n"] += 1
            if count["dead"] or (when(name, args) if when else count["n"] >= n):
                count["dead"] = True
                raise Killed(f"killed at change {count['n']} ({name})")
            return real[name](*args, **kwargs)
        return change

    try:
        for name in _CHANGES:
            setattr(os, name, patched(name))
        yield
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)


def run_in_process(args: list[str], kill_at: int | None = None, when=None) -> Ran:
    """``cliplabel <args>`` in this process, its output captured; ``rc`` None when the injected kill hit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with killed_at(kill_at, when):
                rc = main(args)
        except Killed:
            rc = None
    return Ran(rc, out.getvalue(), err.getvalue())


def cli_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def holds_job_lock(pid: int, job: Path) -> bool:
    """Whether process ``pid`` has the job's lock file open (it is past its imports, working on the job)."""
    target = str(job / "_cliplabel" / "job.lock")
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
    return False


def run_killed(args: list[str], job: Path, delay: float, cwd: Path, timeout: float = 120) -> Ran:
    """``cliplabel <args>`` in its own process, SIGKILLed ``delay`` seconds after it takes the job's lock (or
    left to finish when it ends first)."""
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not holds_job_lock(proc.pid, job) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=timeout)
    return Ran(None if proc.returncode == -signal.SIGKILL else proc.returncode, out, err)
