"""Removing what the model could not name: dry run, quarantine inside the job, restore, or purge.

Quarantine moves a file to ``<job>/quarantine/<its path>`` (a rename on the same disk: bytes untouched) and
records in ``quarantine/manifest.json`` its sha256, its label record and its DuckDB rows, so ``restore``
puts everything back. ``source.png`` is never removed (masks are read through it). Only regular files
inside the job folder are touched; a symlink is never followed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.jobs import is_inside
from cliplabel_pipeline.core.outputs import LABELS_FILE, read_jsonl, write_atomic, write_jsonl
from cliplabel_pipeline.core.store import delete_item_rows, file_sha256, insert_item_rows

QUARANTINE = "quarantine"
MANIFEST = "manifest.json"


def _own_file(job_dir: Path, rel: str) -> Path:
    """``job_dir/rel`` if it is a regular file of the job (not a symlink, not outside)."""
    path = Path(job_dir) / rel
    if path.is_symlink() or not is_inside(path, job_dir):
        raise CliplabelError(f"refusing to touch {rel}: it is a symlink or lies outside the job folder")
    return path


def plan_cleanup(job_dir: Path, min_confidence: float) -> list[dict]:
    """Label records of the items below ``min_confidence`` that cleanup would remove (never ``source.png``)."""
    path = Path(job_dir) / LABELS_FILE
    if not path.is_file():
        raise CliplabelError(f"job {Path(job_dir).name!r} has no {LABELS_FILE}: label it first")
    return [r for r in read_jsonl(path) if r["confidence"] < min_confidence and r["kind"] != "source"
            and (Path(job_dir) / r["path"]).is_file() and not (Path(job_dir) / r["path"]).is_symlink()]


def apply_cleanup(job_dir: Path, records: list[dict], db_path: Path | None, purge: bool = False) -> list[str]:
    """Quarantine (or with ``purge`` delete) the items of ``records``; drop their labels and DuckDB rows."""
    job_dir = Path(job_dir)
    job_id = job_dir.name
    manifest_path = job_dir / QUARANTINE / MANIFEST
    entries = json.loads(manifest_path.read_text()) if manifest_path.is_file() else []
    paths = [r["path"] for r in records]
    rows = delete_item_rows(db_path, job_id, paths) if db_path else {}
    for rec in records:
        src = _own_file(job_dir, rec["path"])
        if purge:
            src.unlink()
            continue
        entries.append({"path": rec["path"], "sha256": file_sha256(src), "record": rec,
                        "rows": rows.get(rec["path"], {})})
        dst = job_dir / QUARANTINE / rec["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    if not purge:
        write_atomic(manifest_path, json.dumps(entries, indent=1, ensure_ascii=False).encode())
    removed = set(paths)
    write_jsonl(job_dir / LABELS_FILE, [r for r in read_jsonl(job_dir / LABELS_FILE) if r["path"] not in removed])
    return paths


def restore(job_dir: Path, db_path: Path | None) -> list[str]:
    """Put every quarantined file back byte for byte, with its label record and DuckDB rows."""
    job_dir = Path(job_dir)
    manifest_path = job_dir / QUARANTINE / MANIFEST
    if not manifest_path.is_file():
        raise CliplabelError(f"job {job_dir.name!r} has nothing in quarantine")
    entries = json.loads(manifest_path.read_text())
    clashes = [e["path"] for e in entries if (job_dir / e["path"]).exists()]
    if clashes:
        raise CliplabelError(f"cannot restore: {', '.join(clashes[:3])} exist again in the job; move them first")
    for e in entries:
        src = job_dir / QUARANTINE / e["path"]
        if file_sha256(src) != e["sha256"]:
            raise CliplabelError(f"quarantined {e['path']} changed since cleanup (sha256 differs); not restoring it")
    for e in entries:
        dst = job_dir / e["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(job_dir / QUARANTINE / e["path"], dst)
    labels = read_jsonl(job_dir / LABELS_FILE) if (job_dir / LABELS_FILE).is_file() else []
    write_jsonl(job_dir / LABELS_FILE, labels + [e["record"] for e in entries])
    if db_path:
        insert_item_rows(db_path, job_dir.name, {e["path"]: e["rows"] for e in entries if e["rows"]})
    manifest_path.unlink()
    for folder in sorted((job_dir / QUARANTINE).rglob("*"), reverse=True):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if not any((job_dir / QUARANTINE).iterdir()):
        (job_dir / QUARANTINE).rmdir()
    return [e["path"] for e in entries]
