"""cliplabel as Label Studio's model: the ML backend protocol's predictions for a batch of tasks.

A task names its image as Label Studio holds it: ``data.job_id`` and ``data.item`` (tasks cliplabel exported),
or an image URL of Label Studio's local files (``/data/local-files/?d=<job>/<path>``) under the results root.
An item the job's labels already hold gets that label of record (and a mask its brush region); any other image
of a job is classified now, all of a batch together. A task whose image cannot be reached here gets an empty
prediction (Label Studio shows the task without one), never an error for the whole batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import INPUT_DIRS, SOURCE_NAME, JobFolder, is_real_folder
from cliplabel_pipeline.core.organising.coco import mask_array, source_size
from cliplabel_pipeline.core.organising.labelstudio import Prediction, prediction
from cliplabel_pipeline.core.reading.picture import ImageSkipped
from cliplabel_pipeline.core.reading.uploads import Upload, UploadTooLarge
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.values import LabelRecord


@dataclass(frozen=True)
class TaskImage:
    job: JobFolder
    path: str


def task_image(task: dict, results_root: Path) -> TaskImage | None:
    """Where a task's image lies in the results root, or None when it is not there (or not a plain item)."""
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        return None
    job_id, path = data.get("job_id"), data.get("item")
    if not (isinstance(job_id, str) and isinstance(path, str)):
        url = data.get("image")
        if not isinstance(url, str):
            return None
        ref = parse_qs(urlsplit(url).query).get("d", [None])[0]
        if not ref or "/" not in ref:
            return None
        job_id, path = unquote(ref).split("/", 1)
    try:
        job = JobFolder(results_root, job_id)
        job.rel(path)  # a plain path inside the job, or refused
    except CliplabelError:
        return None
    return TaskImage(job, path) if is_real_folder(job.path) else None


def read_input_image(job: JobFolder, path: str, limit: int) -> bytes:
    """The bytes of an input image of ``job`` (``source.png``, a mask or a cut-out), read as a regular file inside
    the job; ``UploadTooLarge`` past ``limit`` bytes, the file being never read, and the job's own error for a
    path that is not a regular file there."""
    if path != SOURCE_NAME and path.split("/", 1)[0] not in INPUT_DIRS:
        raise CliplabelError(f"{shown(path)!r} is not an input image of job {job.id!r}")
    with job.open_item(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise UploadTooLarge(f"{shown(path)!r} is over {limit:,} bytes: not read")
    return data


def predict_tasks(tasks: list[dict], results_root: Path, version: str,
                  classify: Callable[[list[Upload]], dict[str, LabelRecord]],
                  limit: int = 20_000_000) -> list[Prediction]:
    """One prediction per task, in order, as Label Studio takes it (an empty one where there is nothing to
    suggest). ``classify`` gets the images to label now (each at most ``limit`` bytes) and answers those it could."""
    found: list[tuple[TaskImage | None, LabelRecord | None]] = []
    to_classify: list[Upload] = []
    labels_of: dict[str, dict[str, LabelRecord]] = {}
    for task in tasks:
        where = task_image(task, results_root)
        rec = None
        if where is not None:
            if where.job.id not in labels_of:
                labels_of[where.job.id] = ({r.path: r for r in where.job.read_labels()}
                                           if where.job.has_labels() else {})
            rec = labels_of[where.job.id].get(where.path)
            if rec is None and not where.path.startswith("masks/"):
                try:
                    to_classify.append(Upload(f"{where.job.id}/{where.path}",
                                              read_input_image(where.job, where.path, limit)))
                except (CliplabelError, OSError):
                    pass  # this task gets an empty prediction
        found.append((where, rec))
    fresh = classify(to_classify) if to_classify else {}
    out = []
    for where, rec in found:
        if where is not None and rec is None:
            rec = fresh.get(f"{where.job.id}/{where.path}")
        if rec is None or rec.label is None:
            out.append(Prediction(version, 0.0))
            continue
        mask = None
        if rec.kind == "mask":
            try:
                mask = mask_array(where.job, where.path, source_size(where.job))
            except (ImageSkipped, CliplabelError):
                mask = None
        out.append(prediction(rec, version, mask))
    return out
