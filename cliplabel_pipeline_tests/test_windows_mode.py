"""cliplabel where the POSIX-only calls do not exist (Windows), simulated on Linux in fresh processes that hide
them before anything is imported (``windows_like.py``): every module loads, and every command works on a job
with the guarantees that still hold there."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from cliplabel_pipeline.toyworld.jobs import write_toy_job

SHIM = Path(__file__).with_name("windows_like.py")
REPO = Path(__file__).resolve().parents[1]


def windows_like(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SHIM), *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=300)


def test_every_module_imports_without_the_posix_only_calls(tmp_path):
    out = windows_like("import-all", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "imported" in out.stdout


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _commands(*steps: list[str]) -> list[str]:
    return [a for step in steps for a in (*step, ";")][:-1]


def test_job_cleanup_restore_export_and_purge_in_windows_mode(tmp_path, toy_model):
    """The CLI from labelling to purge in simulated processes, with a relative results root as a user types it."""
    root = tmp_path / "R"
    root.mkdir()
    job = write_toy_job(root, "j1", seed=5, n_objects=4)
    inputs = _digests(job)
    common, db = ["--results-root", "R"], ["--db", "lineage.duckdb"]
    drop = ["--min-confidence", "0.9", "--min-match", "0.99"]  # every mask and cut-out of the toy job goes
    env = {"CLIPLABEL_CACHE": str(tmp_path / "cache")}

    out = windows_like("cli", *_commands(
        ["job", "j1", *common, "--model", toy_model, "--precision", "fp32", *db],
        ["cleanup", "j1", *common, *drop, "--apply", *db],
        ["restore", "j1", *common, *db]), cwd=tmp_path, env=env)
    said = out.stdout + out.stderr
    assert "[windows-like] guarded access: portable (msvcrt locks)" in out.stdout, said[-3000:]
    assert out.stdout.count("exit 0") == 3, said[-3000:]
    assert "8 items moved to" in said and "restored 8 items" in said
    after = _digests(job)
    assert {p: d for p, d in after.items() if p in inputs} == inputs  # every input back, byte for byte
    assert not [p for p in after if p.startswith("quarantine/") and not p.startswith("quarantine/journal/")]

    out = windows_like("cli", *_commands(
        ["export", "j1", *common, "--format", "zip"],
        ["export", "j1", *common, "--format", "csv"],
        ["export", "j1", *common, "--format", "jsonl", "-o", "out.jsonl"],
        ["cleanup", "j1", *common, *drop, "--apply", "--purge", *db]), cwd=tmp_path, env=env)
    said = out.stdout + out.stderr
    assert out.stdout.count("exit 0") == 4 and "8 items deleted" in said, said[-3000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 9  # exported before the purge
    [cluster] = json.loads((job / "groups.json").read_text())["clusters"]  # the source, named by its nearest concept
    with zipfile.ZipFile(job / "export" / "j1.zip") as zf:  # rebuilt by the purge: only the source is left
        assert zf.testzip() is None and [n for n in zf.namelist() if n.endswith(".png")] == [
            f"low-confidence/{cluster['name']}-0/source.png"] and cluster["items"] == ["source.png"]
    assert (job / "export" / "j1.csv").is_file()
    assert not list(job.rglob(".*.tmp")), "a temp file was left behind"
    assert [json.loads(line)["path"] for line in (job / "labels.jsonl").read_text().splitlines()] == ["source.png"]
    assert _digests(job / "masks") == {} and _digests(job / "objects") == {}
