"""Job folders: validating job ids, listing a job's items, and its input fingerprint."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from cliplabel_pipeline.core.errors import CliplabelError

INPUT_DIRS = {"masks": "mask", "objects": "object"}
SOURCE_NAME = "source.png"


@dataclass(frozen=True)
class Item:
    """One file of a job: ``path`` relative to the job folder (forward slashes), ``kind``, absolute ``file``."""

    path: str
    kind: str
    file: Path


@dataclass
class Manifest:
    """A job's items to label, and the entries skipped before decoding (``{"path", "kind", "reason"}``)."""

    job_id: str
    job_dir: Path
    items: list[Item]
    skipped: list[dict]

    @property
    def source(self) -> Item | None:
        return next((i for i in self.items if i.kind == "source"), None)


def validate_job_id(job_id: str) -> str:
    """``job_id`` if it names a single folder; refuses ``..``, separators, drive letters and absolute paths."""
    bad = (not job_id or job_id in (".", "..") or "\x00" in job_id or "/" in job_id or "\\" in job_id
           or PurePosixPath(job_id).is_absolute() or PureWindowsPath(job_id).drive)
    if bad:
        raise CliplabelError(f"invalid job id {job_id!r}: a job id is a single folder name (no '..', separators or absolute paths)")
    return job_id


def job_dir(results_root: Path, job_id: str) -> Path:
    """The existing folder of ``job_id`` under ``results_root``; a clear error when it is not there."""
    root = Path(results_root)
    if not root.is_dir():
        raise CliplabelError(f"results root {root} does not exist; set --results-root or CLIPLABEL_RESULTS_ROOT")
    path = root / validate_job_id(job_id)
    if not path.is_dir() or path.is_symlink():
        raise CliplabelError(f"unknown job {job_id!r}: no folder {path}")
    return path


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path``, symlinks resolved, lies inside ``folder``."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def list_job_items(job_dir_: Path, job_id: str | None = None) -> Manifest:
    """``source.png`` plus every file under ``masks/`` and ``objects/`` (nested folders too, any extension).

    Hidden files are ignored; a symlink that leads outside the job folder is skipped, never read.
    """
    job_dir_ = Path(job_dir_)
    items: list[Item] = []
    skipped: list[dict] = []

    def consider(file: Path, kind: str) -> None:
        rel = file.relative_to(job_dir_).as_posix()
        if file.is_symlink() and not is_inside(file, job_dir_):
            skipped.append({"path": rel, "kind": kind, "reason": "symlink leads outside the job folder"})
        elif file.is_file():
            items.append(Item(rel, kind, file))

    source = job_dir_ / SOURCE_NAME
    if source.exists() or source.is_symlink():
        consider(source, "source")
    for folder, kind in INPUT_DIRS.items():
        base = job_dir_ / folder
        if not base.is_dir() or (base.is_symlink() and not is_inside(base, job_dir_)):
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    consider(Path(dirpath) / name, kind)
    return Manifest(job_id or job_dir_.name, job_dir_, items, skipped)


def input_fingerprint(job_dir_: Path, manifest: Manifest | None = None) -> str:
    """Hash of the job's inputs (paths, sizes, modification times); the pipeline's own outputs never count.

    Pass the job's ``manifest`` when it is already listed, to walk the folder once.
    """
    digest = hashlib.sha256()
    manifest = manifest or list_job_items(job_dir_)
    for item in manifest.items:
        st = item.file.stat()
        digest.update(f"{item.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for entry in manifest.skipped:
        digest.update(f"{entry['path']}\0skipped\n".encode())
    return digest.hexdigest()[:16]


def job_readiness(job_dir_: Path, settle_seconds: float, now: float, marker: str | None = None) -> tuple[bool, str]:
    """``(True, fingerprint)`` when the segmentation has finished writing the job, else ``(False, reason)``.

    Finished means ``source.png`` exists and either the completion ``marker`` file exists, or (without a
    marker) no input file changed in the last ``settle_seconds``.
    """
    if not (Path(job_dir_) / SOURCE_NAME).is_file():
        return False, "no source.png yet"
    manifest = list_job_items(job_dir_)
    if marker:
        if not (Path(job_dir_) / marker).exists():
            return False, f"no {marker} yet"
    else:
        newest = max((i.file.stat().st_mtime for i in manifest.items), default=0.0)
        newest = max([newest] + [p.stat().st_mtime for p in Path(job_dir_).glob("*/") if p.name in INPUT_DIRS])
        if now - newest < settle_seconds:
            return False, f"changed {now - newest:.0f}s ago (settle interval {settle_seconds:.0f}s)"
    return True, input_fingerprint(job_dir_, manifest)
