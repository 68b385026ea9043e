"""Removing what the model could not name: dry run, quarantine inside the job, restore, or purge.

Quarantine moves a file to ``<job>/quarantine/<its path>`` (a rename on the same disk: bytes untouched) and
records in the quarantine record its sha256, its label record and its DuckDB rows, so ``restore`` puts
everything back. ``source.png`` is never removed (masks are read through it). Only regular files inside the
job folder are touched; a symlink is never followed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder, is_inside
from cliplabel_pipeline.core.storage.lineage import delete_item_rows, file_sha256, insert_item_rows
from cliplabel_pipeline.core.values import LabelRecord


def _own_file(job: JobFolder, rel: str) -> Path:
    """The item ``rel`` if it is a regular file of the job (not a symlink, not outside)."""
    path = job.item(rel)
    if path.is_symlink() or not is_inside(path, job.path):
        raise CliplabelError(f"refusing to touch {rel}: it is a symlink or lies outside the job folder")
    return path


def plan_cleanup(job: JobFolder, min_confidence: float) -> list[LabelRecord]:
    """Label records of the items below ``min_confidence`` that cleanup would remove (never ``source.png``)."""
    return [r for r in job.read_labels() if r.confidence < min_confidence and r.kind != "source"
            and job.item(r.path).is_file() and not job.item(r.path).is_symlink()]


def _read_record(job: JobFolder) -> list[dict]:
    path = job.quarantine_record
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def apply_cleanup(job: JobFolder, records: list[LabelRecord], db_path: Path | None, purge: bool = False) -> list[str]:
    """Quarantine (or with ``purge`` delete) the items of ``records``; drop their labels and DuckDB rows."""
    entries = _read_record(job)
    paths = [r.path for r in records]
    rows = delete_item_rows(db_path, job.id, paths) if db_path else {}
    for rec in records:
        src = _own_file(job, rec.path)
        if purge:
            src.unlink()
            continue
        entries.append({"path": rec.path, "sha256": file_sha256(src), "record": rec.to_json(),
                        "rows": rows.get(rec.path, {})})
        dst = job.quarantine_dir / rec.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    if not purge:
        job.write_json(job.quarantine_record, entries)
    removed = set(paths)
    job.write_labels([r for r in job.read_labels() if r.path not in removed])
    return paths


def restore(job: JobFolder, db_path: Path | None) -> list[str]:
    """Put every quarantined file back byte for byte, with its label record and DuckDB rows."""
    if not job.quarantine_record.is_file():
        raise CliplabelError(f"job {job.id!r} has nothing in quarantine")
    entries = _read_record(job)
    clashes = [e["path"] for e in entries if job.item(e["path"]).exists()]
    if clashes:
        raise CliplabelError(f"cannot restore: {', '.join(clashes[:3])} exist again in the job; move them first")
    for e in entries:
        if file_sha256(job.quarantine_dir / e["path"]) != e["sha256"]:
            raise CliplabelError(f"quarantined {e['path']} changed since cleanup (sha256 differs); not restoring it")
    for e in entries:
        dst = job.item(e["path"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(job.quarantine_dir / e["path"], dst)
    labels = job.read_labels() if job.has_labels() else []
    job.write_labels(labels + [LabelRecord.from_json(e["record"]) for e in entries])
    if db_path:
        insert_item_rows(db_path, job.id, {e["path"]: e["rows"] for e in entries if e["rows"]})
    job.quarantine_record.unlink()
    for folder in sorted(job.quarantine_dir.rglob("*"), reverse=True):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if not any(job.quarantine_dir.iterdir()):
        job.quarantine_dir.rmdir()
    return [e["path"] for e in entries]
