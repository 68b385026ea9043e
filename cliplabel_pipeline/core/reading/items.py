"""A job's items (``source.png``, every file under ``masks/`` and ``objects/``), its input fingerprint,
and whether the segmentation service has finished writing it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cliplabel_pipeline.core.job_folder import INPUT_DIRS, JobFolder, is_inside
from cliplabel_pipeline.core.values import SkippedItem


@dataclass(frozen=True)
class Item:
    """One file of a job: ``path`` relative to the job folder (forward slashes), ``kind``, absolute ``file``."""

    path: str
    kind: str
    file: Path


@dataclass
class JobItems:
    """A job's items to label, and the entries skipped before decoding."""

    job: JobFolder
    items: list[Item]
    skipped: list[SkippedItem]

    @property
    def source(self) -> Item | None:
        return next((i for i in self.items if i.kind == "source"), None)


def list_job_items(job: JobFolder) -> JobItems:
    """``source.png`` plus every file under ``masks/`` and ``objects/`` (nested folders too, any extension).

    Hidden files are ignored; a symlink that leads outside the job folder is skipped, never read.
    """
    root = job.path
    items: list[Item] = []
    skipped: list[SkippedItem] = []

    def consider(file: Path, kind: str) -> None:
        rel = file.relative_to(root).as_posix()
        if file.is_symlink() and not is_inside(file, root):
            skipped.append(SkippedItem(rel, kind, "symlink leads outside the job folder"))
        elif file.is_file():
            items.append(Item(rel, kind, file))

    if job.source.exists() or job.source.is_symlink():
        consider(job.source, "source")
    for folder, kind in INPUT_DIRS.items():
        base = root / folder
        if not base.is_dir() or (base.is_symlink() and not is_inside(base, root)):
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    consider(Path(dirpath) / name, kind)
    return JobItems(job, items, skipped)


def input_fingerprint(items: JobItems) -> str:
    """Hash of the job's inputs (paths, sizes, modification times); the pipeline's own outputs never count."""
    digest = hashlib.sha256()
    for item in items.items:
        st = item.file.stat()
        digest.update(f"{item.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for entry in items.skipped:
        digest.update(f"{entry.path}\0skipped\n".encode())
    return digest.hexdigest()[:16]


def job_readiness(job: JobFolder, settle_seconds: float, now: float, marker: str | None = None) -> tuple[bool, str]:
    """``(True, fingerprint)`` when the segmentation has finished writing the job, else ``(False, reason)``.

    Finished means ``source.png`` exists and either the completion ``marker`` file exists, or (without a
    marker) no input file changed in the last ``settle_seconds``.
    """
    if not job.source.is_file():
        return False, f"no {job.source.name} yet"
    items = list_job_items(job)
    if marker:
        if not (job.path / marker).exists():
            return False, f"no {marker} yet"
    else:
        newest = max((i.file.stat().st_mtime for i in items.items), default=0.0)
        newest = max([newest] + [(job.path / d).stat().st_mtime for d in INPUT_DIRS if (job.path / d).is_dir()])
        if now - newest < settle_seconds:
            return False, f"changed {now - newest:.0f}s ago (settle interval {settle_seconds:.0f}s)"
    return True, input_fingerprint(items)
