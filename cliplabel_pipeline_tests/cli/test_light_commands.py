"""Commands that never encode stay light: cleanup, restore and export rebuild a job's derived outputs from its
labels, embeddings and the cached concept index, without importing torch or Transformers (seconds of start-up
each). Checked in a fresh interpreter, as a person runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cliplabel_pipeline.cli import main

HEAVY = ("torch", "transformers")
RUN_AND_REPORT = """
import json, sys
from cliplabel_pipeline.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _light(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *argv], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip(), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cleanup_restore_and_export_rebuild_outputs_without_torch(toy_job, toy_model, tmp_path):
    root, job_id = toy_job
    common = ["--results-root", str(root), "--db", str(tmp_path / "l.duckdb")]
    assert main(["job", job_id, "--model", toy_model, *common]) == 0  # caches the concept index too
    groups = (root / job_id / "groups.json").read_bytes()
    applied = _light("cleanup", job_id, "--min-confidence", "0.99999", "--apply", *common)
    assert applied == {"code": 0, "heavy": []}
    assert list((root / job_id / "quarantine").rglob("*.png")), "the cleanup moved nothing: nothing was rebuilt"
    assert not (root / job_id / "_cliplabel" / "stale.json").exists()  # rebuilt, not marked stale
    assert _light("restore", job_id, *common) == {"code": 0, "heavy": []}
    assert (root / job_id / "groups.json").read_bytes() == groups  # the same groups as before the cleanup
    for fmt in ("zip", "csv", "jsonl"):
        assert _light("export", job_id, "--format", fmt, "-o", str(tmp_path), "--results-root", str(root)) == {
            "code": 0, "heavy": []}
