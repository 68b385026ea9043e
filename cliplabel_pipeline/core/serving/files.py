"""A job's files as a listing a person or a client can read: every regular file, with its size."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.storage.guarded import is_link, shown
from cliplabel_pipeline.core.values import JsonForm


@dataclass(frozen=True)
class JobFile(JsonForm):
    """A file of a job and its size in bytes."""

    path: str  # relative to the job, forward slashes; undecodable bytes escaped
    size: int


def _linked(path: str) -> bool:
    try:
        return is_link(os.lstat(path))
    except OSError:
        return True  # gone: nothing to list there


def job_files(job: JobFolder) -> list[JobFile]:
    """Every regular file of ``job``, sorted; links are neither followed nor listed, temp files left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(job.path):  # os.walk never descends into a linked folder,
        dirnames[:] = sorted(d for d in dirnames if not _linked(os.path.join(dirpath, d)))  # nor here a junction
        rel_dir = Path(os.path.relpath(dirpath, job.path)).as_posix()  # forward slashes on Windows too
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                found.append(JobFile(shown(rel), st.st_size))
    return sorted(found, key=lambda f: f.path)
