"""A job's files as a listing a person or a client can read: every regular file, with its size."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.storage.guarded import shown


@dataclass(frozen=True)
class JobFile:
    path: str  # relative to the job, forward slashes; undecodable bytes escaped
    size: int

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size}


def job_files(job: JobFolder) -> list[JobFile]:
    """Every regular file of ``job``, sorted; links are neither followed nor listed, temp files left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(job.path):  # os.walk never descends into a linked folder
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, job.path)
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
